"""A throwaway PostgreSQL cluster on loopback: one etcd and three Patroni
nodes with synchronous replication, the shape the README's "More than one
machine" describes, squeezed onto one host for the failover test.

Every node is a real Patroni managing a real postmaster (Debian's
postgresql-15), elected through a real etcd. Nothing is stopped by name:
Patroni and etcd by the PIDs this class started, and a postmaster that
outlives its Patroni (it is detached, its parent is pid 1) by the PID in its
own `postmaster.pid`.

`synchronous=False` makes the same cluster with asynchronous replication,
the configuration the failover suite shows losing acknowledged writes.
`freeze_leader()` makes the leader's machine look dead rather than its
processes killed (stopped processes, packets dropped by nftables); `stop()`
undoes that first, whatever happened in between.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    """True while `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def descendants(pids):
    """`pids` and every process descended from them, found through the parent
    PIDs in /proc (never by name: other clusters may run on this machine)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid for pid in pids if pid is not None]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


class Node:
    def __init__(self, name, directory, pg_port, rest_port):
        self.name = name
        self.directory = directory
        self.pg_port = pg_port
        self.rest_port = rest_port
        self.process = None

    @property
    def data_dir(self):
        return os.path.join(self.directory, "data")

    def postmaster_pid(self):
        """The postmaster's PID from its own pid file, or None."""
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (FileNotFoundError, ValueError, PermissionError):
            return None
        return pid if alive(pid) else None

    def processes(self):
        """Every process of this node: its Patroni and what Patroni runs, and
        the postmaster (detached from Patroni) with all its children."""
        patroni = self.process.pid if self.process is not None and alive(self.process.pid) else None
        return [pid for pid in descendants([patroni, self.postmaster_pid()]) if alive(pid)]

    def conninfo(self):
        """A connection to this node alone, whatever its role."""
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres connect_timeout=2"

    def status(self):
        """Patroni's view of this node (GET /patroni), or None when it does
        not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/patroni", timeout=1) as r:
                return json.load(r)
        except OSError:
            return None
        except ValueError:
            return None


class PatroniCluster:
    """`with PatroniCluster(tmp) as cluster:` starts etcd and three nodes and
    waits for a leader with a synchronous standby; leaving the block stops
    everything it started."""

    def __init__(self, directory=None, nodes=3, ttl=5, synchronous=True, maximum_lag_on_failover=None):
        # The postgres user must reach every node's directory, and pytest's
        # temporary directories are private to root: the cluster lives in a
        # directory of its own under /tmp, open for traversal only.
        self.directory = directory or tempfile.mkdtemp(prefix="wallet-cluster-")
        # A directory made here is removed by stop() (three data directories of WAL),
        # unless WALLET_KEEP_RUN_DIR=1 asks to keep it for a look at the logs.
        self.owns_directory = directory is None
        self.ttl = ttl
        # synchronous_mode and synchronous_mode_strict together, or neither.
        self.synchronous = synchronous
        # Patroni's own default (1 MB) unless given.
        self.maximum_lag_on_failover = maximum_lag_on_failover
        # What freeze_leader() did, for thaw() to undo: the processes it
        # stopped and the nftables table it made.
        self.frozen = []
        self.firewall_table = None
        self.etcd_client = free_port()
        self.etcd_peer = free_port()
        self.etcd = None
        self.nodes = [
            Node(f"node{i + 1}", os.path.join(self.directory, f"node{i + 1}"), free_port(), free_port())
            for i in range(nodes)
        ]
        self.postgres = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    # The multi-host connection string every program gets: libpq tries the
    # hosts in turn and keeps the one that accepts writes.
    @property
    def conninfo(self):
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(n.pg_port) for n in self.nodes)
        return (
            f"host={hosts} port={ports} user=postgres dbname=postgres "
            "target_session_attrs=read-write connect_timeout=2 "
            # The README's settings: without them a connection to a leader
            # whose machine died waits for TCP to give up (about 15 minutes).
            "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 tcp_user_timeout=10000"
        )

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _as_postgres(self):
        if self.postgres is None:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def _own(self, path):
        if self.postgres is not None:
            os.chown(path, self.postgres.pw_uid, self.postgres.pw_gid)

    def start(self):
        os.makedirs(self.directory, exist_ok=True)
        os.chmod(self.directory, 0o755)
        etcd_dir = os.path.join(self.directory, "etcd")
        os.makedirs(etcd_dir, exist_ok=True)
        log = open(os.path.join(self.directory, "etcd.log"), "wb")
        self.etcd = subprocess.Popen(
            [
                "etcd", "--name", "etcd0", "--data-dir", os.path.join(etcd_dir, "data"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_client}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_client}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
                "--initial-cluster", f"etcd0=http://127.0.0.1:{self.etcd_peer}",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        for node in self.nodes:
            self._start_node(node)
        self.wait_healthy()

    def _config(self, node):
        lag = ""
        if self.maximum_lag_on_failover is not None:
            lag = f"    maximum_lag_on_failover: {self.maximum_lag_on_failover}\n"
        return f"""\
scope: wallet
name: {node.name}
restapi:
  listen: 127.0.0.1:{node.rest_port}
  connect_address: 127.0.0.1:{node.rest_port}
etcd3:
  hosts: 127.0.0.1:{self.etcd_client}
bootstrap:
  dcs:
    ttl: {self.ttl}
    loop_wait: 1
    retry_timeout: {max(1, (self.ttl - 1) // 2)}
    synchronous_mode: {"true" if self.synchronous else "false"}
    synchronous_mode_strict: {"true" if self.synchronous else "false"}
{lag}    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - no-locale
  pg_hba:
    - local all all trust
    - local replication all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{node.pg_port}
  connect_address: 127.0.0.1:{node.pg_port}
  data_dir: {node.data_dir}
  bin_dir: {PG_BIN}
  pgpass: {os.path.join(node.directory, "pgpass")}
  authentication:
    replication:
      username: postgres
    superuser:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: '{node.directory}'
    fsync: "on"
"""

    def _start_node(self, node):
        os.makedirs(node.directory, exist_ok=True)
        os.chmod(node.directory, 0o700)
        self._own(node.directory)
        config = os.path.join(node.directory, "patroni.yml")
        with open(config, "w") as f:
            f.write(self._config(node))
        self._own(config)
        log = open(os.path.join(node.directory, "patroni.log"), "wb")
        node.process = subprocess.Popen(
            self._as_postgres() + ["patroni", config],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=node.directory,
        )
        log.close()

    def members(self):
        """The cluster's members as one node's Patroni reports them."""
        for node in self.nodes:
            if node.process is None or not alive(node.process.pid):
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.rest_port}/cluster", timeout=1) as r:
                    return json.load(r).get("members", [])
            except (OSError, ValueError):
                continue
        return []

    def leader(self):
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return next(n for n in self.nodes if n.name == member["name"])
        return None

    def wait_healthy(self, timeout=60, exclude=()):
        """Waits for a running leader and a streaming synchronous standby
        (and every other live node streaming); without synchronous mode, for
        a leader and every node not excluded running."""
        deadline = time.monotonic() + timeout
        expected = len(self.nodes) - len(exclude)
        while time.monotonic() < deadline:
            members = [m for m in self.members() if m.get("name") not in exclude]
            roles = {m.get("role") for m in members}
            running = all(m.get("state") in ("running", "streaming") for m in members)
            if self.synchronous:
                healthy = "leader" in roles and "sync_standby" in roles and running
            else:
                healthy = "leader" in roles and running and len(members) == expected
            if healthy:
                return self.leader()
            time.sleep(0.2)
        raise AssertionError(
            f"the cluster is not healthy after {timeout} s: {self.members()}\n" + self.logs()
        )

    def logs(self):
        out = []
        for node in self.nodes:
            try:
                with open(os.path.join(node.directory, "patroni.log"), errors="replace") as f:
                    out.append(f"--- {node.name} ---\n" + f.read()[-3000:])
            except FileNotFoundError:
                pass
        return "\n".join(out)

    def kill_leader(self, whole_node=False):
        """`kill -9` of the leader's Patroni and its postmaster (with
        `whole_node`, of every process of the node, and a wait until all are
        gone), as when the machine dies. Returns the node."""
        node = self.leader()
        assert node is not None, "no leader to kill"
        postmaster = node.postmaster_pid()
        pids = node.processes() if whole_node else [node.process.pid, postmaster]
        for pid in pids:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        node.process.wait()
        if whole_node:
            assert wait_gone(pids, 10), f"{node.name}: processes left after SIGKILL"
        return node

    def freeze_leader(self):
        """The leader's machine dies (power, kernel panic, cable) rather than
        its processes: nothing answers and nothing is closed. Every process
        of the node is stopped (SIGSTOP), and nftables drops every TCP packet
        to or from its PostgreSQL and REST ports, so that the kernel no
        longer answers for it either: no ACK, no RST, no FIN. A client in the
        middle of a statement learns of it only from its own TCP timeouts.
        The node's Patroni keeps its connection to etcd (from a port of its
        own), but being stopped it no longer renews the leader key, which
        expires after ttl seconds. thaw() (which stop() calls) undoes both.
        Returns the node."""
        assert shutil.which("nft"), "nft is missing: `make deps` installs nftables"
        node = self.leader()
        assert node is not None, "no leader to freeze"
        ports = f"{node.pg_port}, {node.rest_port}"
        # A table of this run's own, removed whole by thaw(): another run of
        # the suite on the same machine has its own.
        table = f"wallet_failover_{os.getpid()}"
        rules = (
            f"table inet {table} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -10; policy accept;\n"
            f'    iif "lo" tcp dport {{ {ports} }} drop\n'
            f'    iif "lo" tcp sport {{ {ports} }} drop\n'
            "  }\n"
            "}\n"
        )
        # Stopped first, then cut off, a few milliseconds apart: a packet the
        # kernel acknowledges in between is one a dying machine's kernel took
        # in its last instant.
        pids = node.processes()
        assert node.postmaster_pid() in pids, f"{node.name}: no postmaster to freeze"
        self.frozen = pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        # `nft -f` applies the whole table or nothing (it needs root, or
        # CAP_NET_ADMIN).
        result = subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True)
        assert result.returncode == 0, f"nft could not make table {table}: {result.stderr.strip()}"
        self.firewall_table = table
        return node

    def thaw(self):
        """Undoes freeze_leader(): the packet filter removed, then the
        stopped processes continued (SIGCONT). Safe to call at any time."""
        try:
            if self.firewall_table is not None:
                result = subprocess.run(["nft", "delete", "table", "inet", self.firewall_table],
                                        capture_output=True, text=True)
                if result.returncode != 0 and "No such file" not in result.stderr:
                    raise RuntimeError(f"cannot remove nftables table {self.firewall_table}: {result.stderr}")
                self.firewall_table = None
        finally:
            # Continued even when the table could not be removed: a stopped
            # process could not be stopped for good (SIGTERM stays pending).
            for pid in self.frozen:
                if alive(pid):
                    os.kill(pid, signal.SIGCONT)
            self.frozen = []

    def stop(self):
        """Stops what this cluster started: a frozen node thawed first (a
        stopped process keeps SIGTERM pending), each Patroni (which stops its
        postmaster), then any postmaster left, then etcd."""
        try:
            self.thaw()
        finally:
            self._stop_processes()

    def _stop_processes(self):
        for node in self.nodes:
            if node.process is not None and alive(node.process.pid):
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        leftovers = [pid for pid in (n.postmaster_pid() for n in self.nodes) if pid]
        for pid in leftovers:
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(leftovers, 10):
            for pid in leftovers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            wait_gone(leftovers, 5)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()
        if self.owns_directory and os.environ.get("WALLET_KEEP_RUN_DIR") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)


if __name__ == "__main__":
    # A quick look by hand: python3 Tests/cluster/patroni.py DIR
    import sys

    with PatroniCluster() as cluster:
        print(cluster.conninfo)
        print(json.dumps(cluster.members(), indent=1))
        os.system(f"psql '{cluster.conninfo}' -c 'select pg_is_in_recovery(), now()'")
