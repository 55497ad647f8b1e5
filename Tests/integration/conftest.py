"""pytest fixtures for the integration tests: a real stack per test.

Every test that asks for `stack` gets its own development stack, started with
scripts/stack.sh (nginx + the wallet-fcgi responder + the mock bank behind
fcgiwrap) on fresh loopback ports, with a fresh run dir and a fresh database,
and stopped again after the test, which also checks that no process was left
behind. The processor does not run on a timer here (`--no-processor`): tests
run a pass when they want one, with `stack.run_processor()`.

Fixtures:
    stack           a started `Stack` with the default settings.
    stack_factory   a function `stack_factory(extra_env=None, processor=False,
                    bank_mode="success", access_log=True)` returning a started
                    `Stack`; for settings other than the defaults, e.g.
                    `stack_factory(extra_env={"WALLET_MAX_RETRIES": "1"})`, or
                    for several stacks in one test.
    wallet_bin_dir  (session) the directory with the executables; checks once
                    per session that wallet-fcgi, wallet-processor and
                    walletctl are there, and stops the run with a clear
                    message if not.
    no_process_left_behind  (session, automatic) fails the session if a
                    process started by a test outlived it (`session_processes`
                    finds them by INTEGRATION_TEST_SESSION, a mark this file
                    puts in the environment that every test process inherits).

Helpers: `free_port()`, `wait_until(predicate, timeout, message)`,
`stop_process(proc, sig, timeout, group)` (for every process a test starts
itself, in a `finally:` or a fixture's teardown), and the `Stack` and
`Response` classes (documented below).

Environment:
    WALLET_BIN_DIR       where the executables are [<repo>/.build/debug]
    WALLET_TEST_DB       "postgres": every stack gets a fresh database on the
                         PostgreSQL server whose conninfo is WALLET_TEST_POSTGRES
                         (dropped with the stack's directory), and
                         `stack.sqlite()` runs its SQL there through psql
    WALLET_KEEP_RUN_DIR  "1": keep every stack's directory (by default only
                         the directories of failed tests are kept; their
                         paths are printed)

Standard library and pytest only.
"""

import collections
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from .helpers import API_KEYS, POSTGRES_SERVER, with_api_key

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "scripts" / "stack.sh"
EXECUTABLES = ("wallet-fcgi", "wallet-processor", "wallet-notifier", "walletctl")

# stack.sh waits up to 10 s for /healthz itself; this covers the rest.
START_TIMEOUT = 20.0
# stack.sh's own stop deadline is 10 s (then SIGKILL); this covers the rest.
STOP_TIMEOUT = 25.0

# Settings of the test stacks, on top of the API's defaults. The bank pays
# by default: a test that wants another behaviour says so (set_bank_mode).
DEFAULT_BANK_MODE = "success"

# Proxy variables must never apply to loopback requests made by curl,
# libcurl or Python.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def bin_dir():
    """The directory of the executables: $WALLET_BIN_DIR or <repo>/.build/debug."""
    return Path(os.environ.get("WALLET_BIN_DIR") or REPO / ".build" / "debug").resolve()


def free_port():
    """A TCP port on 127.0.0.1 that is free right now (bind to port 0 and let
    the kernel choose). Another process could take it before it is used;
    `stack_factory` retries with new ports if a stack cannot bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, message="condition", interval=0.05):
    """Calls `predicate()` until it returns a true value, which is returned.
    Raises AssertionError with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


# --- Processes --------------------------------------------------------------------

def _proc_stat(pid):
    """(state, ppid, pgrp) of a process from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _alive(pid):
    """True if the process exists and is not a zombie (a zombie is dead; it
    only waits for its parent to collect its status)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def _group_members(pgid):
    """The live (non-zombie) processes of a process group."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                out.append(int(entry))
    return out


def stop_process(proc, sig=signal.SIGTERM, timeout=10.0, group=False):
    """Stops a process a test started (with start_new_session=True: it leads a
    process group) and everything in its group, whatever state it is in:
    `sig` to the process (to its whole group if `group`), a wait of up to
    `timeout` seconds, then SIGKILL to the group if any member is left (the
    process itself, or children that outlived it), and a wait until the group
    is empty. Returns the process's exit status (negative: the signal that
    ended it). For a `finally:` or a fixture's teardown, so that what a test
    starts is stopped on every path."""
    if proc.poll() is None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # While the group has a member its id cannot be reused: the SIGKILL
    # reaches only what this process started.
    if proc.poll() is None or _group_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        wait_until(lambda: not _group_members(proc.pid), 10, f"process group {proc.pid} to be gone after SIGKILL")
    return proc.returncode


def _read_pid(path):
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _tail(path, limit=4000):
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "(missing)"
    text = data[-limit:].decode("utf-8", "replace")
    return ("...\n" if len(data) > limit else "") + text


# A mark of this session in the environment of every process the tests start
# (every environment they build starts from os.environ), and the directories
# of its stacks: what tells the session's processes from anyone else's on the
# machine when `no_process_left_behind` looks for them at its end.
SESSION_VARIABLE = "INTEGRATION_TEST_SESSION"
os.environ[SESSION_VARIABLE] = f"{os.getpid()}-{secrets.token_hex(8)}"
SESSION_DIRS = []


def session_processes(directories):
    """{pid: command line} of the live processes of this session: those with its
    mark in their environment or one of `directories` on their command line
    (nginx overwrites its environment with its process title), and the members
    of the process groups these lead (nginx's workers name neither)."""
    mark = f"{SESSION_VARIABLE}={os.environ[SESSION_VARIABLE]}".encode()
    prefixes = [f"{directory.rstrip('/')}/" for directory in directories]
    found, groups = {}, {}
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else None
        if pid is None or pid == os.getpid():
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        groups.setdefault(stat[2], []).append(pid)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            environ = []
        cmdline = _cmdline(pid)
        if mark in environ or any(prefix in cmdline for prefix in prefixes):
            found[pid] = cmdline
    for leader in list(found):
        for pid in groups.get(leader, []):
            found.setdefault(pid, _cmdline(pid))
    return {pid: cmdline for pid, cmdline in found.items() if _alive(pid)}


# --- HTTP ---------------------------------------------------------------------------

class Response:
    """One HTTP response.

    status       the status code (int)
    reason       the reason phrase
    headers      dict of lower-case header names; repeated headers are joined
                 with ", "
    header_list  the headers as received: a list of (name, value)
    body         the body (bytes)
    text         the body decoded as UTF-8
    json()       the body parsed as JSON
    """

    def __init__(self, status, reason, header_list, body):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        headers = {}
        for name, value in header_list:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


def http_request(port, method, path, body=None, headers=None, raw_body=None, timeout=10.0, host="127.0.0.1"):
    """One request on a new connection (so it is safe from any thread).
    `body` is sent as JSON (with Content-Type: application/json unless the
    headers say otherwise); `raw_body` (bytes or str) is sent as is. With
    neither, a POST carries `Content-Length: 0`."""
    if body is not None and raw_body is not None:
        raise ValueError("pass body or raw_body, not both")
    hdrs = with_api_key(port, headers)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        if not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = "application/json"
    elif raw_body is not None:
        data = raw_body.encode() if isinstance(raw_body, str) else raw_body
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return Response(resp.status, resp.reason, resp.getheaders(), payload)
    finally:
        conn.close()


# --- The stack ------------------------------------------------------------------------

LedgerRow = collections.namedtuple("LedgerRow", "paid_at idempotency_key wallet amount reference")
CallRow = collections.namedtuple("CallRow", "time idempotency_key answer")


class StackStartError(RuntimeError):
    """The stack did not print `stack ready`; the message carries its logs."""


class Stack:
    """A development stack (scripts/stack.sh --no-processor) for one test.

    Attributes:
        url               http://127.0.0.1:PORT, the wallet API through nginx
        http_port         its port
        bank_port         the mock bank's port
        bank_url          http://127.0.0.1:BANKPORT/pay (the CGI bank)
        instant_bank_url  http://127.0.0.1:BANKPORT/instant (pays at once, no CGI)
        static_url        http://127.0.0.1:BANKPORT/static (nginx's "ok")
        base_dir          the stack's private directory (0755, under /tmp)
        run_dir           base_dir/run: sockets, pid files, logs, nginx.conf
        db_path           base_dir/wallet.db
        bank_dir          run_dir/bank: the bank's mode, ledger and calls
        env               the environment to run wallet-processor or walletctl
                          against this stack (WALLET_DB, WALLET_BANK_URL, ...
                          plus the extra_env it was created with)
        bin_dir           where the executables are
        proc              the stack.sh process (subprocess.Popen)

    Methods: request, responder_pid, kill_responder, restart_responder,
    run_processor, spawn_processor, walletctl, set_bank_mode, bank_ledger,
    bank_calls, sqlite, logs, access_log, pids, stop.
    """

    def __init__(self, extra_env=None, processor=False, bank_mode=DEFAULT_BANK_MODE, access_log=True, notifier=False,
                 database=None, sqlite=False):
        self.bin_dir = bin_dir()
        # pytest's tmp_path is 0700, which nginx's `nobody` workers cannot
        # traverse to reach the sockets: a fresh 0755 directory under /tmp.
        self.base_dir = Path(tempfile.mkdtemp(prefix="wallet-stack-", dir="/tmp"))
        SESSION_DIRS.append(str(self.base_dir))
        os.chmod(self.base_dir, 0o755)
        self.run_dir = self.base_dir / "run"
        self.db_path = self.base_dir / "wallet.db"
        # On PostgreSQL: this stack's database and WALLET_DB's conninfo for it.
        # `sqlite`: an SQLite file even when the stacks run on PostgreSQL (the
        # source of `walletctl migrate`).
        self.is_postgres = (POSTGRES_SERVER is not None and not sqlite) or database is not None
        self.pg_database = self.pg_conninfo = None
        if database is not None:
            # A PostgreSQL database the test made itself (a cluster's): used
            # as it is, and left to the test.
            self.pg_conninfo = database
        elif self.is_postgres:
            self.pg_database = "s_" + secrets.token_hex(8)
            _psql(POSTGRES_SERVER, f"CREATE DATABASE {self.pg_database}")
            self.pg_conninfo = f"{POSTGRES_SERVER} dbname={self.pg_database}"
        self.bank_dir = self.run_dir / "bank"
        self.processor = processor
        self.notifier = notifier
        self.proc = None
        self.http_port = self.bank_port = None
        self._extra_env = dict(extra_env or {})
        self._bank_mode = bank_mode
        self._access_log = access_log
        self._children = []          # our own Popen objects (restarted responders, processors)
        self._reader = None
        self._ready = threading.Event()
        self._stdout_lines = []
        self.stack_exit_status = None
        # The key every request helper sends (helpers.API_KEYS, by port).
        self.api_key = "wsk_" + secrets.token_urlsafe(32)
        self._choose_ports()

    # -- setup -----------------------------------------------------------------

    def _choose_ports(self):
        self.http_port = free_port()
        self.bank_port = free_port()
        while self.bank_port == self.http_port:
            self.bank_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        API_KEYS[self.http_port] = self.api_key
        self.bank_url = f"http://127.0.0.1:{self.bank_port}/pay"
        self.instant_bank_url = f"http://127.0.0.1:{self.bank_port}/instant"
        self.static_url = f"http://127.0.0.1:{self.bank_port}/static"
        self.env = self._make_env()

    def _make_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_") and k not in PROXY_VARIABLES}
        env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost,::1"
        env.update({
            "WALLET_RUN_DIR": str(self.run_dir),
            "WALLET_HTTP_PORT": str(self.http_port),
            "WALLET_BANK_PORT": str(self.bank_port),
            "WALLET_DB": self.pg_conninfo or str(self.db_path),
            "WALLET_BIN_DIR": str(self.bin_dir),
            "WALLET_BANK_URL": self.bank_url,
            "WALLET_BANK_MODE": self._bank_mode,
            "WALLET_ACCESS_LOG": "on" if self._access_log else "off",
            # The stack's API key, chosen here (stack.sh stores it), and no
            # rate limit unless a test asks for one: tests send bursts.
            "WALLET_DEV_API_KEY": self.api_key,
            "WALLET_RATE_LIMIT": "0",
            # Webhook receivers in the tests are on loopback; stack.sh makes
            # the master key file (0600) when it starts.
            "WALLET_WEBHOOK_ALLOW_HTTP": "1",
            "WALLET_WEBHOOK_KEY_FILE": str(self.run_dir / "webhook-master-key"),
        })
        for key, value in self._extra_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        # An override of these moves what the helpers look at too (relative
        # paths are taken from the repository, where stack.sh runs).
        if env.get("WALLET_DB") and not self.is_postgres:
            self.db_path = (REPO / env["WALLET_DB"]).resolve()
            env["WALLET_DB"] = str(self.db_path)
        if env.get("WALLET_BIN_DIR"):
            self.bin_dir = (REPO / env["WALLET_BIN_DIR"]).resolve()
            env["WALLET_BIN_DIR"] = str(self.bin_dir)
        return env

    def start(self, timeout=START_TIMEOUT, attempts=3):
        """Starts stack.sh and waits for its `stack ready` line. Retries with
        new ports if one was taken meanwhile; raises StackStartError with the
        logs otherwise."""
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return self
            except StackStartError as e:
                if "already in use" in str(e) and attempt + 1 < attempts:
                    self._choose_ports()
                    continue
                raise

    def _start_once(self, timeout):
        cmd = ["bash", str(STACK_SH)] + ([] if self.processor else ["--no-processor"]) + ([] if self.notifier else ["--no-notifier"])
        self._ready.clear()
        self._stdout_lines = []
        log = open(self.base_dir / "stack.log", "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True)
        finally:
            log.close()
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                why = (f"stack.sh exited with status {self.proc.returncode}" if self.proc.poll() is not None
                       else f"no 'stack ready' within {timeout:g} s")
                self.stop(check=False)
                raise StackStartError(f"{why}\n{self.diagnostics()}")

    def _read_stdout(self, proc):
        with open(self.base_dir / "stack.log", "ab") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stdout_lines.append(line)
                log.write(b"stdout: " + raw)
                log.flush()
                if line.startswith("stack ready"):
                    self._ready.set()

    def diagnostics(self):
        """The tails of stack.sh's output and of the stack's logs (for failure messages)."""
        parts = [f"run dir: {self.run_dir}"]
        for path in (self.base_dir / "stack.log", self.run_dir / "wallet-fcgi.log",
                     self.run_dir / "nginx-error.log", self.run_dir / "fcgiwrap.log",
                     self.run_dir / "processor.log"):
            if path.exists():
                parts.append(f"---- {path.name} ----\n{_tail(path)}")
        return "\n".join(parts)

    # -- HTTP --------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, raw_body=None, timeout=10):
        """Sends one request to the wallet API through nginx and returns a
        `Response` (.status, .headers with lower-case names, .body bytes,
        .json()). `body` is JSON-encoded (Content-Type: application/json is
        added unless given); `raw_body` (bytes/str) is sent verbatim. Use
        raw_body=b"null" to send a JSON null."""
        return http_request(self.http_port, method, path, body=body, headers=headers,
                            raw_body=raw_body, timeout=timeout)

    def bank_request(self, method, path, body=None, headers=None, raw_body=None, timeout=10):
        """Like `request`, to the mock bank's server (paths /pay, /instant, /static)."""
        return http_request(self.bank_port, method, path, body=body, headers=headers,
                            raw_body=raw_body, timeout=timeout)

    # -- the responder --------------------------------------------------------------

    def responder_pid(self):
        """The pid in run_dir/wallet-fcgi.pid (the running responder)."""
        pid = _read_pid(self.run_dir / "wallet-fcgi.pid")
        if pid is None:
            raise AssertionError(f"no pid in {self.run_dir / 'wallet-fcgi.pid'}")
        return pid

    def kill_responder(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends `sig` (default SIGTERM, a graceful stop; use signal.SIGKILL for
        a crash) to the responder and waits until it has exited. Returns its
        pid. The stack keeps running: requests get nginx's JSON 502 until
        `restart_responder()`."""
        pid = self.responder_pid()
        os.kill(pid, sig)
        for child in self._children:
            if child.pid == pid:
                child.wait(timeout)
        wait_until(lambda: not _alive(pid), timeout, f"wallet-fcgi (pid {pid}) to exit after signal {sig!r}")
        return pid

    def restart_responder(self, extra_env=None, timeout=10.0, args=()):
        """Starts a new `wallet-fcgi --socket RUN_DIR/fcgi.sock` (plus `args`) with the
        stack's environment (plus `extra_env`), its output appended to wallet-fcgi.log,
        writes its pid to wallet-fcgi.pid (where the stack's stop finds it),
        with the socket mode stack.sh uses as root (0660, in the run dir's
        group, which nginx's workers have), and waits until
        GET /healthz answers 200. Returns the new pid. The old responder is
        not stopped first: call kill_responder() before."""
        env = self._command_env(extra_env)
        sock = self.run_dir / "fcgi.sock"
        log = open(self.run_dir / "wallet-fcgi.log", "ab")
        try:
            child = subprocess.Popen(
                [str(self.bin_dir / "wallet-fcgi"), "--socket", str(sock), "--socket-mode", "0660" if os.geteuid() == 0 else "0600", *args],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._children.append(child)
        tmp = self.run_dir / "wallet-fcgi.pid.new"
        tmp.write_text(f"{child.pid}\n")
        tmp.replace(self.run_dir / "wallet-fcgi.pid")
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                raise AssertionError(f"restarted wallet-fcgi exited with status {child.returncode}\n"
                                     f"{_tail(self.run_dir / 'wallet-fcgi.log')}")
            try:
                if self.request("GET", "/healthz", timeout=2).status == 200:
                    return child.pid
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"restarted wallet-fcgi (pid {child.pid}) did not answer /healthz "
                                     f"within {timeout:g} s\n{self.diagnostics()}")
            time.sleep(0.05)

    # -- the processor and the CLI ----------------------------------------------------

    def _command_env(self, extra_env):
        env = dict(self.env)
        for key, value in (extra_env or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def run_processor(self, extra_env=None, timeout=60):
        """Runs one `wallet-processor` pass against this stack and returns the
        subprocess.CompletedProcess (text stdout/stderr; the return code is
        not checked). Its output is also appended to run_dir/processor.log."""
        result = subprocess.run(
            [str(self.bin_dir / "wallet-processor")], cwd=REPO, env=self._command_env(extra_env),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        with open(self.run_dir / "processor.log", "a") as log:
            log.write(f"---- run_processor: exit status {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def run_notifier(self, extra_env=None, timeout=60):
        """Runs one `wallet-notifier` pass against this stack and returns the
        subprocess.CompletedProcess (output also appended to run_dir/notifier.log)."""
        result = subprocess.run(
            [str(self.bin_dir / "wallet-notifier")], cwd=REPO, env=self._command_env(extra_env),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        with open(self.run_dir / "notifier.log", "a") as log:
            log.write(f"---- run_notifier: exit status {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def spawn_notifier(self, extra_env=None):
        """Starts a `wallet-notifier` pass in the background; returns its Popen
        (killed at teardown if still running)."""
        log = open(self.run_dir / "notifier.log", "ab")
        try:
            child = subprocess.Popen(
                [str(self.bin_dir / "wallet-notifier")], cwd=REPO, env=self._command_env(extra_env),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._children.append(child)
        return child

    def spawn_processor(self, extra_env=None, log_name="processor.log"):
        """Starts a `wallet-processor` pass in the background and returns its
        Popen (output appended to run_dir/LOG_NAME, processor.log unless
        given), e.g. to kill it while a bank call is in flight. It is killed
        at teardown if still running."""
        log = open(self.run_dir / log_name, "ab")
        try:
            child = subprocess.Popen(
                [str(self.bin_dir / "wallet-processor")], cwd=REPO, env=self._command_env(extra_env),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._children.append(child)
        return child

    def walletctl(self, *args, extra_env=None, timeout=60, input=None):
        """Runs `walletctl ARGS...` against this stack's database; returns the
        subprocess.CompletedProcess (text output, return code not checked)."""
        return subprocess.run(
            [str(self.bin_dir / "walletctl"), *map(str, args)], cwd=REPO, env=self._command_env(extra_env),
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout)

    # -- the mock bank ----------------------------------------------------------------

    def set_bank_mode(self, text):
        """Sets the mock bank's behaviour (one line: success | fail |
        random PERCENT_FAILED DELAY_MS | fail-first N | http500 | slow DELAY_MS |
        hang DELAY_MS | pay-then-hang DELAY_MS | status CODE; see bank/bank.cgi).
        Replaced atomically, so a call in flight reads the old or the new
        mode, never half a line."""
        tmp = self.bank_dir / "mode.new"
        tmp.write_text(text.strip() + "\n")
        tmp.replace(self.bank_dir / "mode")

    def _tsv(self, name):
        try:
            data = (self.bank_dir / name).read_text(errors="replace")
        except FileNotFoundError:
            return []
        # The text after the last newline may be a line still being written.
        return [line.split("\t") for line in data.split("\n")[:-1] if line]

    def bank_ledger(self):
        """The bank's payouts: a list of LedgerRow(paid_at, idempotency_key,
        wallet, amount, reference), one per line of bank/ledger, every field a
        string as in the TSV (a row is a tuple: row[1] is the key)."""
        return [LedgerRow(*(row + [""] * 5)[:5]) for row in self._tsv("ledger")]

    def bank_calls(self):
        """Every call the bank received: a list of CallRow(time,
        idempotency_key, answer) with answer one of paid, replayed, failed,
        in_progress, hang, status, http500, bad_request."""
        return [CallRow(*(row + [""] * 3)[:3]) for row in self._tsv("calls")]

    # -- database and logs ------------------------------------------------------------

    def sqlite(self, sql, params=()):
        """Runs one statement on the database file through a read-only
        connection and returns all rows as a list of tuples, e.g.
        stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0]. On PostgreSQL the
        same SQL runs through psql, in a read-only transaction, with `?`
        parameters inlined as literals and integers read back as ints."""
        if self.is_postgres:
            return _psql(self.pg_conninfo, sql, params, read_only=True)
        uri = "file:" + urllib.parse.quote(str(self.db_path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def integrity_check(self):
        """"ok" when the database's storage is sound: SQLite's integrity_check
        of the file; on PostgreSQL, amcheck's bt_index_check of every index
        (with heapallindexed: each table row is in its indexes)."""
        if not self.is_postgres:
            rows = self.sqlite("PRAGMA integrity_check")
            return "ok" if rows == [("ok",)] else repr(rows)
        _psql(self.pg_conninfo, "CREATE EXTENSION IF NOT EXISTS amcheck")
        checked = _psql(self.pg_conninfo, """
            SELECT count(bt_index_check(c.oid, true)) FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE a.amname = 'btree' AND n.nspname = 'public'""")
        return "ok" if checked and checked[0][0] > 0 else f"no index checked: {checked}"

    def foreign_key_violations(self):
        """Rows that break a foreign key: SQLite's foreign_key_check. PostgreSQL
        checks every foreign key on every write; what could let a row through
        is a constraint not validated, so those are listed instead."""
        if not self.is_postgres:
            return self.sqlite("PRAGMA foreign_key_check")
        return self.sqlite("SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated")

    def logs(self, name):
        """The text of a log (or any file) in the run dir, e.g.
        stack.logs("wallet-fcgi.log"); "" if it does not exist."""
        try:
            return (self.run_dir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log(self):
        """nginx's JSON access log of the wallet server, parsed: one dict per
        request (request_id, method, uri, status, request_time, ...)."""
        out = []
        for line in self.logs("nginx-access.log").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # -- teardown -----------------------------------------------------------------------

    def pids(self):
        """{name: pid} from the stack's pid files (wallet-fcgi, nginx, fcgiwrap)."""
        out = {}
        for name in ("wallet-fcgi", "nginx", "fcgiwrap"):
            pid = _read_pid(self.run_dir / f"{name}.pid")
            if pid is not None:
                out[name] = pid
        return out

    def stop(self, check=True):
        """Stops the stack: SIGTERM to stack.sh (which stops everything it
        started, by pid), a bounded wait, SIGKILL to its process group as a
        last resort. Then checks that nothing is left: the processes named by
        the pid files, the members of stack.sh's process group, and the
        responders and processors started by this object. Leftovers are
        killed; with check=True an AssertionError lists them. Idempotent."""
        problems = []
        for child in self._children:
            if child.poll() is None and child.args and str(child.args[0]).endswith("wallet-processor"):
                child.kill()
                child.wait(5)
        if self.proc is None:
            return
        watched = {pid: name for name, pid in self.pids().items()}
        if self.proc.poll() is None:
            watched.update({pid: _cmdline(pid) for pid in _group_members(self.proc.pid)})
            watched.pop(self.proc.pid, None)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"stack.sh did not exit within {STOP_TIMEOUT:g} s of SIGTERM: SIGKILL to its group")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        self.stack_exit_status = self.proc.returncode
        if self.proc.returncode != 0:
            problems.append(f"stack.sh exited with status {self.proc.returncode}")
        for child in self._children:
            watched.setdefault(child.pid, _cmdline(child.pid))
        for pid in _group_members(self.proc.pid):
            watched.setdefault(pid, _cmdline(pid))
        leftovers = {pid: name for pid, name in watched.items() if _alive(pid)}
        for pid, name in leftovers.items():
            problems.append(f"process left behind: pid {pid} ({name}); killed")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in self._children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        if problems and check:
            raise AssertionError("unclean stack shutdown:\n  " + "\n  ".join(problems) + "\n" + self.diagnostics())

    def remove(self):
        """Deletes the stack's directory (and its PostgreSQL database)."""
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.pg_database:
            _psql(POSTGRES_SERVER, f"DROP DATABASE IF EXISTS {self.pg_database} WITH (FORCE)")
            self.pg_database = None


def _sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return "'\\x" + value.hex() + "'::bytea"
    return "'" + str(value).replace("'", "''") + "'"


def _psql(conninfo, sql, params=(), read_only=False):
    """Runs `sql` with psql and returns its rows as tuples (NULL as None,
    integers as ints). `?` placeholders take `params` in order, as literals."""
    if params:
        pieces = sql.split("?")
        assert len(pieces) == len(params) + 1, f"{len(params)} parameters for {sql!r}"
        sql = pieces[0] + "".join(_sql_literal(p) + rest for p, rest in zip(params, pieces[1:]))
    field, record, null = "\x1f", "\x1e", "\x1d"
    command = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", field, "-R", record, "-P", f"null={null}",
               "-d", conninfo]
    if read_only:
        command += ["-c", "SET default_transaction_read_only = on"]
    result = subprocess.run(command + ["-c", sql], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}")
    text = result.stdout.rstrip("\n")
    rows = []
    for line in text.split(record) if text else []:
        values = []
        for value in line.split(field):
            if value == null:
                values.append(None)
            elif value.lstrip("-").isdigit():
                values.append(int(value))
            else:
                values.append(value)
        rows.append(tuple(values))
    return rows


# --- Fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def wallet_bin_dir():
    """The directory of the executables (WALLET_BIN_DIR, default
    <repo>/.build/debug). Ends the session at once, with one clear message,
    if one of them is missing: every test would fail the same way."""
    directory = bin_dir()
    missing = [name for name in EXECUTABLES if not os.access(directory / name, os.X_OK)]
    if missing:
        pytest.exit(f"missing executables in {directory}: {', '.join(missing)} "
                    f"(run `swift build`, or set WALLET_BIN_DIR)", returncode=1)
    if not STACK_SH.is_file():
        pytest.exit(f"{STACK_SH} is missing", returncode=1)
    return directory


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory):
    """Fails the session, at its end, if a process a test started is still
    running (and kills it): each test stops what it starts, on every path.
    Its processes are found by `session_processes` (the session's mark, its
    temporary directory and its stacks' directories)."""
    yield
    left = session_processes([str(tmp_path_factory.getbasetemp()), *SESSION_DIRS])
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        pytest.fail("processes left behind by this session's tests (killed now):\n" + "\n".join(
            f"  pid {pid}: {cmdline}" for pid, cmdline in sorted(left.items())), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remembers each phase's report on the test item, so the fixtures know
    at teardown whether the test failed (and keep its stack's directory)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_wallet_report_{report.when}", report)


def _test_failed(item):
    return any(getattr(getattr(item, f"_wallet_report_{when}", None), "failed", False)
               for when in ("setup", "call"))


@pytest.fixture
def stack_factory(request, wallet_bin_dir):
    """A function that starts a stack with non-default settings:

        s = stack_factory(extra_env={"WALLET_MAX_RETRIES": "1"},
                          processor=False, bank_mode="success", access_log=True)

    extra_env is passed to stack.sh and hence to the responder, and kept in
    s.env for the processor and walletctl (a value of None removes a
    variable); processor=True also runs stack.sh's processor loop (every
    WALLET_PROCESS_INTERVAL seconds); database= is a PostgreSQL conninfo the
    test made (used as it is), sqlite=True an SQLite file even when the stacks
    run on PostgreSQL. Every stack is stopped after the test,
    which fails if a process was left behind."""
    stacks = []

    def make(extra_env=None, processor=False, bank_mode=DEFAULT_BANK_MODE, access_log=True, notifier=False,
             database=None, sqlite=False):
        s = Stack(extra_env=extra_env, processor=processor, bank_mode=bank_mode, access_log=access_log, notifier=notifier,
                  database=database, sqlite=sqlite)
        stacks.append(s)
        s.start()
        return s

    yield make

    problems = []
    for s in stacks:
        try:
            s.stop()
        except AssertionError as e:
            problems.append(str(e))
    keep = os.environ.get("WALLET_KEEP_RUN_DIR") == "1" or problems or _test_failed(request.node)
    for s in stacks:
        if keep:
            print(f"\nstack directory kept: {s.base_dir}")
        else:
            s.remove()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def stack(stack_factory):
    """A started stack with the default settings (bank mode `success`, no
    processor loop, JSON access log on). See `Stack`."""
    return stack_factory()
