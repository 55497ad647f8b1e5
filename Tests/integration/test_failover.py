"""Failover: the whole stack on a three-node Patroni cluster (synchronous and
strict, one etcd), clients depositing with idempotency keys and scheduling
withdrawals that the processor pays, and `kill -9` of the leader's Patroni and
postmaster in the middle, as when its machine dies.

Afterwards: every deposit and withdrawal that got a 2xx is in the database,
no idempotency key had two effects, no payout was made twice, every
withdrawal reached a final state, and `walletctl audit verify` passes. The
test prints how long writes were refused.

`make test-failover` runs it (WALLET_TEST_FAILOVER=1): the cluster takes
about 15 s to form and the failover about the cluster's ttl (5 s) more."""

import os
import threading
import time
import uuid

import pytest

from . import helpers as h
from .conftest import Stack, wait_until
from .patroni import PatroniCluster

pytestmark = pytest.mark.skipif(
    os.environ.get("WALLET_TEST_FAILOVER") != "1",
    reason="starts a Patroni cluster: the failover suite runs it (make test-failover)")

CLIENTS = 4
# How long the load runs before the leader is killed, and at least how long
# after writes are accepted again.
BEFORE_KILL = 3.0
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
    """When writes were first and last refused, across all clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.first_refused = self.last_refused = self.first_accepted_after = None

    def note(self, status):
        now = time.monotonic()
        with self.lock:
            if status is None or status >= 500:
                self.first_refused = self.first_refused or now
                self.last_refused = now
                self.first_accepted_after = None
            elif self.first_refused is not None and self.first_accepted_after is None:
                self.first_accepted_after = now


def test_leader_killed_under_load_loses_no_acknowledged_write_and_pays_nothing_twice(capsys):
    with PatroniCluster() as cluster:
        stack = Stack(
            database=cluster.conninfo, processor=True, bank_mode="success",
            extra_env={"WALLET_PROCESS_INTERVAL": "1", "WALLET_BANK_TIMEOUT_MS": "2000",
                       "WALLET_LEASE_GRACE_SECONDS": "1", "WALLET_RETRY_BASE_SECONDS": "0"})
        stack.start()
        try:
            wallets = [h.create_wallet(stack)["uuid"] for _ in range(CLIENTS)]
            for wallet in wallets:
                h.deposit(stack, wallet, 1_000)
            stop, clock = threading.Event(), RefusalClock()
            clients = [Client(stack, wallet, stop, clock) for wallet in wallets]
            for client in clients:
                client.start()
            time.sleep(BEFORE_KILL)
            killed_at = time.monotonic()
            dead = cluster.kill_leader()
            wait_until(lambda: clock.first_accepted_after is not None
                       and time.monotonic() - clock.first_accepted_after > AFTER_RECOVERY,
                       timeout=90, message="writes accepted again after the failover")
            stop.set()
            for client in clients:
                client.join(RETRY_FOR + 15)
                assert not client.is_alive(), "a client is still retrying"
                assert client.error is None, repr(client.error)
            refused = (clock.last_refused - killed_at) if clock.last_refused else 0.0
            deposits = {key for client in clients for key in client.deposits}
            withdrawals = {key: id for client in clients for key, id in client.withdrawals}
            with capsys.disabled():
                print(f"\n    failover: {dead.name} killed under load; writes refused for {refused:.1f} s; "
                      f"{len(deposits)} deposits and {len(withdrawals)} withdrawals acknowledged")
            assert len(deposits) > 10 and withdrawals, (len(deposits), len(withdrawals))

            # Every acknowledged write is there, and no key had two effects.
            effects = dict(stack.sqlite(
                "SELECT idempotency_key, count(*) FROM transactions WHERE idempotency_key LIKE 'fo-%' GROUP BY 1"))
            assert not {key: n for key, n in effects.items() if n != 1}, "a key with two effects"
            assert deposits <= effects.keys(), f"lost deposits: {sorted(deposits - effects.keys())[:5]}"
            assert set(withdrawals) <= effects.keys(), "lost withdrawals"
            ids = {row[0] for row in stack.sqlite("SELECT id FROM transactions WHERE type = 'WITHDRAWAL'")}
            assert set(withdrawals.values()) <= ids

            # Every withdrawal is paid once: the processor finishes them all (a
            # pass cut off by the failover leaves leases that expire), and the
            # bank saw each payout key at most once.
            wait_until(lambda: stack.sqlite(
                "SELECT count(*) FROM transactions WHERE status IN ('PENDING', 'PROCESSING')")[0][0] == 0,
                timeout=90, message="every withdrawal settled")
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
