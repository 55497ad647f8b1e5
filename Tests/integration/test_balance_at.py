"""GET /wallets/{uuid}/balance?at=: the balance and held funds at a time, from the ledger.

One wallet lives through a deposit, a withdrawal the bank pays (debited at its
claim, completed when the bank answers) and one the bank refuses (debited,
then refunded); the route is asked at the instants between those ledger rows,
taken from the database to the microsecond, and in several spellings of the
same instant.
"""

import datetime as dt

from . import helpers as h


def micros_to_rfc3339(micros, offset_minutes=0):
    """RFC 3339 with six fractional digits at the given UTC offset."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=micros)
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    text = moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


def balance_at(stack, wallet, at=None):
    query = "" if at is None else "?at=" + at.replace("+", "%2B")
    doc = h.assert_json_ok(stack.request("GET", f"/wallets/{wallet}/balance{query}"), 200)
    assert set(doc) == {"wallet", "at", "balance", "held"}, doc
    assert doc["wallet"] == wallet
    h.assert_utc_z(doc["at"])
    return doc


def ledger_time(stack, transaction, kind):
    return stack.sqlite("SELECT created_at FROM ledger WHERE transaction_id = ? AND kind = ?", (transaction, kind))[0][0]


def test_balance_at_instants_between_ledger_rows(stack):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    deposit = h.deposit(s, wallet, 10_000)["transaction"]["id"]
    paid = h.withdraw(s, wallet, 3_000)["id"]
    assert s.run_processor().returncode == 0
    s.set_bank_mode("fail")
    refused = h.withdraw(s, wallet, 2_000)["id"]
    result = s.run_processor(extra_env={"WALLET_MAX_RETRIES": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    h.assert_transaction(h.assert_json_ok(s.request("GET", f"/wallets/{wallet}/transactions/{refused}/"), 200),
                         status="FAILED", failure_reason="bank_rejected")

    t_deposit = ledger_time(s, deposit, "DEPOSIT")
    t_paid_debit = ledger_time(s, paid, "DEBIT")
    t_paid_done = s.sqlite("SELECT executed_at FROM transactions WHERE id = ?", (paid,))[0][0]
    t_refused_debit = ledger_time(s, refused, "DEBIT")
    t_refund = ledger_time(s, refused, "REFUND")
    assert t_deposit < t_paid_debit < t_paid_done <= t_refused_debit < t_refund

    expected = [
        (t_deposit - 1, 0, 0),                      # before the first row
        (t_deposit, 10_000, 0),                     # at the deposit: included
        (t_paid_debit - 1, 10_000, 0),
        (t_paid_debit, 7_000, 3_000),               # debited, with the bank
        (t_paid_done - 1, 7_000, 3_000),
        (t_paid_done, 7_000, 0),                    # paid: no longer held
        (t_refused_debit, 5_000, 2_000),
        (t_refund - 1, 5_000, 2_000),
        (t_refund, 7_000, 0),                       # refunded: back in the balance
    ]
    for micros, balance, held in expected:
        doc = balance_at(s, wallet, micros_to_rfc3339(micros))
        assert (doc["balance"], doc["held"]) == (balance, held), (micros, doc)
        assert h.parse_rfc3339(doc["at"]) == h.parse_rfc3339(micros_to_rfc3339(micros))

    # The same instant with an offset, answered in UTC.
    doc = balance_at(s, wallet, micros_to_rfc3339(t_paid_debit, offset_minutes=210))
    assert (doc["balance"], doc["held"], doc["at"]) == (7_000, 3_000, micros_to_rfc3339(t_paid_debit))
    doc = balance_at(s, wallet, micros_to_rfc3339(t_paid_debit, offset_minutes=-300))
    assert (doc["balance"], doc["held"]) == (7_000, 3_000)

    # Without `at`: now, which is the wallet's balance.
    now = balance_at(s, wallet)
    assert (now["balance"], now["held"]) == (h.get_wallet(s, wallet)["balance"], 0) == (7_000, 0)
    h.assert_utc_z(now["at"], near=h.utc_now())


def test_balance_at_while_a_withdrawal_is_with_the_bank(stack_factory):
    s = stack_factory(extra_env={"WALLET_MAX_RETRIES": "3", "WALLET_RETRY_BASE_SECONDS": "3600"})
    wallet = h.create_wallet(s)["uuid"]
    h.deposit(s, wallet, 5_000)
    s.set_bank_mode("http500")
    withdrawal = h.withdraw(s, wallet, 1_500)["id"]
    assert s.run_processor().returncode == 0
    assert s.sqlite("SELECT status FROM transactions WHERE id = ?", (withdrawal,))[0][0] == "PROCESSING"
    now = balance_at(s, wallet)
    assert (now["balance"], now["held"]) == (3_500, 1_500)
    before = balance_at(s, wallet, micros_to_rfc3339(ledger_time(s, withdrawal, "DEBIT") - 1))
    assert (before["balance"], before["held"]) == (5_000, 0)


def test_balance_at_errors(stack):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    for bad in ("", "yesterday", "2026-12-01T10:00:00", "2026-02-30T10:00:00Z", "2026-12-01 10:00:00Z", "1"):
        resp = s.request("GET", f"/wallets/{wallet}/balance?at={bad}".replace(" ", "%20"))
        h.assert_error(resp, 400, code="invalid_at", field="at")
    # The query is checked before the wallet is looked up.
    h.assert_error(s.request("GET", f"/wallets/{h.random_uuid()}/balance?at=nope"), 400, code="invalid_at")
    h.assert_error(s.request("GET", f"/wallets/{h.random_uuid()}/balance"), 404, code=h.NOT_FOUND)
    h.assert_error(s.request("GET", "/wallets/not-a-uuid/balance"), 404, code=h.NOT_FOUND)
    h.assert_error(s.request("POST", f"/wallets/{wallet}/balance"), 405, code=h.METHOD_NOT_ALLOWED)
    # Both spellings, and HEAD.
    assert balance_at(s, wallet)["balance"] == 0
    assert h.assert_json_ok(s.request("GET", f"/wallets/{wallet}/balance/"), 200)["balance"] == 0
    head = s.request("HEAD", f"/wallets/{wallet}/balance?at=2026-01-01T00:00:00Z")
    assert head.status == 200 and head.body == b""
