"""The gauges the alerting rules (packaging/prometheus/wallet-alerts.yml) are written on,
read through GET /metrics while the service is driven into each alert's condition: a
processor pass recorded, a withdrawal held on an unknown bank outcome, the held amount,
a due withdrawal no pass has claimed yet. Each gauge is computed from the database when
/metrics is scraped."""

import time

from . import helpers as h

# One attempt and no retry: the first unknown outcome leaves the withdrawal
# PROCESSING / bank_outcome_unknown (rechecked only after WALLET_UNKNOWN_RECHECK_SECONDS).
NO_RETRIES = {"WALLET_MAX_RETRIES": "0"}

GAUGES = (
    "wallet_processor_last_pass_timestamp_seconds",
    "wallet_processor_last_pass_claimed",
    "wallet_processor_last_pass_completed",
    "wallet_processor_last_pass_failed",
    "wallet_processor_last_pass_retried",
    "wallet_withdrawals_outcome_unknown",
    "wallet_withdrawals_outcome_unknown_oldest_age_seconds",
    "wallet_held_minor_units",
    "wallet_withdrawals_due_unclaimed",
    "wallet_webhook_deliveries_failing",
    "wallet_webhook_deliveries_failed",
)


def gauges(stack):
    """{name: value} of the alert gauges, each present exactly once and unlabelled."""
    resp = stack.request("GET", "/metrics")
    assert resp.status == 200, resp
    samples = h.parse_prometheus(resp.body.decode())
    found = {}
    for name, labels, value in samples:
        if name in GAUGES:
            assert labels == {}, (name, labels)
            assert name not in found, f"{name} rendered twice"
            found[name] = value
    assert set(found) == set(GAUGES), f"missing: {set(GAUGES) - set(found)}"
    return found


def run_pass(stack, extra_env=None):
    result = stack.run_processor(extra_env=extra_env)
    assert result.returncode == 0, f"wallet-processor exited {result.returncode}\n{result.stderr[-4000:]}"


def funded_wallet(stack, amount):
    w = h.create_wallet(stack)["uuid"]
    h.deposit(stack, w, amount)
    return w


def test_quiet_service_reads_zero(stack):
    """Before any pass and with nothing in doubt every gauge is present and 0, so a rule
    never has to tell a missing series from a quiet one."""
    assert gauges(stack) == {name: 0 for name in GAUGES}


def test_pass_moves_the_timestamp_and_reports_its_counts(stack):
    """A pass that pays one withdrawal: the timestamp moves to about now and the last
    pass's counts say it claimed and completed one."""
    w = funded_wallet(stack, 1_000)
    h.withdraw(stack, w, 400)
    before = time.time()
    run_pass(stack)
    after = time.time()
    g = gauges(stack)
    assert int(before) - 1 <= g["wallet_processor_last_pass_timestamp_seconds"] <= after + 1, (before, g, after)
    assert g["wallet_processor_last_pass_claimed"] == 1
    assert g["wallet_processor_last_pass_completed"] == 1
    assert g["wallet_processor_last_pass_failed"] == 0
    assert g["wallet_processor_last_pass_retried"] == 0
    assert g["wallet_held_minor_units"] == 0, "a completed payout holds nothing"

    time.sleep(1.1)
    first = g["wallet_processor_last_pass_timestamp_seconds"]
    run_pass(stack)
    g = gauges(stack)
    assert g["wallet_processor_last_pass_timestamp_seconds"] > first
    assert g["wallet_processor_last_pass_claimed"] == 0, "the second pass found nothing due"


def test_due_then_unknown_outcome_is_held(stack):
    """A due withdrawal is counted until a pass claims it; the bank's HTTP 500 (no retry
    allowed) then leaves it PROCESSING / bank_outcome_unknown: counted as unknown, its
    amount held, its age growing from its debit (not its updated_at, which each recheck
    moves on)."""
    stack.set_bank_mode("http500")
    w = funded_wallet(stack, 5_000)
    tx = h.withdraw(stack, w, 1_234)
    h.withdraw(stack, w, 100, scheduled_for=h.future(3600))   # not due: never counted
    g = gauges(stack)
    assert g["wallet_withdrawals_due_unclaimed"] == 1
    assert g["wallet_withdrawals_outcome_unknown"] == 0
    assert g["wallet_held_minor_units"] == 0, "a PENDING withdrawal holds nothing yet"

    run_pass(stack, NO_RETRIES)
    status, reason = stack.sqlite("SELECT status, failure_reason FROM transactions WHERE id = ?", (tx["id"],))[0]
    assert (status, reason) == ("PROCESSING", "bank_outcome_unknown")
    g = gauges(stack)
    assert g["wallet_withdrawals_due_unclaimed"] == 0, "the unknown outcome waits for its recheck"
    assert g["wallet_withdrawals_outcome_unknown"] == 1
    assert g["wallet_held_minor_units"] == 1_234
    assert g["wallet_processor_last_pass_claimed"] == 1
    assert 0 <= g["wallet_withdrawals_outcome_unknown_oldest_age_seconds"] <= 5

    time.sleep(2.1)
    debited_at = stack.sqlite("SELECT created_at FROM ledger WHERE transaction_id = ? AND kind = 'DEBIT'", (tx["id"],))[0][0]
    age = gauges(stack)["wallet_withdrawals_outcome_unknown_oldest_age_seconds"]
    expected = time.time() - debited_at / 1_000_000
    assert age >= 2 and abs(age - expected) <= 2, (age, expected)
