#!/usr/bin/env python3
"""A seeded, replayable fault-injection run of the whole wallet stack.

    python3 -m Tests.chaos.chaos [--seed N] [--duration SECONDS] [--clients N] [--keep]

(from the repository's root: the tests are a package, Tests, whose integration
fixtures it imports).
    make chaos SEED=N DURATION=SECONDS

In the spirit of Jepsen's bank test and TigerBeetle's VOPR: client threads
drive the real stack (nginx, the responder, the mock bank CGI, processor
passes) while a nemesis, driven by the same seed, kills and restarts the
responder, runs processors one at a time, two at a time, with a crash point,
against a port nobody listens on, kills them mid-pass, and switches the
mock bank between its modes. At the end the bank is set to pay, processors
run until nothing is left to settle, and the invariants of the money are
checked against the database, the bank's ledger and `walletctl audit verify`.

The last line of output is always

    chaos: seed N, OPS operations, FAULTS faults, CHECKS checks, VIOLATIONS violations

and the exit status is 0 only with no violation. On a violation it prints
each one, keeps the run's directory (database, bank state, every log) and
prints the command that replays the run. See docs/CHAOS.md for what "the
same seed" guarantees: the same schedule of operations and faults, not the
same interleaving of threads and processes.

The stack is started with the integration tests' own `Stack` class
(Tests/integration/conftest.py, which imports pytest), so there is one way to
start and stop it. Otherwise standard library only.
"""

import argparse
import collections
import hashlib
import heapq
import http.client
import json
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from Tests.integration import conftest  # the Stack class: the one way to run the stack

REPO = Path(__file__).resolve().parents[2]

# --- Settings of the run ---------------------------------------------------------------

# The processor's settings: short, so that within a minute many withdrawals go
# through retries, rechecks of unknown outcomes and expired leases.
PROCESSOR_ENV = {
    "WALLET_BANK_TIMEOUT_MS": "1000",
    "WALLET_RETRY_BASE_SECONDS": "1",
    "WALLET_UNKNOWN_RECHECK_SECONDS": "2",
    "WALLET_MAX_RETRIES": "2",
    # A killed processor's claims come back after the bank timeout plus this.
    "WALLET_LEASE_GRACE_SECONDS": "1",
    # Calls in flight per pass. With up to ten passes at once, this keeps the
    # calls below the bank's children (STACK_ENV), so that a bank in a slow
    # mode is slow rather than a queue where every answer comes too late.
    "WALLET_BANK_CONCURRENCY": "6",
}
# The final drain, after the faults: a patient processor, so that settling
# depends on the bank paying, not on how loaded the machine is.
DRAIN_ENV = dict(PROCESSOR_ENV, WALLET_BANK_TIMEOUT_MS="5000", WALLET_BANK_CONCURRENCY="16")
BANK_TIMEOUT_SECONDS = int(PROCESSOR_ENV["WALLET_BANK_TIMEOUT_MS"]) / 1000
# The bank's CGI runs one call per fcgiwrap child. With the delays of the
# slow modes (up to 6 bank timeouts) and several passes at once, stack.sh's
# 16 children would all be asleep and later calls would never reach the
# bank; more children let more calls be in progress at the bank at once.
STACK_ENV = {"WALLET_BANK_WORKERS": "64"}

# One client request's time limit; a request that runs out is retried with
# the same Idempotency-Key.
REQUEST_TIMEOUT_SECONDS = 5.0
# After the run's duration, how long a client keeps retrying a write whose
# answer it has not seen yet; after that the write is indeterminate.
RETRY_GRACE_SECONDS = 20.0
# How long the final drain may take before what is left is "not settled".
DRAIN_DEADLINE_SECONDS = 180.0
# How long passes still running when the schedule ends may go on before
# they are SIGKILLed (one more crash; the drain takes over their claims).
FINISH_SECONDS = 10.0
# The statuses after which a client retries with the same key: timeouts and
# nginx's answers for a responder that is down or busy, and rate limits.
RETRY_STATUSES = {429, 502, 503, 504}

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def log(message):
    print(f"chaos: {message}", flush=True)


def utc_iso(epoch_seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds)) + \
        f".{int((epoch_seconds % 1) * 1000):03d}Z"


# --- Shared record of the run -----------------------------------------------------------

class Record:
    """What every thread reports: operations, acknowledged writes, faults and
    violations. One lock; the threads touch it once per operation."""

    def __init__(self):
        self.lock = threading.Lock()
        self.operations = 0
        self.operation_kinds = collections.Counter()
        self.outcomes = collections.Counter()
        self.acknowledged = []      # dicts: kind, key, wallet, transaction, amount, ...
        self.faults = 0
        self.fault_kinds = collections.Counter()
        self.checks = 0
        self.violations = []

    def operation(self, kind):
        with self.lock:
            self.operations += 1
            self.operation_kinds[kind] += 1

    def outcome(self, label):
        with self.lock:
            self.outcomes[label] += 1

    def acknowledge(self, entry):
        with self.lock:
            self.acknowledged.append(entry)

    def fault(self, kind):
        with self.lock:
            self.faults += 1
            self.fault_kinds[kind] += 1

    def check(self, passed, message):
        """Counts one check; a failed one is a violation with `message`."""
        with self.lock:
            self.checks += 1
            if not passed:
                self.violations.append(message() if callable(message) else message)
        return passed

    def violation(self, message):
        self.check(False, message)


# --- The workload -------------------------------------------------------------------------

class Client(threading.Thread):
    """One client: its own wallets, its own Random seeded from the master.

    Every operation draws the same number of random values whatever happens
    to it, so the sequence of operations (kinds, amounts, delays, which of
    its wallets) depends on the seed alone; only how far it gets within the
    run depends on speed. Retries draw from a second Random, for the same
    reason."""

    def __init__(self, number, seed, retry_seed, run):
        super().__init__(name=f"client-{number}", daemon=True)
        self.number = number
        self.random = random.Random(seed)
        self.retry_random = random.Random(retry_seed)
        self.run_ = run
        self.wallets = []           # uuids this client created (acknowledged)
        self.withdrawals = []       # (wallet, id) of acknowledged withdrawals
        self.transactions = []      # (wallet, id, amount) of acknowledged deposits and withdrawals
        self.sequence = 0
        self.replay_next = False

    # -- requests --------------------------------------------------------------

    def request(self, method, path, body=None, key=None, retry=True):
        """One logical request; retried with the same key after a timeout, a
        dropped connection or 429/502/503/504 until an answer comes or the
        retry deadline passes. Returns (Response or None, tries)."""
        headers = {"Idempotency-Key": key} if key else {}
        tries = 0
        while True:
            tries += 1
            try:
                response = conftest.http_request(self.run_.stack.http_port, method, path, body=body,
                                                 headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
                if response.status not in RETRY_STATUSES:
                    return response, tries
                self.run_.record.outcome(f"retry after HTTP {response.status}")
            except (OSError, http.client.HTTPException) as error:
                self.run_.record.outcome(f"retry after {type(error).__name__}")
            if not retry or self.run_.aborted.is_set() or time.monotonic() >= self.run_.retry_deadline:
                return None, tries
            time.sleep(self.retry_random.uniform(0.05, 0.3))

    def replay(self, what, method, path, body, key, response):
        """Sends an acknowledged write again with its key (on one operation in
        twenty): the answer must be the original status and body."""
        if not self.replay_next:
            return
        self.run_.record.operation("replay")
        again, _ = self.request(method, path, body=body, key=key)
        if again is None:
            return
        try:
            same = again.status == response.status and again.json() == response.json()
        except ValueError:
            same = False
        self.run_.record.check(same, lambda: (
            f"idempotency: {what} with key {key} answered HTTP {response.status} {response.body[:300]!r}, "
            f"the same request again HTTP {again.status} {again.body[:300]!r}"))

    def unexpected(self, what, response):
        self.run_.record.violation(
            f"unexpected answer: client {self.number} {what}: HTTP {response.status} {response.body[:300]!r}")

    def body_json(self, what, response):
        try:
            return response.json()
        except ValueError:
            self.unexpected(what, response)
            return None

    # -- operations ------------------------------------------------------------

    def run(self):
        try:
            while not self.run_.workload_over.is_set():
                self.one_operation()
        except Exception as error:  # a bug in the harness must not pass silently
            self.run_.record.violation(f"client {self.number} crashed: {error!r}")
            raise

    def one_operation(self):
        draw = self.random
        kind_roll = draw.random()
        pick = draw.randrange(1 << 30)
        amount = draw.randint(1, 6_000)
        ahead_seconds = draw.uniform(1.0, 4.0)
        read_kind = draw.randrange(3)
        pause = draw.uniform(0.0, 0.15)
        self.replay_next = draw.random() < 0.05
        self.sequence += 1
        key = f"chaos-{self.run_.seed}-{self.number}-{self.sequence}"

        if not self.wallets or kind_roll < 0.04:
            self.create_wallet(key)
        elif kind_roll < 0.34:
            self.deposit(key, self.wallets[pick % len(self.wallets)], amount)
        elif kind_roll < 0.52:
            self.withdraw(key, self.wallets[pick % len(self.wallets)], amount, None)
        elif kind_roll < 0.66:
            self.withdraw(key, self.wallets[pick % len(self.wallets)], amount, ahead_seconds)
        elif kind_roll < 0.76 and self.withdrawals:
            self.cancel(key, *self.withdrawals[pick % len(self.withdrawals)])
        else:
            self.read(pick, read_kind)
        if pause:
            self.run_.workload_over.wait(pause)

    def create_wallet(self, key):
        self.run_.record.operation("create")
        response, tries = self.request("POST", "/wallets/", key=key)
        if response is None:
            self.run_.record.outcome("create indeterminate")
            return
        if response.status != 201:
            return self.unexpected("create wallet", response)
        doc = self.body_json("create wallet", response)
        if doc is None:
            return
        uuid = doc.get("uuid")
        if not isinstance(uuid, str) or not UUID_RE.match(uuid):
            return self.unexpected("create wallet (no uuid)", response)
        self.wallets.append(uuid)
        self.run_.record.acknowledge({"kind": "create", "key": key, "wallet": uuid, "tries": tries})
        self.replay("create wallet", "POST", "/wallets/", None, key, response)

    def deposit(self, key, wallet, amount):
        self.run_.record.operation("deposit")
        response, tries = self.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount}, key=key)
        if response is None:
            self.run_.record.outcome("deposit indeterminate")
            return
        if response.status != 200:
            return self.unexpected(f"deposit {amount} to {wallet}", response)
        doc = self.body_json("deposit", response)
        transaction = (doc or {}).get("transaction") or {}
        if not isinstance(transaction.get("id"), int):
            return self.unexpected("deposit (no transaction id)", response)
        self.transactions.append((wallet, transaction["id"], amount))
        self.run_.record.acknowledge({"kind": "deposit", "key": key, "wallet": wallet,
                                      "transaction": transaction["id"], "amount": amount, "tries": tries})
        self.replay("deposit", "POST", f"/wallets/{wallet}/deposit", {"amount": amount}, key, response)

    def withdraw(self, key, wallet, amount, ahead_seconds):
        kind = "withdraw" if ahead_seconds is None else "withdraw-scheduled"
        self.run_.record.operation(kind)
        body = {"amount": amount}
        if ahead_seconds is not None:
            body["scheduled_for"] = utc_iso(time.time() + ahead_seconds)
        response, tries = self.request("POST", f"/wallets/{wallet}/withdraw", body=body, key=key)
        if response is None:
            self.run_.record.outcome(f"{kind} indeterminate")
            return
        if response.status == 400 and tries > 1 and ahead_seconds is not None \
                and b"invalid_scheduled_for" in response.body:
            # The first try never landed and the time has passed meanwhile.
            self.run_.record.outcome(f"{kind} too late after retries")
            return
        if response.status != 201:
            return self.unexpected(f"withdraw {body} from {wallet}", response)
        transaction = self.body_json("withdraw", response) or {}
        if not isinstance(transaction.get("id"), int) or transaction.get("status") != "PENDING":
            return self.unexpected("withdraw (no PENDING transaction)", response)
        self.withdrawals.append((wallet, transaction["id"]))
        self.transactions.append((wallet, transaction["id"], amount))
        self.run_.record.acknowledge({"kind": "withdraw", "key": key, "wallet": wallet,
                                      "transaction": transaction["id"], "amount": amount, "tries": tries})
        self.replay("withdraw", "POST", f"/wallets/{wallet}/withdraw", body, key, response)

    def cancel(self, key, wallet, transaction_id):
        self.run_.record.operation("cancel")
        response, tries = self.request("POST", f"/wallets/{wallet}/transactions/{transaction_id}/cancel", key=key)
        if response is None:
            self.run_.record.outcome("cancel indeterminate")
            return
        if response.status == 409:
            self.run_.record.outcome("cancel refused (not cancelable)")
            return
        if response.status != 200:
            return self.unexpected(f"cancel {transaction_id} of {wallet}", response)
        doc = self.body_json("cancel", response) or {}
        if doc.get("status") != "CANCELED":
            return self.unexpected("cancel (not CANCELED)", response)
        self.run_.record.acknowledge({"kind": "cancel", "key": key, "wallet": wallet,
                                      "transaction": transaction_id, "tries": tries})

    def read(self, pick, read_kind):
        """A read, checked on the spot: an acknowledged write is never missing."""
        record = self.run_.record
        if read_kind == 0 or not self.transactions:
            record.operation("read-wallet")
            wallet = self.wallets[pick % len(self.wallets)]
            response, _ = self.request("GET", f"/wallets/{wallet}/", retry=False)
            if response is None:
                return
            doc = self.body_json("read wallet", response) if response.status == 200 else None
            record.check(response.status == 200 and isinstance((doc or {}).get("balance"), int)
                         and doc["balance"] >= 0,
                         lambda: f"read: wallet {wallet} created and acknowledged, GET answered "
                                 f"HTTP {response.status} {response.body[:300]!r}")
        elif read_kind == 1:
            record.operation("read-transaction")
            wallet, transaction_id, amount = self.transactions[pick % len(self.transactions)]
            response, _ = self.request("GET", f"/wallets/{wallet}/transactions/{transaction_id}/", retry=False)
            if response is None:
                return
            doc = self.body_json("read transaction", response) if response.status == 200 else None
            record.check(response.status == 200 and (doc or {}).get("amount") == amount,
                         lambda: f"read: transaction {transaction_id} of {wallet} (amount {amount}) acknowledged, "
                                 f"GET answered HTTP {response.status} {response.body[:300]!r}")
        else:
            record.operation("read-list")
            wallet = self.wallets[pick % len(self.wallets)]
            response, _ = self.request("GET", f"/wallets/{wallet}/transactions/?limit=20", retry=False)
            if response is None:
                return
            record.check(response.status == 200,
                         lambda: f"read: list of wallet {wallet} answered HTTP {response.status} {response.body[:300]!r}")


# --- The nemesis --------------------------------------------------------------------------

def bank_modes_available():
    """The modes bank/bank.cgi knows, read from its `case $mode in` labels."""
    text = (REPO / "bank" / "bank.cgi").read_text()
    section = text[text.find("case $mode in"):]
    section = section[:section.find("esac")]
    modes = set()
    for label in re.findall(r"^\s*([a-z0-9| -]+)\)\s*$", section, re.M):
        modes.update(part.strip() for part in label.split("|"))
    return modes


def plan_bank_mode(draw, available):
    """One bank mode, drawn with a fixed number of draws whatever is chosen."""
    roll = draw.random()
    # Past the processor's timeout, some far past it: long enough that a call
    # still in progress at the bank can outlast the withdrawal's later attempts.
    late_ms = int(BANK_TIMEOUT_SECONDS * 1000 * draw.uniform(1.2, 6.0))
    early_ms = draw.randint(50, 400)                                       # well within it
    status_code = draw.choice([400, 404, 409, 422, 500])
    choices = [(0.26, "success"), (0.10, "fail"), (0.08, "http500"), (0.12, f"slow {late_ms}"),
               (0.05, f"random 30 {early_ms}"), (0.04, f"random 50 {late_ms}"),
               (0.06, f"fail-first {1 + early_ms % 2}")]
    if "hang" in available:
        choices.append((0.10, f"hang {late_ms}"))
    if "pay-then-hang" in available:
        choices.append((0.10, f"pay-then-hang {late_ms}"))
    if "status" in available:
        choices.append((0.10, f"status {status_code}"))
    total = sum(weight for weight, _ in choices)
    roll *= total
    for weight, mode in choices:
        if roll < weight:
            return mode
        roll -= weight
    return choices[-1][1]


DELAYING_MODES = ("slow", "hang", "pay-then-hang", "random")


def plan_declining_mode(draw, available):
    """A mode in which the bank says no, or something in front of it answers
    without looking at the key (a bare status, an outage, a hang)."""
    code = draw.choice([400, 404, 409, 422, 500])
    count = draw.randint(1, 2)
    hang_ms = int(BANK_TIMEOUT_SECONDS * 1000 * draw.uniform(1.2, 3.0))
    choices = ["fail", "fail", f"fail-first {count}", "http500"]
    if "status" in available:
        choices += [f"status {code}", f"status {code}"]
    if "hang" in available:
        choices.append(f"hang {hang_ms}")
    return choices[draw.randrange(len(choices))]


def plan_nemesis(seed, duration, available):
    """The whole schedule of processor passes and faults, from the seed alone:
    a list of (seconds from the start, kind, parameters).

    A bank that turns slow is, half the time, followed 0.3 to 2 s later by one
    that declines or is broken, and that by a second one 1 to 3 s after: the
    calls still in progress at the bank then end after later calls for the
    same keys were answered, and keys the bank paid meet answers that do not
    look at them."""
    draw = random.Random(seed)
    events = []
    at = 0.3
    while True:
        at += draw.expovariate(1 / 0.5)
        roll = draw.random()
        delay = draw.uniform(0.05, 1.5)
        mode = plan_bank_mode(draw, available)
        declines = draw.random() < 0.5
        declining_modes = [plan_declining_mode(draw, available) for _ in range(2)]
        second_gap = draw.uniform(1.0, 3.0)
        if at >= duration:
            break
        if roll >= 0.77 and declines and mode.split()[0] in DELAYING_MODES:
            first = at + 0.3 + delay
            for when, declining in ((first, declining_modes[0]), (first + second_gap, declining_modes[1])):
                if when < duration:
                    events.append((when, "bank-mode", {"mode": declining}))
        if roll < 0.42:
            events.append((at, "pass", {}))
        elif roll < 0.52:
            events.append((at, "pass-killed", {"after": round(delay, 3)}))
        elif roll < 0.59:
            events.append((at, "pass-crash-point", {}))
        elif roll < 0.66:
            events.append((at, "two-passes", {}))
        elif roll < 0.71:
            events.append((at, "pass-refused", {}))
        elif roll < 0.77:
            events.append((at, "kill-responder", {"down": round(delay * 0.6, 3)}))
        else:
            events.append((at, "bank-mode", {"mode": mode}))
    return sorted(events, key=lambda event: event[0])


def plan_digest(events):
    text = "\n".join(f"{at:.6f} {kind} {json.dumps(params, sort_keys=True)}" for at, kind, params in events)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Nemesis(threading.Thread):
    """Runs the planned events at their times (late if the one before took
    long, never early), and the kills and restarts they schedule."""

    def __init__(self, run, events):
        super().__init__(name="nemesis", daemon=True)
        self.run_ = run
        self.queue = [(at, index, kind, params) for index, (at, kind, params) in enumerate(events)]
        heapq.heapify(self.queue)
        self.sequence = len(events)
        self.processors = []        # (Popen, kind, log name)
        self.responder_down = False
        self.bank_mode = "success"
        self.longest_bank_delay_ms = 0
        # A port nobody listens on: bound, never listening, so connections are
        # refused and nothing else can take it during the run.
        self.refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.refusing.bind(("127.0.0.1", 0))
        self.refused_url = f"http://127.0.0.1:{self.refusing.getsockname()[1]}/pay"

    def note(self, kind, params):
        """One line per event in run/nemesis.log, with the wall clock of the
        logs and the bank's calls, to line a violation up with its causes."""
        shown = {k: (f"pid {v.pid}" if hasattr(v, "pid") else v) for k, v in params.items()}
        with open(self.run_.stack.run_dir / "nemesis.log", "a") as out:
            out.write(f"{utc_iso(time.time())}\t{time.monotonic() - self.run_.started:8.3f}\t{kind}\t"
                      f"{json.dumps(shown, sort_keys=True)}\n")

    def schedule(self, at, kind, params):
        self.sequence += 1
        heapq.heappush(self.queue, (at, self.sequence, kind, params))

    def run(self):
        try:
            while self.queue and not self.run_.aborted.is_set():
                at, _, kind, params = heapq.heappop(self.queue)
                wait = self.run_.started + at - time.monotonic()
                if wait > 0 and self.run_.aborted.wait(wait):
                    break
                self.reap()
                self.note(kind, params)
                getattr(self, "do_" + kind.replace("-", "_"))(**params)
        except Exception as error:
            self.run_.record.violation(f"nemesis crashed: {error!r}")
            raise

    # -- processors ------------------------------------------------------------

    def spawn(self, kind, extra=None):
        number = len(self.processors) + 1
        name = f"processors/{number:04d}-{kind}.log"
        env = dict(PROCESSOR_ENV, **(extra or {}))
        process = self.run_.stack.spawn_processor(extra_env=env, log_name=name)
        self.processors.append((process, kind, name))
        self.note("spawned", {"pid": process.pid, "log": name})
        return process

    def reap(self):
        """Collects finished passes; one that failed on its own is a violation."""
        for process, kind, name in self.processors:
            if getattr(process, "chaos_seen", False) or process.poll() is None:
                continue
            process.chaos_seen = True
            killed = process.returncode == -signal.SIGKILL
            if getattr(process, "chaos_killed", False):
                continue
            if kind in ("pass", "two-passes", "pass-refused") or (kind == "pass-killed" and not killed):
                self.run_.record.check(process.returncode == 0, lambda: (
                    f"processor pass ({kind}, pid {process.pid}) exited with status {process.returncode}; "
                    f"log {self.run_.stack.run_dir / name}"))
            elif kind == "pass-crash-point" and not killed:
                # It found nothing to pay, so it never reached the crash point.
                self.run_.record.check(process.returncode == 0, lambda: (
                    f"processor pass ({kind}, pid {process.pid}) exited with status {process.returncode}"))

    def running(self):
        return [p for p, _, _ in self.processors if p.poll() is None]

    def do_pass(self):
        self.spawn("pass")

    def do_pass_killed(self, after):
        process = self.spawn("pass-killed")
        self.schedule(time.monotonic() - self.run_.started + after, "kill-processor", {"process": process})

    def do_kill_processor(self, process, why="processor killed mid-pass"):
        if process.poll() is None:
            process.kill()
            process.wait()
            process.chaos_killed = True
            self.run_.record.fault(why)

    def do_pass_crash_point(self):
        self.spawn("pass-crash-point", {"WALLET_FAULT_POINT": "after-bank-answer"})
        self.run_.record.fault("processor with the after-bank-answer crash point")

    def do_two_passes(self):
        self.spawn("two-passes")
        self.spawn("two-passes")
        self.run_.record.fault("two processors at once")

    def do_pass_refused(self):
        self.spawn("pass-refused", {"WALLET_BANK_URL": self.refused_url})
        self.run_.record.fault("processor against a refusing port")

    # -- the responder ---------------------------------------------------------

    def do_kill_responder(self, down):
        if self.responder_down:
            return
        self.run_.stack.kill_responder(signal.SIGKILL)
        self.responder_down = True
        self.run_.record.fault("responder SIGKILLed")
        self.schedule(time.monotonic() - self.run_.started + down, "restart-responder", {})

    def do_restart_responder(self):
        try:
            self.run_.stack.restart_responder()
            self.responder_down = False
        except AssertionError as error:
            self.run_.record.violation(f"the responder did not restart: {error}")
            self.schedule(time.monotonic() - self.run_.started + 1.0, "restart-responder", {})

    # -- the bank --------------------------------------------------------------

    def do_bank_mode(self, mode):
        self.set_bank_mode(mode)
        self.run_.record.fault(f"bank mode {mode.split()[0]}")

    def set_bank_mode(self, mode):
        self.run_.stack.set_bank_mode(mode)
        self.bank_mode = mode
        numbers = [int(part) for part in mode.split()[1:] if part.isdigit()]
        if mode.split()[0] in ("slow", "hang", "pay-then-hang", "random") and numbers:
            self.longest_bank_delay_ms = max(self.longest_bank_delay_ms, numbers[-1])

    def finish(self, deadline_seconds=FINISH_SECONDS):
        """After the schedule: the responder back up, every pass ended (those
        still running after the deadline SIGKILLed, one more crash)."""
        if self.responder_down:
            self.do_restart_responder()
            while self.responder_down and not self.run_.aborted.is_set():
                time.sleep(0.5)
                self.do_restart_responder()
        deadline = time.monotonic() + deadline_seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in self.running():
            self.note("kill-processor", {"process": process})
            self.do_kill_processor(process, "processor killed when the schedule ended")
        self.reap()
        self.refusing.close()


# --- The final checks ---------------------------------------------------------------------

class Checker:
    """Every invariant of the money, once everything has settled."""

    def __init__(self, run):
        self.run_ = run
        self.stack = run.stack
        self.record = run.record
        self.database = sqlite3.connect("file:" + urllib.parse.quote(str(self.stack.db_path)) + "?mode=ro",
                                        uri=True, timeout=10)
        self.database.row_factory = sqlite3.Row

    def rows(self, sql, params=()):
        return self.database.execute(sql, params).fetchall()

    def bank_key_sql(self):
        """The withdrawal's key at the bank: the stored `bank_key` where the
        schema has it, else the wallet's uuid and the transaction id."""
        columns = {row["name"] for row in self.rows("PRAGMA table_info(transactions)")}
        return "t.bank_key" if "bank_key" in columns else "w.uuid || ':' || t.id"

    def withdrawals(self):
        rows = self.rows(
            f"SELECT t.id, w.uuid AS wallet, t.amount, t.status, t.failure_reason, t.attempts, "
            f"{self.bank_key_sql()} AS bank_key, "
            f"EXISTS (SELECT 1 FROM ledger l WHERE l.transaction_id = t.id AND l.kind = 'REFUND') AS refunded "
            f"FROM transactions t JOIN wallets w ON w.id = t.wallet_id WHERE t.type = 'WITHDRAWAL'")
        return [dict(row) for row in rows]

    def run(self):
        self.acknowledged_writes()
        withdrawals = self.withdrawals()
        ledger = self.stack.bank_ledger()
        self.summarize(withdrawals)
        self.bank_ledger(withdrawals, ledger)
        self.no_refund_of_paid(withdrawals, ledger)
        self.balances()
        self.held()
        self.audit()
        self.reconcile()
        self.outbox()
        self.database.close()

    def summarize(self, withdrawals):
        """What the faults made of the withdrawals, to show they bit."""
        ends = collections.Counter(f"{w['status']}{'/' + w['failure_reason'] if w['failure_reason'] else ''}"
                                   for w in withdrawals)
        retried = sum(1 for w in withdrawals if w["attempts"] > 1)
        calls = collections.Counter(call.answer for call in self.stack.bank_calls())
        log("withdrawals: " + ", ".join(f"{n} {k}" for k, n in sorted(ends.items()))
            + f"; {retried} took more than one attempt")
        log("bank calls: " + ", ".join(f"{n} {k}" for k, n in sorted(calls.items())))

    # 1. Every write answered 2xx is in the database.
    def acknowledged_writes(self):
        wallets = {row["uuid"] for row in self.rows("SELECT uuid FROM wallets")}
        transactions = {row["id"]: dict(row) for row in self.rows(
            "SELECT t.id, w.uuid AS wallet, t.type, t.amount, t.status, t.idempotency_key "
            "FROM transactions t JOIN wallets w ON w.id = t.wallet_id")}
        per_key = collections.Counter(row["idempotency_key"] for row in transactions.values()
                                      if row["idempotency_key"] is not None)
        check = self.record.check
        for entry in self.run_.record.acknowledged:
            kind, wallet = entry["kind"], entry["wallet"]
            if kind == "create":
                check(wallet in wallets, f"lost write: wallet {wallet} was created (201, key {entry['key']}) "
                                         f"and is not in the database")
                continue
            row = transactions.get(entry["transaction"])
            if kind == "cancel":
                check(row is not None and row["status"] == "CANCELED",
                      f"lost write: withdrawal {entry['transaction']} was canceled (200) and is {row}")
                continue
            expected_type = "DEPOSIT" if kind == "deposit" else "WITHDRAWAL"
            check(row is not None and row["wallet"] == wallet and row["type"] == expected_type
                  and row["amount"] == entry["amount"] and row["idempotency_key"] == entry["key"],
                  f"lost write: {kind} of {entry['amount']} to {wallet} answered with transaction "
                  f"{entry['transaction']} (key {entry['key']}, {entry['tries']} tries); the database has {row}")
            if kind == "deposit":
                check(row is not None and row["status"] == "COMPLETED",
                      f"deposit {entry['transaction']} was answered 200 and is {row}")
            check(per_key[entry["key"]] == 1,
                  f"key {entry['key']} ({kind}, {entry['tries']} tries) made {per_key[entry['key']]} transactions")

    # 2. No key paid twice; the bank's ledger and the COMPLETED withdrawals, one to one.
    def bank_ledger(self, withdrawals, ledger):
        check = self.record.check
        by_key = collections.defaultdict(list)
        for row in ledger:
            by_key[row.idempotency_key].append(row)
        completed = {w["bank_key"]: w for w in withdrawals if w["status"] == "COMPLETED"}
        settled_otherwise = {w["bank_key"] for w in withdrawals if w["status"] != "COMPLETED"}
        for key, rows in by_key.items():
            check(len(rows) == 1, lambda: self.explain(f"paid twice: bank key {key} is in the bank's ledger "
                                                       f"{len(rows)} times", key, withdrawals))
            if key in settled_otherwise:
                continue    # a withdrawal that is not COMPLETED: check 3 names it
            withdrawal = completed.get(key)
            check(withdrawal is not None and str(withdrawal["amount"]) == rows[0].amount
                  and withdrawal["wallet"] == rows[0].wallet,
                  lambda: self.explain(f"the bank paid key {key} ({rows[0].wallet}, {rows[0].amount}) and no "
                                       f"COMPLETED withdrawal matches it", key, withdrawals))
        for key, withdrawal in completed.items():
            check(key in by_key, lambda: self.explain(
                f"withdrawal {withdrawal['id']} is COMPLETED and the bank never paid key {key}", key, withdrawals))

    # 3. Nothing refunded (or otherwise settled as unpaid) that the bank paid.
    def no_refund_of_paid(self, withdrawals, ledger):
        paid = {row.idempotency_key for row in ledger}
        for w in withdrawals:
            if w["status"] == "COMPLETED":
                continue
            what = "refunded although the bank paid" if w["refunded"] else f"{w['status']} although the bank paid"
            self.record.check(w["bank_key"] not in paid, lambda: self.explain(
                f"{what}: withdrawal {w['id']} ({w['wallet']}, {w['amount']}) is {w['status']} / "
                f"{w['failure_reason']} after {w['attempts']} attempts", w["bank_key"], withdrawals))

    # 4. No balance below zero; each balance is the fold of its ledger rows.
    def balances(self):
        check = self.record.check
        running = {}
        for row in self.rows("SELECT id, wallet_id, delta, balance_after FROM ledger ORDER BY id"):
            total = running.get(row["wallet_id"], 0) + row["delta"]
            running[row["wallet_id"]] = total
            check(row["balance_after"] == total and total >= 0,
                  f"ledger row {row['id']}: balance_after {row['balance_after']}, the running sum is {total}")
        for row in self.rows("SELECT id, uuid, balance FROM wallets"):
            check(row["balance"] >= 0, f"wallet {row['uuid']} has a negative balance {row['balance']}")
            check(row["balance"] == running.get(row["id"], 0),
                  f"wallet {row['uuid']}: balance {row['balance']}, its ledger rows sum to {running.get(row['id'], 0)}")

    # 5. held is the sum of the PROCESSING withdrawals.
    def held(self):
        for row in self.rows(
                "SELECT w.uuid, w.held, COALESCE((SELECT SUM(t.amount) FROM transactions t WHERE t.wallet_id = w.id "
                "AND t.type = 'WITHDRAWAL' AND t.status = 'PROCESSING'), 0) AS processing FROM wallets w"):
            self.record.check(row["held"] == row["processing"],
                              f"wallet {row['uuid']}: held {row['held']}, PROCESSING withdrawals {row['processing']}")

    # 6. The product's own audit, and its reconciliation with the bank.
    def audit(self):
        result = self.stack.walletctl("audit", "verify", "--database", self.stack.db_path)
        self.record.check(result.returncode == 0,
                          f"walletctl audit verify exited {result.returncode}:\n{result.stdout}{result.stderr}")

    def reconcile(self):
        ledger_file = self.stack.bank_dir / "ledger"
        if not ledger_file.exists():
            ledger_file.write_text("")
        result = self.stack.walletctl("reconcile", "--bank-ledger", ledger_file, "--database", self.stack.db_path)
        self.record.check(result.returncode == 0,
                          f"walletctl reconcile exited {result.returncode}:\n{result.stdout}{result.stderr}")

    # 7. The event outbox: every change has its one event, and no event lacks its change
    #    (README, "Events and webhooks"), whatever was killed when.
    def outbox(self):
        if not self.rows("SELECT name FROM sqlite_schema WHERE name = 'events'"):
            return
        check = self.record.check
        created = collections.Counter(row["wallet_id"] for row in self.rows(
            "SELECT wallet_id FROM events WHERE type = 'wallet.created'"))
        for row in self.rows("SELECT id, uuid FROM wallets"):
            check(created.get(row["id"], 0) == 1, f"wallet {row['uuid']}: {created.get(row['id'], 0)} wallet.created events")
        events = collections.defaultdict(list)
        for row in self.rows("SELECT transaction_id, type, data FROM events WHERE transaction_id IS NOT NULL ORDER BY id"):
            events[row["transaction_id"]].append((row["type"], json.loads(row["data"])))
        kinds = collections.defaultdict(list)
        for row in self.rows("SELECT transaction_id, kind FROM ledger ORDER BY id"):
            kinds[row["transaction_id"]].append(row["kind"])
        final = {"COMPLETED": "withdrawal.completed", "FAILED": "withdrawal.failed", "CANCELED": "withdrawal.canceled"}
        for row in self.rows("SELECT id, type, status FROM transactions"):
            types = [t for t, _ in events.get(row["id"], [])]
            if row["type"] == "DEPOSIT":
                check(types == ["deposit.completed"], f"deposit {row['id']}: events {types}")
                continue
            check(types[:1] == ["withdrawal.scheduled"] and types.count("withdrawal.scheduled") == 1,
                  f"withdrawal {row['id']}: events {types}")
            check(types.count("withdrawal.processing") == kinds[row["id"]].count("DEBIT"),
                  f"withdrawal {row['id']}: events {types}, ledger {kinds[row['id']]}")
            if row["status"] in final:
                check(types[-1:] == [final[row["status"]]] and types.count(final[row["status"]]) == 1,
                      f"withdrawal {row['id']} {row['status']}: events {types}")
            else:
                check(not set(types) & set(final.values()), f"withdrawal {row['id']} {row['status']}: events {types}")
            refunds = [data.get("refund") for t, data in events.get(row["id"], []) if t == "withdrawal.failed"]
            check(bool(refunds and refunds[0]) == ("REFUND" in kinds[row["id"]]),
                  f"withdrawal {row['id']}: failed event refund {refunds}, ledger {kinds[row['id']]}")
        orphans = self.rows("SELECT count(*) AS n FROM events e WHERE e.transaction_id IS NOT NULL "
                            "AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = e.transaction_id)")
        check(orphans[0]["n"] == 0, f"{orphans[0]['n']} events of transactions that do not exist")

    # -- explanations ------------------------------------------------------------

    def explain(self, headline, key, withdrawals):
        """A money violation with what is needed to understand it: the
        withdrawal, the bank's calls and ledger lines for its key, and the
        processor log lines that name it."""
        withdrawal = next((w for w in withdrawals if w["bank_key"] == key), None)
        lines = [headline, f"  withdrawal: {withdrawal}"]
        calls = [c for c in self.stack.bank_calls() if c.idempotency_key == key]
        lines += [f"  bank call:   {utc_iso(int(c.time))} ({c.time}) {c.answer}" for c in calls if c.time.isdigit()] \
            or ["  bank call:   (none)"]
        lines += [f"  bank ledger: {'  '.join(r)}" for r in self.stack.bank_ledger() if r.idempotency_key == key]
        if withdrawal is not None:
            pattern = re.compile(rf'"withdrawal":\s*{withdrawal["id"]}\b|"transaction(_id)?":\s*{withdrawal["id"]}\b')
            for path in sorted((self.stack.run_dir / "processors").glob("*.log")) + \
                    [self.stack.run_dir / "processor.log"]:
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                for line in text.splitlines():
                    if pattern.search(line):
                        lines.append(f"  {path.name}: {line}")
        return "\n".join(lines)


# --- The run ------------------------------------------------------------------------------

class Run:
    def __init__(self, seed, duration, clients):
        self.seed = seed
        self.duration = duration
        self.clients = clients
        self.record = Record()
        self.aborted = threading.Event()
        self.workload_over = threading.Event()
        self.stack = None
        self.started = None
        self.retry_deadline = None

    def execute(self):
        master = random.Random(self.seed)
        client_seeds = [(master.getrandbits(64), master.getrandbits(64)) for _ in range(self.clients)]
        available = bank_modes_available()
        events = plan_nemesis(master.getrandbits(64), self.duration, available)
        planned = collections.Counter(kind for _, kind, _ in events)
        log(f"seed {self.seed}, {self.duration:g} s, {self.clients} clients; schedule {plan_digest(events)}: "
            + ", ".join(f"{n} {kind}" for kind, n in sorted(planned.items())))

        self.stack = conftest.Stack(extra_env=dict(PROCESSOR_ENV, **STACK_ENV), bank_mode="success")
        self.stack.start()
        (self.stack.run_dir / "processors").mkdir()
        log(f"stack up at {self.stack.url}, run dir {self.stack.base_dir}")

        self.started = time.monotonic()
        self.retry_deadline = self.started + self.duration + RETRY_GRACE_SECONDS
        workers = [Client(n, *seeds, run=self) for n, seeds in enumerate(client_seeds)]
        nemesis = Nemesis(self, events)
        for thread in workers + [nemesis]:
            thread.start()

        next_report = 10.0
        while time.monotonic() - self.started < self.duration:
            if self.aborted.wait(0.2):
                return
            if time.monotonic() - self.started >= next_report:
                log(f"{next_report:3.0f} s: {self.record.operations} operations, {self.record.faults} faults, "
                    f"{len(nemesis.running())} processors running, bank {nemesis.bank_mode!r}")
                next_report += 10.0
        self.workload_over.set()
        for thread in workers:
            thread.join(RETRY_GRACE_SECONDS + REQUEST_TIMEOUT_SECONDS + 5)
            if thread.is_alive():
                self.record.violation(f"{thread.name} did not finish")
        nemesis.join(60)
        if nemesis.is_alive():
            self.record.violation("the nemesis did not finish its schedule")
        nemesis.finish()
        log(f"workload over after {time.monotonic() - self.started:.1f} s: {self.record.operations} operations, "
            f"{self.record.faults} faults")

        self.settle(nemesis)
        began = time.monotonic()
        Checker(self).run()
        log(f"checked in {time.monotonic() - began:.1f} s")

    def settle(self, nemesis):
        """The bank pays again; every call still in flight at the bank ends;
        processors run until nothing is PENDING or PROCESSING."""
        began = time.monotonic()
        nemesis.set_bank_mode("success")
        time.sleep(nemesis.longest_bank_delay_ms / 1000 + 1.0)
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        passes = 0
        while True:
            left = self.stack.sqlite("SELECT COUNT(*) FROM transactions WHERE status IN ('PENDING', 'PROCESSING')")[0][0]
            if left == 0:
                break
            if time.monotonic() >= deadline or self.aborted.is_set():
                rows = self.stack.sqlite(
                    "SELECT id, status, failure_reason, attempts, next_attempt_at, lease_until, bank_call_open "
                    "FROM transactions WHERE status IN ('PENDING', 'PROCESSING') ORDER BY id LIMIT 20")
                self.record.violation(f"not settled: {left} withdrawals still PENDING or PROCESSING after "
                                      f"{DRAIN_DEADLINE_SECONDS:g} s of passes with the bank paying; first: {rows}")
                break
            try:
                result = self.stack.run_processor(extra_env=DRAIN_ENV,
                                                  timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue    # killed by run_processor; the deadline check above reports what is left
            passes += 1
            self.record.check(result.returncode == 0, f"final processor pass exited {result.returncode}: "
                                                      f"{result.stderr[-2000:]}")
            time.sleep(0.3)
        log(f"settled after {passes} passes, {time.monotonic() - began:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: a random one, printed)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of workload and faults (default 60)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory even without a violation")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    duration = args.duration
    replay = f"make chaos SEED={seed} DURATION={duration:g}"

    # Ctrl-C and SIGTERM end the run the same way: everything started is stopped.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    # Installed for SIGINT too: a shell starts background jobs with SIGINT
    # ignored, and Python would then keep ignoring it.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    run = Run(seed, duration, args.clients)
    began = time.monotonic()
    interrupted_by = None
    try:
        run.execute()
    except KeyboardInterrupt as error:
        interrupted_by = str(error) or "SIGINT"
        run.record.violation(f"interrupted by {interrupted_by}: the run is incomplete")
    except Exception as error:
        run.record.violation(f"the run failed: {error!r}")
    finally:
        run.aborted.set()
        run.workload_over.set()
        if run.stack is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                run.stack.stop()
            except AssertionError as error:
                run.record.violation(f"unclean stop: {error}")

    record = run.record
    log(f"finished in {time.monotonic() - began:.1f} s; operations: "
        + ", ".join(f"{n} {k}" for k, n in sorted(record.operation_kinds.items())))
    log("faults: " + (", ".join(f"{n} {k}" for k, n in sorted(record.fault_kinds.items())) or "none"))
    if record.outcomes:
        log("client outcomes: " + ", ".join(f"{n} {k}" for k, n in sorted(record.outcomes.items())))
    if record.violations:
        for number, violation in enumerate(record.violations, 1):
            print(f"VIOLATION {number}: {violation}", flush=True)
        if run.stack is not None:
            log(f"run directory kept: {run.stack.base_dir}")
        log(f"replay: {replay}")
    elif run.stack is not None:
        if args.keep:
            log(f"run directory kept: {run.stack.base_dir}")
        else:
            run.stack.remove()
    print(f"chaos: seed {seed}, {record.operations} operations, {record.faults} faults, "
          f"{record.checks} checks, {len(record.violations)} violations", flush=True)
    return 130 if interrupted_by else (1 if record.violations else 0)


if __name__ == "__main__":
    sys.exit(main())
