"""A throwaway PostgreSQL cluster on loopback: one etcd and three Patroni
nodes with synchronous replication, the shape the README's "More than one
machine" describes, squeezed onto one host for the failover test.

Every node is a real Patroni managing a real postmaster (Debian's
postgresql-15), elected through a real etcd. Nothing is stopped by name:
Patroni and etcd by the PIDs this class started, and a postmaster that
outlives its Patroni (it is detached, its parent is pid 1) by the PID in its
own `postmaster.pid`.
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

    def __init__(self, directory=None, nodes=3, ttl=5):
        # The postgres user must reach every node's directory, and pytest's
        # temporary directories are private to root: the cluster lives in a
        # directory of its own under /tmp, open for traversal only.
        self.directory = directory or tempfile.mkdtemp(prefix="wallet-cluster-")
        # A directory made here is removed by stop() (three data directories of WAL),
        # unless WALLET_KEEP_RUN_DIR=1 asks to keep it for a look at the logs.
        self.owns_directory = directory is None
        self.ttl = ttl
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
            "target_session_attrs=read-write connect_timeout=2"
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
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
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
        (and every other live node streaming)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = [m for m in self.members() if m.get("name") not in exclude]
            roles = {m.get("role") for m in members}
            running = all(m.get("state") in ("running", "streaming") for m in members)
            if "leader" in roles and "sync_standby" in roles and running:
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

    def kill_leader(self):
        """`kill -9` of the leader's Patroni and its postmaster, as when the
        machine dies. Returns the node."""
        node = self.leader()
        assert node is not None, "no leader to kill"
        postmaster = node.postmaster_pid()
        os.kill(node.process.pid, signal.SIGKILL)
        if postmaster is not None:
            os.kill(postmaster, signal.SIGKILL)
        node.process.wait()
        return node

    def stop(self):
        """Stops what this cluster started: each Patroni (which stops its
        postmaster), then any postmaster left, then etcd."""
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
