"""Processors on hosts whose clocks disagree with the database's (README, "More than one
machine"): due times and leases are the database's time, so a processor whose clock runs
an hour ahead neither claims a withdrawal before it is due nor takes over a lease another
processor still holds, and one whose clock is an hour ahead or behind still pays what is
due, once, through the real mock bank.

The processor's clock is shifted with libfaketime (Debian's faketime package, which
`make deps` installs), preloaded into the real wallet-processor binary; the responder, the
bank and PostgreSQL keep the true time. On PostgreSQL the database's clock is the server's
(`clock_timestamp()`). These tests run on PostgreSQL only (`make test-postgres`): an
SQLite file lives on one host, whose local clock *is* the database's clock, so a shifted
processor there is a database whose clock moved, not a host out of step with it."""

import os
import signal
from pathlib import Path

import pytest

from . import helpers as h
from .test_events import receivers, subscribe  # noqa: F401 (receivers is a fixture)

pytestmark = pytest.mark.skipif(
    h.POSTGRES_SERVER is None,
    reason="PostgreSQL only: on SQLite the processor's local clock is the database's clock")

# Debian's multiarch directory: x86_64-linux-gnu, aarch64-linux-gnu, ...
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
# The crashed processor's lease: a 5 s call limit and 30 s of grace (the defaults), long
# enough to outlast the test, far shorter than the skew.
LEASE_ENV = {"WALLET_BANK_TIMEOUT_MS": "5000", "WALLET_LEASE_GRACE_SECONDS": "30"}


def shifted(offset):
    """The environment that runs a program with its clocks `offset` from the true time
    ("+1h", "-1h"): libfaketime moves CLOCK_REALTIME and CLOCK_MONOTONIC alike, as a host
    whose clock is off (a monotonic clock means nothing across hosts anyway)."""
    assert LIBFAKETIME is not None, "libfaketime is missing: apt-get install faketime (make deps)"
    preload = " ".join(p for p in (str(LIBFAKETIME), os.environ.get("LD_PRELOAD", "")) if p)
    return {"LD_PRELOAD": preload, "FAKETIME": offset}


def run_pass(stack, extra_env, expect_rc=0):
    result = stack.run_processor(extra_env=extra_env)
    assert result.returncode == expect_rc, (
        f"wallet-processor exited {result.returncode}, expected {expect_rc}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}")
    return result


def pass_summary(result):
    passes = [d for d in h.json_log_lines(result.stderr) if d.get("event") == "pass"]
    assert len(passes) == 1, result.stderr[-4000:]
    return passes[0]


def db_tx(stack, tid):
    cols = ("status", "attempts", "lease_owner", "lease_until", "bank_call_open", "next_attempt_at")
    rows = stack.sqlite(f"SELECT {', '.join(cols)} FROM transactions WHERE id = ?", (tid,))
    assert rows, f"transaction {tid} is not in the database"
    return dict(zip(cols, rows[0]))


def bank_key(stack, tid):
    return stack.sqlite("SELECT bank_key FROM transactions WHERE id = ?", (tid,))[0][0]


def funded_wallet(stack, amount):
    w = h.create_wallet(stack)["uuid"]
    h.deposit(stack, w, amount)
    return w


def test_the_shift_reaches_the_processor(stack):
    """The premise: libfaketime does move the processor's clock (its pass's started_at,
    the local clock's, lands an hour ahead), so the tests below prove something."""
    run_pass(stack, shifted("+1h"))
    started_at, = stack.sqlite("SELECT max(started_at) FROM processor_passes")[0]
    database_now, = stack.sqlite("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
    assert started_at - database_now > 3_000 * 1_000_000, (started_at, database_now)


def test_a_processor_an_hour_ahead_claims_nothing_due_later_by_the_database(stack):
    """A withdrawal due in 30 minutes by the database's clock, and a processor whose clock
    is an hour ahead: it is not claimed, not debited, and the bank never hears of it."""
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 2_500, scheduled_for=h.future(30 * 60))
    result = run_pass(stack, shifted("+1h"))
    assert pass_summary(result)["claimed"] == 0, result.stderr[-4000:]
    row = db_tx(stack, tx["id"])
    assert row["status"] == "PENDING" and row["attempts"] == 0 and row["lease_owner"] is None, row
    assert stack.sqlite("SELECT balance, held FROM wallets WHERE uuid = ?", (w,)) == [(10_000, 0)]
    assert stack.bank_calls() == []


def test_a_processor_an_hour_ahead_does_not_take_over_a_live_lease(stack):
    """A processor on the true time is killed (SIGKILL) after the bank paid and before it
    recorded anything: its lease still runs for about 35 s by the database's clock. A
    processor whose clock is an hour ahead must leave that withdrawal alone: taking it over
    now is two processors on one withdrawal. Once the lease has really run out, a pass on
    the true time settles it with the bank's replayed answer: one payout."""
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 4_200)
    key = bank_key(stack, tx["id"])
    crashed = stack.run_processor(extra_env={**LEASE_ENV, "WALLET_FAULT_POINT": "after-bank-answer"})
    assert crashed.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got {crashed.returncode}\n{crashed.stderr}"
    held = db_tx(stack, tx["id"])
    assert held["status"] == "PROCESSING" and held["lease_owner"] is not None and held["bank_call_open"] == 1, held

    result = run_pass(stack, {**LEASE_ENV, **shifted("+1h")})
    assert pass_summary(result)["claimed"] == 0, result.stderr[-4000:]
    database_now, = stack.sqlite("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
    assert held["lease_until"] > database_now, "the lease ran out before the check: the check proves nothing"
    assert db_tx(stack, tx["id"]) == held, "the lease was taken over while its holder's lease still ran"
    assert [c.answer for c in stack.bank_calls() if c.idempotency_key == key] == ["paid"]
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "4200")]


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_processor_whose_clock_is_off_pays_a_due_withdrawal_once(stack, offset):
    """A withdrawal due now by the database's clock is claimed and paid by a processor
    whose clock is an hour ahead or behind: behind, it must still see the withdrawal as
    due; ahead, its check that the call ends before the lease does must not compare its
    own wall clock with the database's lease (which would find every lease an hour gone
    and send nothing)."""
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 3_000)
    key = bank_key(stack, tx["id"])
    result = run_pass(stack, shifted(offset))
    summary = pass_summary(result)
    assert summary["claimed"] == 1 and summary["completed"] == 1, result.stderr[-4000:]
    row = db_tx(stack, tx["id"])
    assert row["status"] == "COMPLETED" and row["attempts"] == 1 and row["lease_owner"] is None, row
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "3000")]
    # The times the processor wrote are the database's, not its own.
    executed_at, = stack.sqlite("SELECT executed_at FROM transactions WHERE id = ?", (tx["id"],))[0]
    database_now, = stack.sqlite("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
    assert 0 <= database_now - executed_at < 600 * 1_000_000, (executed_at, database_now)


# --- the notifier --------------------------------------------------------------------------

def test_a_notifier_an_hour_ahead_sends_no_delivery_before_its_retry_is_due(stack, receivers):
    """A receiver answers 503: the delivery is due again 5 to 15 minutes later by the
    database's clock (a 600 s retry base with jitter). A notifier whose clock is an hour
    ahead must not send it again before then."""
    down = receivers(lambda event_id, attempt: 503)
    subscribe(stack, down)
    h.create_wallet(stack)
    env = {"WALLET_WEBHOOK_RETRY_BASE_SECONDS": "600"}
    assert stack.run_notifier(extra_env=env).returncode == 0
    (attempts, next_at), = stack.sqlite("SELECT attempts, next_attempt_at FROM webhook_deliveries")
    database_now, = stack.sqlite("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
    assert attempts == 1 and next_at - database_now > 240 * 1_000_000, (attempts, next_at, database_now)

    result = stack.run_notifier(extra_env={**env, **shifted("+1h")})
    assert result.returncode == 0, result.stderr[-4000:]
    assert stack.sqlite("SELECT attempts FROM webhook_deliveries") == [(1,)], result.stderr[-4000:]
    assert sum(down.attempts.values()) == 1


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_notifier_whose_clock_is_off_delivers_what_is_due(stack, receivers, offset):
    """A delivery due now by the database's clock goes out from a notifier an hour ahead
    or behind: its check that the call ends before the lease does uses its own monotonic
    clock, never its wall clock against the database's lease. (The signature's timestamp
    is the notifier's own clock, which receivers hold to 5 minutes: why the hosts are
    still kept in NTP sync.)"""
    receiver = receivers()
    subscribe(stack, receiver)
    wallet = h.create_wallet(stack)["uuid"]
    result = stack.run_notifier(extra_env=shifted(offset))
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(receiver.delivered_ids()) == 1, result.stderr[-4000:]
    rows = stack.sqlite("SELECT state, created_at, finished_at FROM webhook_deliveries")
    database_now, = stack.sqlite("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
    assert [state for state, _, _ in rows] == ["delivered"], (wallet, rows)
    # The times the notifier wrote are the database's, not its own.
    for _, created_at, finished_at in rows:
        assert 0 <= database_now - created_at < 600 * 1_000_000 and 0 <= database_now - finished_at < 600 * 1_000_000, rows
