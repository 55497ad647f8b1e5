"""The withdrawal processor (README, "Withdrawals"; openapi.yaml), through the real parts:
withdrawals scheduled through nginx and the responder, `wallet-processor` run as a process
against the stack's database, the mock bank CGI behind fcgiwrap. Each test asserts on the
API's answers, the database, and the bank's `ledger` (payouts) and `calls` files.

The bank's idempotency key of a withdrawal is random and stored in its row (`bank_key`).
Retries use WALLET_RETRY_BASE_SECONDS=0, so a retry is due at once, but one pass still
calls the bank at most once per withdrawal: every test runs passes one by one and counts.
"""

import http.server
import json
import os
import signal
import threading
import time

import pytest

from . import helpers as h
from .conftest import free_port, wait_until

# Retries due at once; unknown outcomes rechecked at once (when a test wants it).
FAST_RETRIES = {"WALLET_RETRY_BASE_SECONDS": "0"}
MAX_ATTEMPTS = 1 + 3   # the first attempt and WALLET_MAX_RETRIES (3) retries


# --- Helpers ---------------------------------------------------------------------------

def bank_key(stack, tid):
    """The withdrawal's bank key: random, stored with it when it was scheduled."""
    rows = stack.sqlite("SELECT bank_key FROM transactions WHERE id = ?", (tid,))
    assert rows and rows[0][0], f"withdrawal {tid} has no bank key"
    return rows[0][0]


def run_pass(stack, extra_env=None, expect_rc=0):
    """One processor pass; asserts its exit status and returns the CompletedProcess."""
    result = stack.run_processor(extra_env=extra_env)
    assert result.returncode == expect_rc, (
        f"wallet-processor exited {result.returncode}, expected {expect_rc}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}")
    return result


def get_tx(stack, wallet_uuid, tid):
    resp = stack.request("GET", f"/wallets/{wallet_uuid}/transactions/{tid}/")
    return h.assert_transaction(h.assert_json_ok(resp, 200))


def db_tx(stack, tid):
    """The processor's columns of one transaction, straight from the database."""
    cols = ("status", "attempts", "failure_reason", "next_attempt_at", "lease_owner", "lease_until",
            "bank_call_open", "bank_may_have_paid", "executed_at")
    rows = stack.sqlite(f"SELECT {', '.join(cols)} FROM transactions WHERE id = ?", (tid,))
    assert rows, f"transaction {tid} is not in the database"
    return dict(zip(cols, rows[0]))


def wallet_row(stack, wallet_uuid):
    balance, held = stack.sqlite("SELECT balance, held FROM wallets WHERE uuid = ?", (wallet_uuid,))[0]
    return {"balance": balance, "held": held}


def ledger_rows(stack, tid):
    """[(kind, delta)] of the wallet ledger rows of one transaction, in order."""
    column = h.ledger_amount_column(stack)
    return stack.sqlite(f"SELECT kind, {column} FROM ledger WHERE transaction_id = ? ORDER BY id", (tid,))


def calls_for(stack, key):
    return [c.answer for c in stack.bank_calls() if c.idempotency_key == key]


def payouts_for(stack, key):
    return [row for row in stack.bank_ledger() if row.idempotency_key == key]


def assert_audit_ok(stack):
    result = stack.walletctl("audit", "verify")
    assert result.returncode == 0, f"audit verify failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


def assert_balances_match_ledger(stack):
    for wallet_uuid, (balance, ledger_sum) in h.ledger_sums(stack).items():
        assert balance == ledger_sum, f"{wallet_uuid}: balance {balance} != ledger sum {ledger_sum}"
        assert balance >= 0


def funded_wallet(stack, amount):
    w = h.create_wallet(stack)["uuid"]
    if amount:
        h.deposit(stack, w, amount)
    return w


def log_events(text, event):
    return [d for d in h.json_log_lines(text) if d.get("event") == event]


# --- Success and funds ---------------------------------------------------------------------

def test_due_withdrawal_is_paid_once(stack):
    """A due withdrawal with funds: the pass debits the balance, the bank pays it once under
    the withdrawal's key, and it ends COMPLETED with executed_at set, attempts 1, one DEBIT."""
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 3_000)
    assert tx["status"] == "PENDING"
    key = bank_key(stack, tx["id"])

    run_pass(stack)

    done = get_tx(stack, w, tx["id"])
    h.assert_transaction(done, status="COMPLETED", attempts=1, failure_reason=None, amount=3_000, type="WITHDRAWAL")
    assert done["executed_at"] is not None
    assert h.parse_rfc3339(done["executed_at"]) >= h.parse_rfc3339(done["created_at"])
    assert h.get_wallet(stack, w)["balance"] == 7_000
    assert wallet_row(stack, w) == {"balance": 7_000, "held": 0}

    payouts = stack.bank_ledger()
    assert len(payouts) == 1, payouts
    assert payouts[0].idempotency_key == key
    assert payouts[0].wallet == w
    assert payouts[0].amount == "3000"
    assert calls_for(stack, key) == ["paid"]
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -3_000)]
    assert db_tx(stack, tx["id"])["lease_owner"] is None

    # A second pass finds nothing to do.
    run_pass(stack)
    assert len(stack.bank_calls()) == 1
    assert get_tx(stack, w, tx["id"])["status"] == "COMPLETED"
    assert_balances_match_ledger(stack)
    assert_audit_ok(stack)


def test_insufficient_funds_fails_without_calling_the_bank(stack):
    """Not enough money when due: FAILED / insufficient_funds, balance untouched, no ledger
    row, and the bank never hears of the key."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 1_001)
    key = bank_key(stack, tx["id"])

    run_pass(stack)

    failed = get_tx(stack, w, tx["id"])
    h.assert_transaction(failed, status="FAILED", failure_reason="insufficient_funds", executed_at=None)
    assert wallet_row(stack, w) == {"balance": 1_000, "held": 0}
    assert ledger_rows(stack, tx["id"]) == []
    assert calls_for(stack, key) == []
    assert stack.bank_ledger() == []
    assert_audit_ok(stack)


def test_balance_is_checked_when_due_not_when_scheduled(stack):
    """Scheduling never checks the balance: a withdrawal larger than the balance is
    accepted, and a deposit made before it is due lets it complete."""
    w = funded_wallet(stack, 100)
    tx = h.withdraw(stack, w, 5_000)
    assert tx["status"] == "PENDING"
    h.deposit(stack, w, 4_900)

    run_pass(stack)

    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED", attempts=1)
    assert wallet_row(stack, w) == {"balance": 0, "held": 0}
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(bank_key(stack, tx["id"]), "5000")]
    assert_audit_ok(stack)


def test_future_withdrawal_waits_for_its_time(stack):
    """A withdrawal scheduled for later is left PENDING (and the balance untouched) by a pass
    before its time, and completed by a pass after it."""
    w = funded_wallet(stack, 1_000)
    when = h.utc_now() + h.dt.timedelta(seconds=3)
    tx = h.withdraw(stack, w, 400, scheduled_for=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    run_pass(stack)
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="PENDING", attempts=0)
    assert wallet_row(stack, w) == {"balance": 1_000, "held": 0}
    assert stack.bank_calls() == []

    wait_until(lambda: h.utc_now() > when + h.dt.timedelta(milliseconds=100), timeout=10, message="the scheduled time")
    run_pass(stack)
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED", attempts=1)
    assert wallet_row(stack, w) == {"balance": 600, "held": 0}
    assert len(stack.bank_ledger()) == 1
    assert_audit_ok(stack)


def test_canceled_withdrawal_is_never_processed(stack):
    """A withdrawal canceled while PENDING is left alone by the processor: no debit, no bank
    call. One that is already PROCESSING (held between retries) can no longer be canceled."""
    w = funded_wallet(stack, 1_000)
    gone = h.withdraw(stack, w, 100)
    assert stack.request("POST", f"/wallets/{w}/transactions/{gone['id']}/cancel").status == 200
    stack.set_bank_mode("fail")
    busy = h.withdraw(stack, w, 200)

    run_pass(stack, FAST_RETRIES)
    h.assert_transaction(get_tx(stack, w, gone["id"]), status="CANCELED", attempts=0)
    assert calls_for(stack, bank_key(stack, gone["id"])) == []
    assert ledger_rows(stack, gone["id"]) == []
    h.assert_transaction(get_tx(stack, w, busy["id"]), status="PROCESSING", attempts=1)
    resp = stack.request("POST", f"/wallets/{w}/transactions/{busy['id']}/cancel")
    h.assert_error(resp, 409, h.NOT_CANCELABLE)
    assert wallet_row(stack, w) == {"balance": 800, "held": 200}
    assert_audit_ok(stack)


# --- Retries ---------------------------------------------------------------------------------

def test_bank_always_fails_then_failed_and_refunded(stack):
    """The bank answers `failed` every time: 1 + 3 attempts with one key, one per pass, the
    funds held meanwhile; after the last one FAILED / bank_rejected, attempts 4, refunded
    (a REFUND ledger row), nothing paid."""
    stack.set_bank_mode("fail")
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 2_500)
    key = bank_key(stack, tx["id"])

    for attempt in range(1, MAX_ATTEMPTS):
        run_pass(stack, FAST_RETRIES)
        assert calls_for(stack, key) == ["failed"] * attempt, "one pass calls the bank at most once per withdrawal"
        now = get_tx(stack, w, tx["id"])
        h.assert_transaction(now, status="PROCESSING", attempts=attempt)
        assert now["failure_reason"] in (None,), now
        assert wallet_row(stack, w) == {"balance": 7_500, "held": 2_500}

    run_pass(stack, FAST_RETRIES)
    assert calls_for(stack, key) == ["failed"] * MAX_ATTEMPTS
    assert {c.idempotency_key for c in stack.bank_calls()} == {key}
    failed = get_tx(stack, w, tx["id"])
    h.assert_transaction(failed, status="FAILED", failure_reason="bank_rejected", attempts=MAX_ATTEMPTS, executed_at=None)
    assert wallet_row(stack, w) == {"balance": 10_000, "held": 0}
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -2_500), ("REFUND", 2_500)]
    assert stack.bank_ledger() == []

    # Final: no further pass touches it.
    run_pass(stack, FAST_RETRIES)
    assert len(stack.bank_calls()) == MAX_ATTEMPTS
    assert_audit_ok(stack)


def test_no_retries_when_max_retries_is_zero(stack):
    """WALLET_MAX_RETRIES=0: the first `failed` answer is final: FAILED / bank_rejected after
    one attempt, refunded."""
    stack.set_bank_mode("fail")
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 400)
    run_pass(stack, {**FAST_RETRIES, "WALLET_MAX_RETRIES": "0"})
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="FAILED", failure_reason="bank_rejected", attempts=1)
    assert wallet_row(stack, w) == {"balance": 1_000, "held": 0}
    assert calls_for(stack, bank_key(stack, tx["id"])) == ["failed"]
    assert_audit_ok(stack)


def test_bank_fails_twice_then_pays(stack):
    """`fail-first 2`: two failed attempts, then the third pays: COMPLETED after 3 attempts,
    exactly one payout, no refund."""
    stack.set_bank_mode("fail-first 2")
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 1_234)
    key = bank_key(stack, tx["id"])

    for expected_calls in (["failed"], ["failed", "failed"]):
        run_pass(stack, FAST_RETRIES)
        assert calls_for(stack, key) == expected_calls
        h.assert_transaction(get_tx(stack, w, tx["id"]), status="PROCESSING")
    run_pass(stack, FAST_RETRIES)

    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED", attempts=3, failure_reason=None)
    assert calls_for(stack, key) == ["failed", "failed", "paid"]
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "1234")]
    assert wallet_row(stack, w) == {"balance": 10_000 - 1_234, "held": 0}
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -1_234)]
    run_pass(stack, FAST_RETRIES)
    assert len(stack.bank_calls()) == 3
    assert_audit_ok(stack)


def _assert_held_unknown(stack, w, tid, amount, balance, attempts):
    now = get_tx(stack, w, tid)
    h.assert_transaction(now, status="PROCESSING", failure_reason="bank_outcome_unknown", attempts=attempts,
                         executed_at=None)
    assert wallet_row(stack, w) == {"balance": balance, "held": amount}
    assert ledger_rows(stack, tid) == [("DEBIT", -amount)], "money that may have left was refunded"


def test_slow_bank_outcome_unknown_is_held_then_settled_by_replay(stack):
    """Every attempt times out after the request was sent (`slow 3000`, client timeout
    500 ms): the outcome is unknown, so after 1 + 3 attempts the withdrawal stays
    PROCESSING / bank_outcome_unknown with its funds held, and it is never refunded, not
    even by further passes. The slow bank did pay in the background; once it answers
    (`success`), the next recheck gets the replayed success: COMPLETED, one payout."""
    stack.set_bank_mode("slow 3000")
    env = {**FAST_RETRIES, "WALLET_BANK_TIMEOUT_MS": "500", "WALLET_UNKNOWN_RECHECK_SECONDS": "0"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 700)
    key = bank_key(stack, tx["id"])

    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        run_pass(stack, env)
        assert time.monotonic() - started < 2.5, "the pass did not give up on the slow bank after its timeout"
        assert db_tx(stack, tx["id"])["attempts"] == attempt
        assert get_tx(stack, w, tx["id"])["status"] == "PROCESSING"
    _assert_held_unknown(stack, w, tx["id"], 700, 9_300, MAX_ATTEMPTS)
    assert db_tx(stack, tx["id"])["bank_may_have_paid"] == 1

    # Past the last retry an unknown outcome is only ever asked again, never failed.
    run_pass(stack, env)
    _assert_held_unknown(stack, w, tx["id"], 700, 9_300, MAX_ATTEMPTS + 1)

    # Let every slow call the bank received finish (each logs its call when it decides).
    wait_until(lambda: len(calls_for(stack, key)) >= MAX_ATTEMPTS + 1, timeout=10,
               message="the slow bank calls to finish")
    stack.set_bank_mode("success")
    run_pass(stack, env)

    done = get_tx(stack, w, tx["id"])
    h.assert_transaction(done, status="COMPLETED", failure_reason=None, attempts=MAX_ATTEMPTS + 2)
    assert done["executed_at"] is not None
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "700")], "paid exactly once"
    answers = calls_for(stack, key)
    assert answers.count("paid") == 1 and answers[-1] == "replayed", answers
    assert wallet_row(stack, w) == {"balance": 9_300, "held": 0}
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -700)]
    assert_audit_ok(stack)


def test_http_500_outcome_unknown_is_held_then_settled(stack):
    """HTTP 500 without the failed body on every attempt: unknown each time, so after
    1 + 3 attempts PROCESSING / bank_outcome_unknown, funds held, no refund; when the bank
    works again the recheck is paid: COMPLETED, exactly one payout."""
    stack.set_bank_mode("http500")
    env = {**FAST_RETRIES, "WALLET_UNKNOWN_RECHECK_SECONDS": "0"}
    w = funded_wallet(stack, 5_000)
    tx = h.withdraw(stack, w, 5_000)
    key = bank_key(stack, tx["id"])

    for attempt in range(1, MAX_ATTEMPTS + 1):
        run_pass(stack, env)
        assert calls_for(stack, key) == ["http500"] * attempt
    _assert_held_unknown(stack, w, tx["id"], 5_000, 0, MAX_ATTEMPTS)
    run_pass(stack, env)
    _assert_held_unknown(stack, w, tx["id"], 5_000, 0, MAX_ATTEMPTS + 1)
    assert stack.bank_ledger() == []

    stack.set_bank_mode("success")
    run_pass(stack, env)
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED", failure_reason=None)
    assert calls_for(stack, key) == ["http500"] * (MAX_ATTEMPTS + 1) + ["paid"]
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "5000")]
    assert wallet_row(stack, w) == {"balance": 0, "held": 0}
    assert_audit_ok(stack)


def test_unknown_outcome_waits_for_the_recheck_interval(stack):
    """With the default recheck interval (600 s, plus up to a quarter more as jitter), a
    withdrawal whose last attempt was unknown is not asked again by the next pass."""
    stack.set_bank_mode("http500")
    w = funded_wallet(stack, 5_000)
    tx = h.withdraw(stack, w, 100)
    for _ in range(MAX_ATTEMPTS):
        run_pass(stack, FAST_RETRIES)
    _assert_held_unknown(stack, w, tx["id"], 100, 4_900, MAX_ATTEMPTS)
    stack.set_bank_mode("success")
    run_pass(stack, FAST_RETRIES)
    _assert_held_unknown(stack, w, tx["id"], 100, 4_900, MAX_ATTEMPTS)
    assert len(stack.bank_calls()) == MAX_ATTEMPTS
    wait_s = db_tx(stack, tx["id"])["next_attempt_at"] / 1e6 - time.time()
    assert 590 < wait_s <= 750, f"the recheck is due in {wait_s:.1f} s, not in 600 to 750 s"


def test_connection_refused_fails_as_unreachable_and_refunds(stack):
    """Nothing listens at the bank URL: no request was ever sent, so after 1 + 3 attempts
    the withdrawal is FAILED / bank_unreachable and the amount is credited back."""
    env = {**FAST_RETRIES, "WALLET_BANK_URL": f"http://127.0.0.1:{free_port()}/pay"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 900)

    for attempt in range(1, MAX_ATTEMPTS):
        run_pass(stack, env)
        h.assert_transaction(get_tx(stack, w, tx["id"]), status="PROCESSING", attempts=attempt)
        assert wallet_row(stack, w) == {"balance": 9_100, "held": 900}
    run_pass(stack, env)

    h.assert_transaction(get_tx(stack, w, tx["id"]), status="FAILED", failure_reason="bank_unreachable",
                         attempts=MAX_ATTEMPTS)
    assert wallet_row(stack, w) == {"balance": 10_000, "held": 0}
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -900), ("REFUND", 900)]
    assert stack.bank_calls() == [] and stack.bank_ledger() == []
    assert_audit_ok(stack)


def test_unknown_then_refused_is_never_refunded(stack):
    """Once an attempt was unknown, a refused connection settles nothing: first attempt
    HTTP 500, then the bank unreachable for the rest: PROCESSING / bank_outcome_unknown,
    funds held, not refunded. When the bank answers again, it completes."""
    stack.set_bank_mode("http500")
    refused = {**FAST_RETRIES, "WALLET_UNKNOWN_RECHECK_SECONDS": "0",
               "WALLET_BANK_URL": f"http://127.0.0.1:{free_port()}/pay"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 2_000)
    key = bank_key(stack, tx["id"])

    run_pass(stack, FAST_RETRIES)
    assert calls_for(stack, key) == ["http500"]
    for _ in range(MAX_ATTEMPTS - 1):
        run_pass(stack, refused)
    _assert_held_unknown(stack, w, tx["id"], 2_000, 8_000, MAX_ATTEMPTS)
    run_pass(stack, refused)
    _assert_held_unknown(stack, w, tx["id"], 2_000, 8_000, MAX_ATTEMPTS + 1)
    assert calls_for(stack, key) == ["http500"], "the refused attempts reached the bank?"

    stack.set_bank_mode("success")
    run_pass(stack, {**FAST_RETRIES, "WALLET_UNKNOWN_RECHECK_SECONDS": "0"})
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED")
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "2000")]
    assert wallet_row(stack, w) == {"balance": 8_000, "held": 0}
    assert_audit_ok(stack)


@pytest.mark.parametrize("path,final", [
    ("/static", "unknown"),     # HTTP 200 with a body that is not the bank's: may have paid
    ("/no-such-path", "refused"),   # HTTP 404 before any doubt: this request was not paid
])
def test_bank_answers_other_than_success_or_failed(stack, path, final):
    """An HTTP 200 whose body is not the success body is an unknown outcome (held, never
    refunded); an HTTP 4xx other than 409/425/429 is not paid (FAILED / bank_rejected,
    refunded), each after 1 + 3 attempts."""
    env = {**FAST_RETRIES, "WALLET_BANK_URL": f"http://127.0.0.1:{stack.bank_port}{path}"}
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 250)
    for _ in range(MAX_ATTEMPTS):
        run_pass(stack, env)
    if final == "unknown":
        _assert_held_unknown(stack, w, tx["id"], 250, 750, MAX_ATTEMPTS)
    else:
        h.assert_transaction(get_tx(stack, w, tx["id"]), status="FAILED", failure_reason="bank_rejected",
                             attempts=MAX_ATTEMPTS)
        assert wallet_row(stack, w) == {"balance": 1_000, "held": 0}
        assert ledger_rows(stack, tx["id"]) == [("DEBIT", -250), ("REFUND", 250)]
    assert_audit_ok(stack)


def test_bare_404_after_an_unknown_attempt_is_never_refunded(stack):
    """Once an attempt was unknown, only the bank's own word settles the withdrawal: a bare
    HTTP 404 (a wrong path, a proxy) on every later attempt and recheck is just another try.
    The funds stay held until the bank answers with its success body."""
    stack.set_bank_mode("http500")
    fast = {**FAST_RETRIES, "WALLET_UNKNOWN_RECHECK_SECONDS": "0"}
    not_found = {**fast, "WALLET_BANK_URL": f"http://127.0.0.1:{stack.bank_port}/no-such-path"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 2_500)

    run_pass(stack, fast)
    for _ in range(MAX_ATTEMPTS):
        run_pass(stack, not_found)
    _assert_held_unknown(stack, w, tx["id"], 2_500, 7_500, MAX_ATTEMPTS + 1)
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -2_500)]

    stack.set_bank_mode("success")
    run_pass(stack, fast)
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED")
    assert wallet_row(stack, w) == {"balance": 7_500, "held": 0}
    assert_audit_ok(stack)


def test_refused_after_an_unknown_attempt_never_refunds_even_after_an_in_progress_answer(stack):
    """The rules: once an attempt of a withdrawal has been unknown, a refused connection is
    neither paid nor not paid. Here the first call times out while the bank is still working
    on it (`slow 3000`), the second is answered 409 `in_progress` at once (the bank holds the
    key for the first; in mode `fail` it would otherwise have failed it), the last two find
    no bank: the withdrawal must stay PROCESSING / bank_outcome_unknown with its funds held,
    since the first call may (and here does) still pay."""
    stack.set_bank_mode("slow 3000")
    timeout = {**FAST_RETRIES, "WALLET_BANK_TIMEOUT_MS": "500", "WALLET_UNKNOWN_RECHECK_SECONDS": "0"}
    refused = {**timeout, "WALLET_BANK_URL": f"http://127.0.0.1:{free_port()}/pay"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 3_000)
    key = bank_key(stack, tx["id"])

    run_pass(stack, timeout)                 # unknown: the bank keeps working on it
    stack.set_bank_mode("fail")
    run_pass(stack, timeout)                 # 409 in_progress: the first call still holds the key
    assert calls_for(stack, key) == ["in_progress"]
    run_pass(stack, refused)
    run_pass(stack, refused)
    # The slow first call now pays.
    wait_until(lambda: payouts_for(stack, key), timeout=10, message="the slow call to pay")
    assert len(payouts_for(stack, key)) == 1

    _assert_held_unknown(stack, w, tx["id"], 3_000, 7_000, MAX_ATTEMPTS)
    stack.set_bank_mode("success")
    run_pass(stack, timeout)
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="COMPLETED")
    assert wallet_row(stack, w) == {"balance": 7_000, "held": 0}
    assert_audit_ok(stack)


@h.sqlite_only("a file backup put back in place of the database file")
def test_a_database_restored_from_a_backup_never_reuses_a_paid_bank_key(stack, tmp_path):
    """A backup taken before a withdrawal was scheduled is restored after the bank paid it.
    The next withdrawal gets the same transaction id again, but not the same bank key: the
    bank pays it as a new payout instead of replaying the old one's success."""
    w = funded_wallet(stack, 10_000)
    backup = tmp_path / "before.db"
    result = stack.walletctl("backup", backup)
    assert result.returncode == 0, result.stderr
    first = h.withdraw(stack, w, 1_000)
    run_pass(stack)
    h.assert_transaction(get_tx(stack, w, first["id"]), status="COMPLETED")
    paid_key = bank_key(stack, first["id"])

    # Restore: the service stopped, the backup put in place of the database.
    stack.kill_responder()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{stack.db_path}{suffix}")
        except FileNotFoundError:
            pass
    os.replace(backup, stack.db_path)
    stack.restart_responder()

    second = h.withdraw(stack, w, 2_500)
    assert second["id"] == first["id"], "the restored database hands out the same id again"
    assert bank_key(stack, second["id"]) != paid_key
    run_pass(stack)
    h.assert_transaction(get_tx(stack, w, second["id"]), status="COMPLETED")
    assert sorted((r.idempotency_key, r.amount) for r in stack.bank_ledger()) == sorted(
        [(paid_key, "1000"), (bank_key(stack, second["id"]), "2500")]), "the second withdrawal was never paid"


def test_an_attempt_whose_lease_ran_out_before_the_call_is_never_sent(stack):
    """A processor that stalls between its claim and the bank call (here a fault point
    sleeps 2.5 s; the lease is the 1 s call limit plus 1 s of grace) must not send: another
    processor may hold the withdrawal by then. The attempt counts as not sent: with no
    retries left the withdrawal fails as bank_unreachable, refunded, and the bank never
    saw a call."""
    env = {"WALLET_FAULT_POINT": "stall-after-claim", "WALLET_FAULT_STALL_MS": "2500",
           "WALLET_BANK_TIMEOUT_MS": "1000", "WALLET_LEASE_GRACE_SECONDS": "1", "WALLET_MAX_RETRIES": "0"}
    w = funded_wallet(stack, 5_000)
    tx = h.withdraw(stack, w, 1_200)
    result = run_pass(stack, env)
    assert any(e.get("fault_point") == "stall-after-claim" for e in log_events(result.stderr, "fault_injected"))
    h.assert_transaction(get_tx(stack, w, tx["id"]), status="FAILED", failure_reason="bank_unreachable", attempts=1)
    assert stack.bank_calls() == [], "a call went out after its lease ran out"
    assert wallet_row(stack, w) == {"balance": 5_000, "held": 0}
    assert_audit_ok(stack)


# --- Crash ---------------------------------------------------------------------------------

def test_crash_after_bank_answer_pays_once(stack):
    """The processor dies (SIGKILL) after the bank paid and before the outcome was recorded:
    the withdrawal is still PROCESSING with its call marked open. A pass while the dead
    processor's lease lasts leaves it alone; once the lease (bank timeout + grace) expired,
    the next pass asks the bank again with the same key, gets the replayed success and
    completes it: one payout in the bank's ledger."""
    lease_env = {"WALLET_BANK_TIMEOUT_MS": "500", "WALLET_LEASE_GRACE_SECONDS": "1"}
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 4_200)
    key = bank_key(stack, tx["id"])

    crashed = stack.run_processor(extra_env={**lease_env, "WALLET_FAULT_POINT": "after-bank-answer"})
    assert crashed.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got {crashed.returncode}\n{crashed.stderr}"
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "4200")], "the bank paid"
    row = db_tx(stack, tx["id"])
    assert row["status"] == "PROCESSING" and row["attempts"] == 1 and row["bank_call_open"] == 1, row
    assert row["lease_owner"] is not None
    assert wallet_row(stack, w) == {"balance": 5_800, "held": 4_200}

    # Before the lease expires: another pass does not touch it.
    run_pass(stack, lease_env)
    lease_until = db_tx(stack, tx["id"])["lease_until"]
    assert lease_until > time.time() * 1e6, "the lease ran out before the check: the check proves nothing"
    assert db_tx(stack, tx["id"]) == row
    assert calls_for(stack, key) == ["paid"]

    # After it expired: the replayed success settles it.
    wait_until(lambda: time.time() * 1e6 > lease_until + 100_000, timeout=10, message="the lease to expire")
    run_pass(stack, lease_env)
    done = get_tx(stack, w, tx["id"])
    h.assert_transaction(done, status="COMPLETED", attempts=2, failure_reason=None)
    assert calls_for(stack, key) == ["paid", "replayed"]
    assert [(r.idempotency_key, r.amount) for r in stack.bank_ledger()] == [(key, "4200")], "paid twice"
    assert wallet_row(stack, w) == {"balance": 5_800, "held": 0}
    assert ledger_rows(stack, tx["id"]) == [("DEBIT", -4_200)]
    assert_audit_ok(stack)


def test_crash_mid_call_then_refused_is_never_refunded(stack):
    """A processor died while its call was in flight (here: after the bank answered
    `failed`, before recording it): the bank may have paid, so refused connections on the
    remaining attempts settle nothing; the withdrawal stays PROCESSING /
    bank_outcome_unknown with its funds held."""
    lease_env = {**FAST_RETRIES, "WALLET_BANK_TIMEOUT_MS": "500", "WALLET_LEASE_GRACE_SECONDS": "1",
                 "WALLET_UNKNOWN_RECHECK_SECONDS": "0"}
    refused = {**lease_env, "WALLET_BANK_URL": f"http://127.0.0.1:{free_port()}/pay"}
    stack.set_bank_mode("fail")
    w = funded_wallet(stack, 10_000)
    tx = h.withdraw(stack, w, 600)

    crashed = stack.run_processor(extra_env={**lease_env, "WALLET_FAULT_POINT": "after-bank-answer"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    lease_until = db_tx(stack, tx["id"])["lease_until"]
    wait_until(lambda: time.time() * 1e6 > lease_until + 100_000, timeout=10, message="the lease to expire")
    for _ in range(MAX_ATTEMPTS - 1):
        run_pass(stack, refused)
    _assert_held_unknown(stack, w, tx["id"], 600, 9_400, MAX_ATTEMPTS)
    assert calls_for(stack, bank_key(stack, tx["id"])) == ["failed"]
    assert_audit_ok(stack)


# --- Configuration and logs ------------------------------------------------------------

def _error_lines(result):
    return [d for d in h.json_log_lines(result.stderr) if d.get("level") == "error"]


def test_processor_exits_nonzero_when_the_database_cannot_be_opened(stack):
    """WALLET_DB in a directory that does not exist, or naming a directory: the processor
    exits non-zero at once with an error line that says what is wrong, and touches nothing."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 10)

    missing = stack.base_dir / "no-such-dir" / "wallet.db"
    result = stack.run_processor(extra_env={"WALLET_DB": str(missing)})
    assert result.returncode != 0
    errors = _error_lines(result)
    assert errors, f"no JSON error line on stderr: {result.stderr!r}"
    assert any("no-such-dir" in json.dumps(d) for d in errors), errors
    assert not missing.parent.exists()

    result = stack.run_processor(extra_env={"WALLET_DB": str(stack.base_dir)})
    assert result.returncode != 0, result.stderr
    assert _error_lines(result), f"no JSON error line on stderr: {result.stderr!r}"

    assert get_tx(stack, w, tx["id"])["status"] == "PENDING"
    assert stack.bank_calls() == []


@pytest.mark.parametrize("name,value", [
    ("WALLET_MAX_RETRIES", "-1"),
    ("WALLET_BANK_URL", "ftp://x"),
    ("WALLET_RETRY_BASE_SECONDS", "ten"),
    ("WALLET_BANK_TIMEOUT_MS", "0"),
    ("WALLET_BANK_CONCURRENCY", "0"),
    ("WALLET_UNKNOWN_RECHECK_SECONDS", "-5"),
    ("WALLET_LEASE_GRACE_SECONDS", "0"),
])
def test_processor_exits_2_for_an_invalid_setting(stack, name, value):
    """An invalid setting: exit status 2, an error line naming the variable, nothing done."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 10)
    result = stack.run_processor(extra_env={name: value})
    assert result.returncode == 2, f"{name}={value}: exit {result.returncode}\n{result.stderr}"
    errors = _error_lines(result)
    assert any(name in json.dumps(d) for d in errors), f"no error line naming {name}: {result.stderr!r}"
    assert get_tx(stack, w, tx["id"])["status"] == "PENDING"
    assert stack.bank_calls() == []


def test_processor_logs_each_state_change_and_a_pass_summary(stack):
    """stderr carries one JSON `withdrawal` line per state change (claimed and debited,
    completed, failed, retried) and a last `pass` line with the counts and the duration."""
    rich = funded_wallet(stack, 1_000)
    poor = funded_wallet(stack, 5)
    paid = h.withdraw(stack, rich, 300)
    short = h.withdraw(stack, poor, 6)

    result = run_pass(stack, FAST_RETRIES)
    events = log_events(result.stderr, "withdrawal")
    by_id = {}
    for e in events:
        by_id.setdefault(e.get("withdrawal"), []).append(e.get("status"))
    assert by_id == {paid["id"]: ["PROCESSING", "COMPLETED"], short["id"]: ["FAILED"]}, events
    failed_line = next(e for e in events if e["withdrawal"] == short["id"])
    assert failed_line["failure_reason"] == "insufficient_funds" and failed_line["wallet"] == poor
    completed_line = [e for e in events if e["withdrawal"] == paid["id"]][-1]
    assert completed_line["wallet"] == rich and completed_line["amount"] == 300
    passes = log_events(result.stderr, "pass")
    assert len(passes) == 1, result.stderr
    summary = passes[0]
    assert {k: summary.get(k) for k in ("claimed", "completed", "failed", "retried")} == \
        {"claimed": 2, "completed": 1, "failed": 1, "retried": 0}, summary
    assert isinstance(summary.get("duration_ms"), (int, float)) and summary["duration_ms"] >= 0
    assert h.json_log_lines(result.stderr)[-1].get("event") == "pass", "the summary is not the last line"

    # A rejected attempt with retries left: one `withdrawal` line for the retry, which is
    # due after the backoff (default base 10 s, plus up to a quarter of jitter).
    stack.set_bank_mode("fail")
    retry = h.withdraw(stack, rich, 50)
    before = h.utc_now()
    result = run_pass(stack)
    events = log_events(result.stderr, "withdrawal")
    assert [(e["withdrawal"], e["status"]) for e in events] == [(retry["id"], "PROCESSING")] * 2, events
    assert events[-1].get("outcome") == "declined" and events[-1].get("next_attempt_at"), events[-1]
    delay = (h.parse_rfc3339(events[-1]["next_attempt_at"]) - before).total_seconds()
    assert 10 <= delay <= 12.5 + (h.utc_now() - before).total_seconds(), f"backoff {delay:.3f} s"
    summary = log_events(result.stderr, "pass")[0]
    assert {k: summary.get(k) for k in ("claimed", "completed", "failed", "retried")} == \
        {"claimed": 1, "completed": 0, "failed": 0, "retried": 1}, summary

    # An idle pass still says so.
    stack.set_bank_mode("success")
    result = run_pass(stack)   # the retry is not due for 10 s
    assert log_events(result.stderr, "withdrawal") == []
    summary = log_events(result.stderr, "pass")[0]
    assert summary["claimed"] == 0


# --- The bank's credential and URL --------------------------------------------------------

class ScriptedBank:
    """A bank on a free loopback port that records every request's Authorization header
    and answers each with the success body."""

    def __init__(self):
        self.authorizations = []
        bank = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                bank.authorizations.append(self.headers.get("Authorization"))
                body = b'{"data": "success", "status": 200}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pay"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted_bank():
    bank = ScriptedBank()
    yield bank
    bank.close()


TOKEN = "tok-" + "x7Q9" * 8


@pytest.mark.parametrize("source", ["setting", "credential"])
def test_processor_sends_the_bank_token_and_never_logs_it(stack, scripted_bank, tmp_path, source):
    """The token file's content (without its newline) goes out as `Authorization: Bearer`,
    from WALLET_BANK_TOKEN_FILE or from systemd's $CREDENTIALS_DIRECTORY/bank-token, and
    appears nowhere in the processor's output."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 250)
    if source == "setting":
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        env = {"WALLET_BANK_TOKEN_FILE": str(token_file)}
    else:
        (tmp_path / "bank-token").write_text(TOKEN + "\n")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    env["WALLET_BANK_URL"] = scripted_bank.url
    result = run_pass(stack, env)
    assert scripted_bank.authorizations == [f"Bearer {TOKEN}"]
    assert get_tx(stack, w, tx["id"])["status"] == "COMPLETED"
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN not in (stack.run_dir / "processor.log").read_text()


def test_processor_without_a_token_sends_no_authorization(stack, scripted_bank):
    w = funded_wallet(stack, 1_000)
    h.withdraw(stack, w, 250)
    run_pass(stack, {"WALLET_BANK_URL": scripted_bank.url})
    assert scripted_bank.authorizations == [None]


@pytest.mark.parametrize("content", ["", "\n", "two words\n", "x" * 4097, "ok\r\nX-Injected: 1\n"])
def test_processor_refuses_a_bad_token_file_before_any_call(stack, scripted_bank, tmp_path, content):
    """An empty, oversized or header-breaking token: exit 2, a message naming the file and
    not its content, no bank call, the withdrawal untouched."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 250)
    token_file = tmp_path / "token"
    token_file.write_text(content)
    result = stack.run_processor(extra_env={"WALLET_BANK_URL": scripted_bank.url,
                                            "WALLET_BANK_TOKEN_FILE": str(token_file)})
    assert result.returncode == 2, result.stderr
    messages = json.dumps(_error_lines(result))
    assert str(token_file) in messages, result.stderr
    if content.strip():
        assert content.strip()[:10] not in result.stdout + result.stderr
    assert scripted_bank.authorizations == []
    assert get_tx(stack, w, tx["id"])["status"] == "PENDING"


def test_processor_refuses_plain_http_off_this_machine(stack):
    """http:// to another host exits 2 before any call (203.0.113.1 is a documentation
    address: nothing answers there, and a pass that tried would time out, not exit 2)."""
    w = funded_wallet(stack, 1_000)
    tx = h.withdraw(stack, w, 250)
    result = stack.run_processor(extra_env={"WALLET_BANK_URL": "http://203.0.113.1/pay",
                                            "WALLET_BANK_TIMEOUT_MS": "600000"}, timeout=30)
    assert result.returncode == 2, result.stderr
    messages = json.dumps(_error_lines(result))
    assert "https://" in messages and "WALLET_BANK_ALLOW_HTTP" in messages, result.stderr
    assert db_tx(stack, tx["id"])["attempts"] == 0
    assert get_tx(stack, w, tx["id"])["status"] == "PENDING"


def test_processor_never_echoes_a_password_in_the_url(stack):
    """A URL with user:pass that is refused is shown without them."""
    result = stack.run_processor(extra_env={"WALLET_BANK_URL": "http://user:s3cret-pw@203.0.113.1/pay"})
    assert result.returncode == 2, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "user:" not in result.stdout + result.stderr
    assert "http://203.0.113.1/pay" in json.dumps(_error_lines(result))
    result = stack.run_processor(extra_env={"WALLET_BANK_URL": "https://user:s3cret-pw@bank example/pay"})
    assert result.returncode == 2, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
