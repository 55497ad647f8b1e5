"""Failover: the whole stack on a three-node Patroni cluster (synchronous and
strict, one etcd), clients depositing with idempotency keys and scheduling
withdrawals that the processor pays, and the leader taken down in the middle:

- `kill -9` of its Patroni and postmaster, as when its processes crash: their
  sockets are closed, and every client learns of it at once;
- its machine dying (power, kernel panic, cable): every process of the node
  stopped and its packets dropped, so that nothing answers and nothing is
  closed, and the programs' connections are given up only by the TCP
  keepalives and `tcp_user_timeout` of their connection string.

Afterwards: every deposit and withdrawal that got a 2xx is in the database,
no idempotency key had two effects, no payout was made twice, every
withdrawal reached a final state, and `walletctl audit verify` passes. Each
test prints when the new leader was elected and how long writes were refused.

A third test is the check's negative control: on a cluster with asynchronous
replication, the leader acknowledges deposits its replicas never received,
dies, and a replica is promoted; the same check must report exactly those
deposits as lost. It shows that the check can fail, and that synchronous
replication is what keeps them.

`make test-failover` runs them (WALLET_TEST_FAILOVER=1): each cluster takes
about 15 s to form, a failover about the cluster's ttl (5 s) more, and a dead
machine about the connection string's `tcp_user_timeout` (10 s)."""

import os
import signal
import threading
import time
import uuid

import pytest

from . import helpers as h
from .conftest import _psql, wait_until
from .patroni import PatroniCluster

pytestmark = pytest.mark.skipif(
    os.environ.get("WALLET_TEST_FAILOVER") != "1",
    reason="starts a Patroni cluster: the failover suite runs it (make test-failover)")

CLIENTS = 4
# How long the load runs before the leader is taken down, and at least how
# long after writes are accepted again.
BEFORE_FAULT = 3.0
AFTER_RECOVERY = 4.0
# How long one client keeps retrying one request with its key.
RETRY_FOR = 60.0


class Client(threading.Thread):
    """Deposits 1 with a new key again and again, and every fourth time also
    schedules a withdrawal of 1 due now; every request is retried with its
    key until it gets a 2xx, as the API asks clients to."""

    def __init__(self, stack, wallet, stop, clock):
        super().__init__(daemon=True)
        self.stack, self.wallet, self.stop, self.clock = stack, wallet, stop, clock
        self.deposits = []       # keys of acknowledged deposits
        self.withdrawals = []    # (key, transaction id) of acknowledged withdrawals
        self.error = None

    def until_acknowledged(self, path, body, expected):
        key = f"fo-{uuid.uuid4()}"
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                response = self.stack.request("POST", path, body=body, headers={"Idempotency-Key": key}, timeout=10)
                status = response.status
            except OSError:
                response, status = None, None
            self.clock.note(status)
            if status == expected:
                return key, response.json()
            # 503 (the database refused or lost the commit) and 502/504 (nginx
            # lost the responder's answer) are worth a retry; nothing else is.
            assert status in (None, 502, 503, 504), f"{path}: {status} {response and response.body}"
            assert time.monotonic() < deadline, f"{path} still refused after {RETRY_FOR} s"
            time.sleep(0.05)

    def run(self):
        try:
            count = 0
            while not self.stop.is_set():
                key, _ = self.until_acknowledged(f"/wallets/{self.wallet}/deposit", {"amount": 1}, 200)
                self.deposits.append(key)
                count += 1
                if count % 4 == 0:
                    key, doc = self.until_acknowledged(f"/wallets/{self.wallet}/withdraw", {"amount": 1}, 201)
                    self.withdrawals.append((key, doc["id"]))
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error


class RefusalClock:
    """Across all clients: when writes were first and last refused, the first
    accepted after the last refusal, and the longest stretch without an
    accepted write (under this load a few milliseconds, but for the
    failover). A request that hangs counts when its answer comes back."""

    def __init__(self):
        self.lock = threading.Lock()
        self.first_refused = self.last_refused = self.first_accepted_after = self.last_accepted = None
        self.longest_without = 0.0

    def note(self, status):
        now = time.monotonic()
        with self.lock:
            if status is None or status >= 500:
                self.first_refused = self.first_refused or now
                self.last_refused = now
                self.first_accepted_after = None
                return
            if self.last_accepted is not None:
                self.longest_without = max(self.longest_without, now - self.last_accepted)
            self.last_accepted = now
            if self.first_refused is not None and self.first_accepted_after is None:
                self.first_accepted_after = now


def unrecorded_writes(stack, deposits, withdrawals):
    """What the database says of the writes the clients were acknowledged:
    {problem: details} for each acknowledged deposit or withdrawal (by its
    idempotency key, `fo-...`) that is not there, each key that had more
    than one effect, and each acknowledged withdrawal id that is not a
    withdrawal. Empty when every 2xx answer is in the database once."""
    effects = dict(stack.sqlite(
        "SELECT idempotency_key, count(*) FROM transactions WHERE idempotency_key LIKE 'fo-%' GROUP BY 1"))
    ids = {row[0] for row in stack.sqlite("SELECT id FROM transactions WHERE type = 'WITHDRAWAL'")}
    problems = {
        "keys with two effects": {key: n for key, n in effects.items() if n != 1},
        "lost deposits": sorted(set(deposits) - effects.keys()),
        "lost withdrawals": sorted(set(withdrawals) - effects.keys()),
        "withdrawal ids not found": sorted(set(withdrawals.values()) - ids),
    }
    return {problem: details for problem, details in problems.items() if details}


def leader_other_than(cluster, node):
    leader = cluster.leader()
    return leader if leader is not None and leader is not node else None


def failover_under_load(cluster, stack_factory, take_down, capsys, what):
    """Runs the stack on `cluster` with CLIENTS clients and the processor,
    calls `take_down()` (which returns the node it took down) after
    BEFORE_FAULT seconds, waits until writes have been accepted again for
    AFTER_RECOVERY seconds, and checks everything the module's docstring
    lists. The stack is stopped before the cluster, on every path."""
    stack = stack_factory(
        database=cluster.conninfo, processor=True, bank_mode="success",
        extra_env={"WALLET_PROCESS_INTERVAL": "1", "WALLET_BANK_TIMEOUT_MS": "2000",
                   "WALLET_LEASE_GRACE_SECONDS": "1", "WALLET_RETRY_BASE_SECONDS": "0"})
    try:
        wallets = [h.create_wallet(stack)["uuid"] for _ in range(CLIENTS)]
        for wallet in wallets:
            h.deposit(stack, wallet, 1_000)
        stop, clock = threading.Event(), RefusalClock()
        clients = [Client(stack, wallet, stop, clock) for wallet in wallets]
        for client in clients:
            client.start()
        try:
            time.sleep(BEFORE_FAULT)
            down_at = time.monotonic()
            dead = take_down()
            wait_until(lambda: leader_other_than(cluster, dead), timeout=60, message="a new leader",
                       interval=0.2)
            elected = time.monotonic() - down_at
            wait_until(lambda: clock.first_accepted_after is not None
                       and time.monotonic() - clock.first_accepted_after > AFTER_RECOVERY,
                       timeout=90, message="writes accepted again after the failover")
        finally:
            stop.set()
            for client in clients:
                client.join(RETRY_FOR + 15)
        for client in clients:
            assert not client.is_alive(), "a client is still retrying"
            assert client.error is None, repr(client.error)
        # Two windows, as the clients saw them: no write accepted at all, and
        # until the last refusal (a request that hung on a dead connection
        # counts when its 503 or 504 came back).
        refused = (clock.last_refused - down_at) if clock.last_refused else 0.0
        deposits = {key for client in clients for key in client.deposits}
        withdrawals = {key: id for client in clients for key, id in client.withdrawals}
        with capsys.disabled():
            print(f"\n    {what}: {dead.name}; new leader after {elected:.1f} s; no write accepted for "
                  f"{clock.longest_without:.1f} s; writes refused until {refused:.1f} s after; "
                  f"{len(deposits)} deposits and {len(withdrawals)} withdrawals acknowledged")
        assert len(deposits) > 10 and withdrawals, (len(deposits), len(withdrawals))

        # Every acknowledged write is there, and no key had two effects.
        problems = unrecorded_writes(stack, deposits, withdrawals)
        assert not problems, problems

        # Every withdrawal is paid once: the processor finishes them all (a
        # pass cut off by the failover leaves leases that expire), and the
        # bank saw each payout key at most once.
        wait_until(lambda: stack.sqlite(
            "SELECT count(*) FROM transactions WHERE status IN ('PENDING', 'PROCESSING')")[0][0] == 0,
            timeout=90, message="every withdrawal settled", interval=0.5)
        paid = [row.idempotency_key for row in stack.bank_ledger()]
        assert len(paid) == len(set(paid)), "a payout was made twice"
        # The bank answers a repeated key with its first answer ("replayed"): a
        # second "paid" for one key would be a second payout.
        paid_calls = [call.idempotency_key for call in stack.bank_calls() if call.answer == "paid"]
        assert len(paid_calls) == len(set(paid_calls)), "the bank paid one key twice"
        completed = stack.sqlite("SELECT bank_key FROM transactions WHERE status = 'COMPLETED' AND type = 'WITHDRAWAL'")
        assert {row[0] for row in completed} == set(paid)

        audit = stack.walletctl("audit", "verify")
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        stack.stop()


def test_leader_killed_under_load_loses_no_acknowledged_write_and_pays_nothing_twice(stack_factory, capsys):
    with PatroniCluster() as cluster:
        failover_under_load(cluster, stack_factory, cluster.kill_leader, capsys, "leader killed (-9)")


def test_leader_machine_dead_under_load_loses_nothing_and_writes_resume(stack_factory, capsys):
    """The leader stops answering without closing anything. The responder's
    writer and the processor are then in the middle of a statement on a
    connection that will never answer, and each responder thread holds an
    idle connection to the same dead server. Writes resume only once TCP
    gives those up (the keepalives and tcp_user_timeout of the README's
    connection string, which PatroniCluster.conninfo carries) and libpq finds
    the new leader: a statement sent on a dead connection fails
    tcp_user_timeout (10 s) after it was sent, an idle connection is closed
    by its keepalives about 11 s after the last packet it received, and a
    request that lands on an idle connection just before that waits out
    tcp_user_timeout too, so the window is up to about 21 s. Without these
    settings, writes did not resume within 90 s: the test fails."""
    with PatroniCluster() as cluster:
        failover_under_load(cluster, stack_factory, cluster.freeze_leader, capsys, "leader's machine dead")


# How many deposits the leader acknowledges, in the negative control, before
# and while its replicas receive nothing.
REPLICATED, UNREPLICATED = 5, 5


def accepts_writes(conninfo):
    try:
        _psql(conninfo, "SELECT 1")
    except RuntimeError:
        return False
    return True


def wal_receiver_pid(node):
    """The PID of a replica's WAL receiver, once it streams."""
    rows = wait_until(lambda: _psql(node.conninfo(), "SELECT pid FROM pg_stat_wal_receiver WHERE status = 'streaming'"),
                      timeout=30, message=f"{node.name}'s WAL receiver streaming", interval=0.2)
    return rows[0][0]


def test_asynchronous_replication_loses_acknowledged_deposits_and_the_check_reports_them(stack_factory, capsys):
    """The negative control of `unrecorded_writes`: the cluster is made to
    lose acknowledged deposits, and the check must name each of them.

    With asynchronous replication the leader acknowledges a commit once it
    is on its own disk. The replicas' WAL receivers are stopped (SIGSTOP,
    by the PIDs pg_stat_wal_receiver gives on each replica) before the
    second batch of deposits, so only the leader has those; then every
    process of the leader is killed (-9), and the stopped receivers too
    (-9): a receiver merely continued would still read the WAL its kernel
    had buffered for it, which would make the loss depend on timing. Each
    replica's postmaster restarts its processes after that crash and
    recovers what it had received; Patroni promotes one."""
    # maximum_lag_on_failover: Patroni promotes no replica that is further
    # behind the failed leader's last known position than this (1 MB by
    # default). Here the replicas lag by the second batch of deposits, a few
    # kB; how much WAL those write is not what this test is about, so the
    # limit is set far above any lag it could have, and the promotion is
    # certain: the data loss an asynchronous cluster accepts in exchange for
    # staying writable.
    with PatroniCluster(synchronous=False, maximum_lag_on_failover=1 << 30) as cluster:
        stack = stack_factory(database=cluster.conninfo)
        receivers = []
        try:
            wallet = h.create_wallet(stack)["uuid"]

            def deposit():
                key = f"fo-{uuid.uuid4()}"
                h.deposit(stack, wallet, 1, headers={"Idempotency-Key": key})
                return key

            replicated = [deposit() for _ in range(REPLICATED)]
            leader = cluster.leader()
            replicas = [node for node in cluster.nodes if node is not leader]
            # Every replica has replayed all the leader wrote so far.
            target = _psql(leader.conninfo(), "SELECT pg_current_wal_lsn() - '0/0'")[0][0]
            wait_until(lambda: all(
                _psql(node.conninfo(), "SELECT coalesce(pg_last_wal_replay_lsn() - '0/0', 0)")[0][0] >= target
                for node in replicas), timeout=30, message="the replicas caught up", interval=0.2)

            receivers = [wal_receiver_pid(node) for node in replicas]
            for pid in receivers:
                os.kill(pid, signal.SIGSTOP)
            unreplicated = [deposit() for _ in range(UNREPLICATED)]
            dead = cluster.kill_leader(whole_node=True)
            for pid in receivers:
                os.kill(pid, signal.SIGKILL)
            receivers = []
            killed_at = time.monotonic()
            # Patroni names the new leader as soon as it holds the leader key,
            # a moment before its PostgreSQL has left recovery: the check reads
            # through the connection string's read-write host, as the
            # programs do.
            wait_until(lambda: leader_other_than(cluster, dead) and accepts_writes(cluster.conninfo),
                       timeout=60, message="a replica promoted", interval=0.2)
            promoted = time.monotonic() - killed_at

            problems = unrecorded_writes(stack, replicated + unreplicated, {})
            reported = {problem: len(details) for problem, details in problems.items()}
            with capsys.disabled():
                print(f"\n    asynchronous replication: {dead.name} killed (-9), {cluster.leader().name} promoted "
                      f"after {promoted:.1f} s; of {REPLICATED + UNREPLICATED} acknowledged deposits, "
                      f"{UNREPLICATED} never reached a replica; the check reports {reported}")
            assert problems == {"lost deposits": sorted(unreplicated)}, problems
        finally:
            # Never left stopped, whatever failed: the replica's shutdown (and
            # a promotion) waits for its WAL receiver to exit.
            for pid in receivers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            stack.stop()
