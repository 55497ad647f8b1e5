"""Responders on TCP behind one nginx: `wallet-fcgi --listen ADDRESS:PORT`.

Several responder processes share the stack's one SQLite database, and an nginx
of the test's own balances them: the repository's nginx/wallet-locations.conf
(the production request handling, retry policy included) in front of an
`upstream wallet_fcgi` of TCP servers. What must hold:

  - both responders answer, and a write through one is read through the other;
  - with one responder killed (-9), reads and deposits keep succeeding: nginx
    retries a request whose connection was refused on the other server (the
    request never reached the dead one);
  - a POST that did reach a responder which then failed is never sent again by
    nginx: the client gets a JSON 502, and its retry with the same
    Idempotency-Key makes the one effect;
  - only the peers of --allow are served, and the start-up refuses bad
    addresses and a port in use with a clear message.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from . import helpers as h
from .conftest import REPO, bin_dir, free_port, http_request, stop_process, wait_until
from .test_keepalive import _fastcgi_request, _fastcgi_response, _params

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")

# The test's access log: which upstream servers nginx tried for each request, and
# what each one gave ($upstream_addr and $upstream_status list every try).
LOG_FORMAT = """log_format tries escape=json
        '{"request_id": "$request_id", "method": "$request_method", "uri": "$request_uri", '
        '"status": $status, "upstream_addr": "$upstream_addr", "upstream_status": "$upstream_status"}';"""


class Responder:
    """One `wallet-fcgi --listen ADDRESS:PORT` on the stack's database, its output in
    its own log file in the run dir. Stopped again if it does not start."""

    def __init__(self, stack, name, address, port, args=()):
        self.stack, self.name, self.address, self.port = stack, name, address, port
        self.log = stack.run_dir / f"{name}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(stack.bin_dir / "wallet-fcgi"), "--listen", f"{address}:{port}", "--threads", "2", *args],
                cwd=REPO, env=stack.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until(self._started, 10, f"{name} to listen on {address}:{port}")
        except BaseException:
            self.kill()
            raise

    def _started(self):
        assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()}"
        return '"event": "started"' in self.log.read_text()

    def lines(self, event=None):
        return [line for line in h.json_log_lines(self.log.read_text())
                if event is None or line.get("event") == event]

    def request_ids(self):
        return {line["request_id"] for line in self.lines("request")}

    def kill(self, sig=signal.SIGKILL):
        """`sig`, then SIGKILL if it has not exited within 10 s."""
        stop_process(self.proc, sig)


class Front:
    """nginx with the repository's wallet-locations.conf in front of `servers`
    (lines of `upstream wallet_fcgi`), on a loopback port of its own; one worker, so
    that round robin alternates strictly. Stopped again if it does not come up."""

    def __init__(self, stack, name, servers):
        self.stack = stack
        self.dir = stack.base_dir / name
        (self.dir / "tmp").mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        h.API_KEYS[self.port] = stack.api_key
        self.conf = self.dir / "nginx.conf"
        upstream = "\n".join(f"        {line};" for line in servers)
        self.conf.write_text(f"""
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {self.dir}/tmp/client_body;
    fastcgi_temp_path {self.dir}/tmp/fastcgi;
    proxy_temp_path {self.dir}/tmp/proxy;
    uwsgi_temp_path {self.dir}/tmp/uwsgi;
    scgi_temp_path {self.dir}/tmp/scgi;
    {LOG_FORMAT}
    upstream wallet_fcgi {{
{upstream}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        access_log {self.dir}/access.log tries;
        include {REPO}/nginx/wallet-locations.conf;
    }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", f"{self.dir}/nginx-error.log"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_until(self._up, 10, f"nginx ({name}) to answer /healthz")
        except BaseException:
            self.stop()
            raise

    def _up(self):
        assert self.proc.poll() is None, f"nginx exited:\n{(self.dir / 'nginx-error.log').read_text()}"
        try:
            return self.request("GET", "/healthz").status == 200
        except OSError:
            return False

    def request(self, method, path, body=None, headers=None):
        return http_request(self.port, method, path, body=body, headers=headers)

    def deposit(self, wallet, amount, key):
        return self.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount},
                            headers={"Idempotency-Key": key})

    def tries(self, request_id):
        """The access log line of one request, polled for: nginx writes it after the answer."""
        def line():
            for text in (self.dir / "access.log").read_text().splitlines():
                entry = json.loads(text)
                if entry["request_id"] == request_id:
                    return entry
            return None
        return wait_until(line, 5, f"the access log line of {request_id}")

    def stop(self):
        """A graceful stop (SIGQUIT), then SIGKILL to the master and its workers if
        they have not exited within 10 s."""
        stop_process(self.proc, signal.SIGQUIT)


@pytest.fixture
def parts(stack):
    """Finally stops (by pid, before the stack) what a test builds on the stack, each
    one even if stopping another failed. A part that does not start stops itself."""
    started = []

    def add(part):
        started.append(part)
        return part

    yield add
    errors = []
    for part in reversed(started):
        try:
            if isinstance(part, Front):
                part.stop()
            else:
                part.kill(signal.SIGTERM)
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


def _request_id(response):
    return response.headers["x-request-id"]


def _ledger_rows(stack, wallet):
    """(rows, their sum) of a wallet's transactions, straight from the database file."""
    return stack.sqlite("SELECT COUNT(*), COALESCE(SUM(t.amount), 0) FROM transactions t JOIN wallets w ON w.id = t.wallet_id "
                        "WHERE w.uuid = ?", (wallet,))[0]


def test_two_tcp_responders_share_the_database_and_survive_one_killed(stack, parts):
    """Two responders on 127.0.0.1 (two ports) behind one nginx: requests are answered by
    both, a deposit through one is read through the other. After kill -9 of one, reads and
    deposits still succeed: the request sent to the dead one is refused at connect and
    retried on the other (the access log shows both tries). Every deposit has one effect."""
    a = parts(Responder(stack, "tcp-a", "127.0.0.1", free_port()))
    b = parts(Responder(stack, "tcp-b", "127.0.0.1", free_port()))
    front = parts(Front(stack, "front", [f"server 127.0.0.1:{a.port}", f"server 127.0.0.1:{b.port}"]))

    wallet = h.assert_json_ok(front.request("POST", "/wallets/"), 201)["uuid"]
    deposits = []
    for i in range(4):
        r = front.deposit(wallet, 10, f"tcp-{i}")
        h.assert_json_ok(r, 200)
        deposits.append(_request_id(r))
    reads = []
    for _ in range(4):
        r = front.request("GET", f"/wallets/{wallet}/")
        assert h.assert_json_ok(r, 200)["balance"] == 40
        reads.append(_request_id(r))
    # Round robin over the two: each answered some deposits and some reads, and a
    # deposit written by one was read by the other (every read saw all four).
    for responder in (a, b):
        served = responder.request_ids()
        assert served & set(deposits) and served & set(reads), f"{responder.name} served none of {deposits} / {reads}"
    assert not (a.request_ids() & b.request_ids()), "a request answered twice"
    assert h.assert_json_ok(front.request("GET", f"/wallets/{wallet}/"), 200)["balance"] == 40

    a.kill(signal.SIGKILL)
    # nginx closes its kept connections to the dead responder when it reads their end;
    # a POST written into one just before would get a 502 instead (README, "Past one
    # machine"). Not a timing assertion: only time for nginx to read the closes.
    time.sleep(0.5)
    answers = []
    for i in range(4, 10):
        r = front.deposit(wallet, 10, f"tcp-{i}")
        h.assert_json_ok(r, 200)
        answers.append(front.tries(_request_id(r)))
        g = front.request("GET", f"/wallets/{wallet}/")
        assert h.assert_json_ok(g, 200)["balance"] == 10 * (i + 1)
        answers.append(front.tries(_request_id(g)))
    # One request went to the dead responder first: refused at connect (nginx's 502
    # for that try), then answered by the other. nginx then marks the dead server
    # failed, so the rest go straight to the live one.
    retried = [e for e in answers if len(e["upstream_addr"].split(", ")) == 2]
    assert retried, f"no request was retried: {answers}"
    for entry in retried:
        assert entry["upstream_addr"] == f"127.0.0.1:{a.port}, 127.0.0.1:{b.port}", entry
        assert entry["upstream_status"] == "502, 200", entry
    assert "Connection refused) while connecting to upstream" in (front.dir / "nginx-error.log").read_text()
    # Ten deposits, ten rows, one each.
    assert _ledger_rows(stack, wallet) == (10, 100)
    assert stack.sqlite("SELECT COUNT(DISTINCT t.idempotency_key) FROM transactions t JOIN wallets w ON w.id = t.wallet_id "
                        "WHERE w.uuid = ?", (wallet,))[0][0] == 10


class Vanishing:
    """A server that accepts FastCGI connections, reads what nginx sends and closes
    without a word: a responder that dies after the request reached it. Counts the
    connections that carried a request."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    # The request is complete with its empty FCGI_STDIN record.
                    while b"\x01\x05\x00\x01\x00\x00\x00\x00" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                if data:
                    self.received.append(data)

    def methods(self):
        return [next(m for m in (b"POST", b"GET", b"HEAD", b"DELETE") if b"REQUEST_METHOD" + m in d) for d in self.received]

    def kill(self, sig=None):
        # shutdown wakes the thread blocked in accept(); close alone would not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def test_a_post_that_reached_a_failing_responder_is_not_sent_again(stack, parts):
    """The first server of the upstream vanishes after taking the request, the second
    (`backup`, so always tried second) is a real responder. A GET is retried there and
    answered; a POST is not: the client gets the JSON 502, the responder never saw it,
    and no row was written. The client's retry with the same Idempotency-Key makes
    exactly one deposit. A first server that refuses connections instead gets the POST
    retried on the second: it never arrived. (`max_fails=0` keeps nginx from setting the
    failing server aside, so that every request tries it first.)"""
    real = parts(Responder(stack, "tcp-real", "127.0.0.1", free_port()))
    vanishing = parts(Vanishing())
    front = parts(Front(stack, "front-vanishing",
                        [f"server 127.0.0.1:{vanishing.port} max_fails=0", f"server 127.0.0.1:{real.port} backup"]))
    wallet = h.create_wallet(stack)["uuid"]

    before = len(vanishing.received)
    g = front.request("GET", f"/wallets/{wallet}/")
    assert h.assert_json_ok(g, 200)["balance"] == 0
    assert front.tries(_request_id(g))["upstream_status"] == "502, 200"
    assert vanishing.methods()[before:] == [b"GET"]

    key = str(uuid.uuid4())
    before = len(vanishing.received)
    p = front.deposit(wallet, 25, key)
    h.assert_error(p, 502, "service_unavailable")
    entry = front.tries(_request_id(p))
    assert entry["upstream_addr"] == f"127.0.0.1:{vanishing.port}" and entry["upstream_status"] == "502", entry
    assert vanishing.methods()[before:] == [b"POST"], "the POST reached the failing server once"
    assert _request_id(p) not in real.request_ids(), "nginx sent the POST to a second responder"
    assert _ledger_rows(stack, wallet) == (0, 0)

    # The client retries with its key, through a responder that answers.
    r = http_request(stack.http_port, "POST", f"/wallets/{wallet}/deposit", body={"amount": 25},
                       headers={"Idempotency-Key": key})
    h.assert_json_ok(r, 200)
    assert h.get_wallet(stack, wallet)["balance"] == 25
    assert _ledger_rows(stack, wallet) == (1, 25)

    # Connection refused: the POST never reached the first server, so nginx may and does
    # send it to the second.
    closed_port = free_port()
    refusing = parts(Front(stack, "front-refusing",
                           [f"server 127.0.0.1:{closed_port} max_fails=0", f"server 127.0.0.1:{real.port} backup"]))
    p = refusing.deposit(wallet, 5, str(uuid.uuid4()))
    h.assert_json_ok(p, 200)
    assert h.get_wallet(stack, wallet)["balance"] == 30
    entry = refusing.tries(_request_id(p))
    assert entry["upstream_status"] == "502, 200", entry
    assert _ledger_rows(stack, wallet) == (2, 30)


def test_only_allowed_peers_are_served(stack, parts):
    """A responder with --allow 127.0.0.1: a FastCGI request from 127.0.0.1 is answered,
    the same request from 127.0.0.3 (loopback, but not listed) gets the connection closed
    without an answer, and the refusal is logged with the peer's address."""
    responder = parts(Responder(stack, "tcp-allow", "127.0.0.1", free_port(), args=("--allow", "127.0.0.1")))
    assert responder.lines("started")[0]["allow"] == "127.0.0.1"

    def ask(source):
        with socket.create_connection(("127.0.0.1", responder.port), timeout=10, source_address=(source, 0)) as sock:
            sock.sendall(_fastcgi_request(_params("GET", "/healthz"), keep=False))
            return _fastcgi_response(sock)[0]

    assert ask("127.0.0.1") == 200
    with pytest.raises(ConnectionError):
        ask("127.0.0.3")
    refused = wait_until(lambda: responder.lines("peer_refused"), 5, "the peer_refused log line")
    assert refused[0]["peer"] == "127.0.0.3"
    # The responder is unharmed and serves the next allowed peer.
    assert ask("127.0.0.1") == 200


def test_the_default_allow_list_is_loopback_and_ipv6_listens(stack, parts):
    """Without --allow a TCP responder serves loopback peers (127.0.0.3 included); on
    [::1] it answers an IPv6 client."""
    v4 = parts(Responder(stack, "tcp-default", "127.0.0.1", free_port()))
    with socket.create_connection(("127.0.0.1", v4.port), timeout=10, source_address=("127.0.0.3", 0)) as sock:
        sock.sendall(_fastcgi_request(_params("GET", "/healthz"), keep=False))
        assert _fastcgi_response(sock)[0] == 200
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    v6 = parts(Responder(stack, "tcp-v6", "[::1]", free_port()))
    assert v6.lines("started")[0]["socket"] == f"tcp [::1]:{v6.port}"
    with socket.create_connection(("::1", v6.port), timeout=10) as sock:
        sock.sendall(_fastcgi_request(_params("GET", "/healthz"), keep=False))
        assert _fastcgi_response(sock)[0] == 200


@pytest.mark.parametrize("mode", ["fd0", "listen_fds"])
def test_serves_a_tcp_socket_handed_in_by_the_service_manager(tmp_path, mode):
    """systemd's `ListenStream=ADDRESS:PORT` (emulated with systemd-socket-activate): the
    inherited TCP socket is served on fd 0 or fd 3 alike, the allow list applies to it
    (an inherited socket is checked like one the responder made), and SIGTERM ends the
    responder with status 0."""
    activate = "/usr/bin/systemd-socket-activate"
    if not os.path.exists(activate):
        pytest.fail("systemd-socket-activate is missing: install the systemd package (make deps does)")
    port = free_port()
    args = [activate, "-l", f"127.0.0.1:{port}"] + (["--inetd"] if mode == "fd0" else [])
    args += ["-E", "WALLET_DB", str(bin_dir() / "wallet-fcgi"), "--allow", "127.0.0.1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["WALLET_DB"] = str(tmp_path / "wallet.db")
    log = tmp_path / "activate.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   start_new_session=True)

    def ask(source):
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
            sock.sendall(_fastcgi_request(_params("GET", "/healthz"), keep=False))
            return _fastcgi_response(sock)[0]

    try:
        def listening():
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, 10, "systemd-socket-activate's TCP socket")
        # The responder starts on the first connection; the request waits for it.
        assert ask("127.0.0.1") == 200
        with pytest.raises(ConnectionError):
            ask("127.0.0.3")
    finally:
        returncode = stop_process(process, signal.SIGTERM, timeout=15, group=True)
    text = log.read_text()
    assert returncode == 0, text
    assert f"inherited fd {0 if mode == 'fd0' else 3}" in text
    assert '"event": "peer_refused"' in text and '"peer": "127.0.0.3"' in text
    assert '"event": "stopped"' in text


def _responder(tmp_path, args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["WALLET_DB"] = str(tmp_path / "wallet.db")
    return subprocess.run([str(bin_dir() / "wallet-fcgi"), *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, message", [
    (["--listen", "127.0.0.1"], "expected ADDRESS:PORT"),
    (["--listen", "127.0.0.1:0"], "the port must be a number from 1 to 65535"),
    (["--listen", "127.0.0.1:65536"], "the port must be a number from 1 to 65535"),
    (["--listen", "wallet.example:9000"], "is not an IPv4 or IPv6 address"),
    (["--listen", "::1:9000"], "expected ADDRESS:PORT"),
    (["--listen", "127.0.0.1:9000", "--socket", "/nonexistent/fcgi.sock"], "--socket and --listen exclude each other"),
    (["--listen", "127.0.0.1:9000", "--allow", "10.0.0.0/8"], "is not an IPv4 or IPv6 address"),
    (["--socket", "/nonexistent/fcgi.sock", "--allow", "127.0.0.1"], "--allow applies to TCP sockets only"),
    (["--writes", "batches"], "--writes needs group-commit or connections"),
    (["--writes", "connections", "--write-connections", "0"], "--write-connections needs a number from 1 to 256"),
])
def test_bad_listen_options_are_refused_with_a_clear_message(tmp_path, args, message):
    """Each bad option: exit status 2 (a usage error), the message and the usage on stderr."""
    result = _responder(tmp_path, args)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "usage: wallet-fcgi" in result.stderr


def test_connections_writes_are_refused_on_sqlite_before_anything_is_opened(tmp_path):
    """SQLite has one writer at a time: `--writes connections` is a usage error there,
    found before the socket or the database file is made."""
    sock = tmp_path / "fcgi.sock"
    result = _responder(tmp_path, ["--socket", str(sock), "--writes", "connections"])
    assert result.returncode == 2, result
    assert "--writes connections needs PostgreSQL" in result.stderr, result.stderr
    assert not sock.exists() and not (tmp_path / "wallet.db").exists()


def test_a_port_in_use_is_a_start_up_error(tmp_path):
    """A port another socket holds: exit status 1, as for any socket that cannot be made,
    with the address and the reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = _responder(tmp_path, ["--listen", f"127.0.0.1:{port}"])
    assert result.returncode == 1, result
    assert f"cannot listen on 127.0.0.1:{port}: bind: Address already in use" in result.stderr, result.stderr
