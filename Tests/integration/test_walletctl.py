"""walletctl, the admin CLI, against a real database made through the service.

One stack per module (`world`) holds two wallets with every kind of
transaction, made through nginx and a real processor pass against the mock
bank:

    wallet A  DEPOSIT 10000, DEPOSIT 5000             COMPLETED
              WITHDRAWAL 3000  (paid by the bank)     COMPLETED
              WITHDRAWAL 10^6  (more than the balance) FAILED insufficient_funds
              WITHDRAWAL 2000  (due in an hour)       PENDING
              WITHDRAWAL 1000  (canceled by the API)  CANCELED
    wallet B  DEPOSIT 7000                            COMPLETED
              WITHDRAWAL 4000  (the bank says failed twice:
                                WALLET_MAX_RETRIES=1, retry base 0 s)
                                                      FAILED bank_rejected, refunded

B's transactions are made before `t_mid`, A's after, for the time filters.
Every command is checked in its table and its --json form, the JSON against
the API's own view of the same objects. The tests that change the shared
database only add to it (a new PENDING withdrawal to cancel); the tampering
tests work on copies. The backup-under-load test has a stack of its own.

Exit codes (WalletCTL.swift): 0 all well, 1 discrepancies or a failed
operation, 64 usage errors (ArgumentParser).
"""

import datetime as dt
import json
import os
import sqlite3
import threading
import time
import types

import pytest

from . import conftest
from . import helpers as h
from .helpers import copy_database, ctl_json


# --- helpers ----------------------------------------------------------------------

def iso_micro(moment):
    """RFC 3339 UTC with microseconds (walletctl compares at that precision)."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ok(result, what=""):
    """Asserts a walletctl run exited 0; returns its stdout."""
    assert result.returncode == 0, (
        f"walletctl {what} exited {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}")
    return result.stdout


def parse_table(text):
    """Parses walletctl's plain-text table (columns padded to their widest
    cell, two spaces apart) into a list of dicts keyed by the header. Uses the
    header's column offsets, so empty cells are read as ''."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, f"no table in {text!r}"
    header = lines[0]
    names = header.split()
    starts = []
    position = 0
    for name in names:
        position = header.index(name, position)
        starts.append(position)
        position += len(name)
    rows = []
    for line in lines[1:]:
        cells = {}
        for i, name in enumerate(names):
            end = starts[i + 1] if i + 1 < len(names) else None
            cells[name] = line[starts[i]:end].strip()
        rows.append(cells)
    return rows


def api_transactions(stack, wallet, query=""):
    results, _ = h.list_all_transactions(stack, wallet, query=query)
    return results


def api_transaction(stack, wallet, tx_id):
    return h.assert_json_ok(stack.request("GET", f"/wallets/{wallet}/transactions/{tx_id}/"), 200)


def all_api_transactions(world):
    out = []
    for wallet in (world.a, world.b):
        out.extend(api_transactions(world.stack, wallet))
    return sorted(out, key=lambda t: t["id"], reverse=True)


def stored_bank_key(stack, tx_id):
    """The withdrawal's bank key, random and stored in its row when it was scheduled."""
    return stack.sqlite("SELECT bank_key FROM transactions WHERE id = ?", (tx_id,))[0][0]


# --- the shared world -----------------------------------------------------------------

def _make_world(stack):
    w = types.SimpleNamespace(stack=stack)
    w.t_before = h.utc_now()
    time.sleep(0.02)
    # Wallet B first: its withdrawal is rejected by the bank on both attempts.
    w.b = h.create_wallet(stack)["uuid"]
    w.b_deposit = h.deposit(stack, w.b, 7000)["transaction"]["id"]
    w.b_rejected = h.withdraw(stack, w.b, 4000)["id"]
    stack.set_bank_mode("fail")
    for _ in range(10):
        result = stack.run_processor()
        assert result.returncode == 0, result.stderr[-2000:]
        if api_transaction(stack, w.b, w.b_rejected)["status"] != "PROCESSING":
            break
    h.assert_transaction(api_transaction(stack, w.b, w.b_rejected), status="FAILED", failure_reason="bank_rejected",
                         attempts=2)
    time.sleep(0.05)
    w.t_mid = h.utc_now()
    time.sleep(0.05)
    # Wallet A: everything else.
    w.a = h.create_wallet(stack)["uuid"]
    w.a_deposits = [h.deposit(stack, w.a, amount)["transaction"]["id"] for amount in (10000, 5000)]
    stack.set_bank_mode("success")
    w.a_completed = h.withdraw(stack, w.a, 3000)["id"]
    w.a_insufficient = h.withdraw(stack, w.a, 1_000_000)["id"]
    w.a_pending = h.withdraw(stack, w.a, 2000, scheduled_for=h.future(3600))["id"]
    w.a_canceled = h.withdraw(stack, w.a, 1000, scheduled_for=h.future(3600))["id"]
    h.assert_json_ok(stack.request("POST", f"/wallets/{w.a}/transactions/{w.a_canceled}/cancel"), 200)
    result = stack.run_processor()
    assert result.returncode == 0, result.stderr[-2000:]
    time.sleep(0.02)
    w.t_after = h.utc_now()
    expected = {
        w.a_completed: ("COMPLETED", None), w.a_insufficient: ("FAILED", "insufficient_funds"),
        w.a_pending: ("PENDING", None), w.a_canceled: ("CANCELED", "canceled"),
    }
    for tx_id, (status, reason) in expected.items():
        h.assert_transaction(api_transaction(stack, w.a, tx_id), status=status, failure_reason=reason)
    h.assert_wallet(h.get_wallet(stack, w.a), balance=12000)
    h.assert_wallet(h.get_wallet(stack, w.b), balance=7000)
    w.completed_key = stored_bank_key(stack, w.a_completed)
    assert [row.idempotency_key for row in stack.bank_ledger()] == [w.completed_key], \
        "the mock bank's ledger should hold exactly the one paid withdrawal, under its stored bank key"
    return w


@pytest.fixture(scope="module")
def world(wallet_bin_dir):
    """One stack for the module, filled as the module docstring says. Stopped
    (and checked for leftovers) at the end; its directory is kept if setup
    failed."""
    stack = conftest.Stack(extra_env={"WALLET_MAX_RETRIES": "1", "WALLET_RETRY_BASE_SECONDS": "0"})
    stack.start()
    try:
        w = _make_world(stack)
    except BaseException:
        stack.stop(check=False)
        print(f"\nstack directory kept: {stack.base_dir}")
        raise
    yield w
    stack.stop()
    if os.environ.get("WALLET_KEEP_RUN_DIR") == "1":
        print(f"\nstack directory kept: {stack.base_dir}")
    else:
        stack.remove()


# --- wallets list | show ------------------------------------------------------------------

def test_wallets_list(world):
    s = world.stack
    api = [h.get_wallet(s, u) for u in (world.b, world.a)]     # creation order: B, then A
    doc = ctl_json(s, "wallets", "list")
    assert doc == api
    rows = parse_table(ok(s.walletctl("wallets", "list"), "wallets list"))
    assert [(r["UUID"], int(r["BALANCE"]), int(r["HELD"]), r["CREATED_AT"]) for r in rows] == \
        [(w["uuid"], w["balance"], 0, w["created_at"]) for w in api]
    assert ctl_json(s, "wallets", "list", "--limit", "1") == api[:1]


def test_wallets_show(world):
    s = world.stack
    for wallet in (world.a, world.b):
        doc = ctl_json(s, "wallets", "show", wallet)
        assert set(doc) == {"wallet", "held", "recent_transactions"}, doc
        assert doc["wallet"] == h.get_wallet(s, wallet)
        assert doc["held"] == 0
        recent = api_transactions(s, wallet)[:20]
        assert doc["recent_transactions"] == recent
        text = ok(s.walletctl("wallets", "show", wallet), "wallets show")
        head, _, table = text.partition("\n\n")
        fields = dict(line.split(None, 1) for line in head.splitlines())
        owner = str(s.sqlite("SELECT api_key_id FROM wallets WHERE uuid = ?", (wallet,))[0][0])
        assert fields == {"wallet": wallet, "balance": str(doc["wallet"]["balance"]), "held": "0", "api_key": owner,
                          "created": doc["wallet"]["created_at"], "updated": doc["wallet"]["updated_at"]}
        assert [int(r["ID"]) for r in parse_table(table)] == [t["id"] for t in recent]


def test_wallets_show_unknown_and_malformed(world):
    s = world.stack
    unknown = s.walletctl("wallets", "show", h.random_uuid())
    assert unknown.returncode == 1, unknown
    assert "no wallet" in unknown.stderr
    malformed = s.walletctl("wallets", "show", "not-a-uuid")
    assert malformed.returncode != 0, malformed
    assert "not-a-uuid" in malformed.stderr


# --- transactions list -----------------------------------------------------------------------

def test_transactions_list_all_matches_api(world):
    s = world.stack
    doc = ctl_json(s, "transactions", "list")
    assert doc == all_api_transactions(world)
    rows = parse_table(ok(s.walletctl("transactions", "list"), "transactions list"))
    by_id = {t["id"]: t for t in doc}
    assert [int(r["ID"]) for r in rows] == [t["id"] for t in doc]
    for r in rows:
        t = by_id[int(r["ID"])]
        assert (r["WALLET"], r["TYPE"], r["STATUS"], int(r["AMOUNT"]), int(r["ATTEMPTS"]), r["REASON"] or None,
                r["CREATED_AT"]) == \
            (t["wallet"], t["type"], t["status"], t["amount"], t["attempts"], t["failure_reason"], t["created_at"])


def test_transactions_list_by_wallet(world):
    s = world.stack
    for wallet in (world.a, world.b):
        assert ctl_json(s, "transactions", "list", "--wallet", wallet) == api_transactions(s, wallet)
    assert ctl_json(s, "transactions", "list", "--wallet", h.random_uuid()) == []


@pytest.mark.parametrize("status", ["COMPLETED", "FAILED", "PENDING", "CANCELED", "PROCESSING"])
def test_transactions_list_by_status(world, status):
    s = world.stack
    api = [t for t in all_api_transactions(world) if t["status"] == status]
    via_api_filter = sorted(api_transactions(s, world.a, f"status={status}") +
                            api_transactions(s, world.b, f"status={status}"), key=lambda t: -t["id"])
    assert via_api_filter == api
    assert ctl_json(s, "transactions", "list", "--status", status) == api
    # Case-insensitive, like the API's filter.
    assert ctl_json(s, "transactions", "list", "--status", status.lower()) == api
    if status != "PROCESSING":
        assert api, f"the world should have a {status} transaction"


def test_transactions_list_statuses_present(world):
    """The world has what the brief asks for: both kinds of FAILED."""
    failed = ctl_json(world.stack, "transactions", "list", "--status", "FAILED")
    assert {(t["id"], t["failure_reason"]) for t in failed} == \
        {(world.a_insufficient, "insufficient_funds"), (world.b_rejected, "bank_rejected")}


@pytest.mark.parametrize("tx_type", ["DEPOSIT", "WITHDRAWAL"])
def test_transactions_list_by_type(world, tx_type):
    s = world.stack
    api = [t for t in all_api_transactions(world) if t["type"] == tx_type]
    assert api
    assert ctl_json(s, "transactions", "list", "--type", tx_type) == api
    assert ctl_json(s, "transactions", "list", "--type", tx_type.lower()) == api
    assert ctl_json(s, "transactions", "list", "--wallet", world.a, "--type", tx_type) == \
        api_transactions(s, world.a, f"type={tx_type}")


def test_transactions_list_combined_filters_and_limit(world):
    s = world.stack
    doc = ctl_json(s, "transactions", "list", "--wallet", world.a, "--status", "failed", "--type", "withdrawal")
    assert [t["id"] for t in doc] == [world.a_insufficient]
    everything = all_api_transactions(world)
    assert ctl_json(s, "transactions", "list", "--limit", "2") == everything[:2]


def test_transactions_list_time_range(world):
    s = world.stack
    everything = all_api_transactions(world)
    b_ids = {t["id"] for t in api_transactions(s, world.b)}
    a_ids = {t["id"] for t in api_transactions(s, world.a)}
    since = ctl_json(s, "transactions", "list", "--since", iso_micro(world.t_mid))
    until = ctl_json(s, "transactions", "list", "--until", iso_micro(world.t_mid))
    assert {t["id"] for t in since} >= a_ids and not {t["id"] for t in since} & b_ids
    assert {t["id"] for t in until} == b_ids
    both = ctl_json(s, "transactions", "list", "--since", iso_micro(world.t_before), "--until", iso_micro(world.t_after))
    made_by_setup = [t for t in everything
                     if world.t_before <= h.parse_rfc3339(t["created_at"]) < world.t_after]
    assert len(made_by_setup) == 8
    assert both == made_by_setup
    # The same instant with another offset selects the same rows.
    tehran = dt.timezone(dt.timedelta(hours=3, minutes=30))
    shifted = world.t_mid.astimezone(tehran).strftime("%Y-%m-%dT%H:%M:%S.%f+03:30")
    assert ctl_json(s, "transactions", "list", "--until", shifted) == until
    # Half-open: --since T --until T is empty.
    assert ctl_json(s, "transactions", "list", "--since", iso_micro(world.t_mid), "--until", iso_micro(world.t_mid)) == []
    # The boundary itself: a transaction's own created_at is included by
    # --since and excluded by --until.
    first_a = min(a_ids)
    created = next(t["created_at"] for t in everything if t["id"] == first_a)
    assert first_a in {t["id"] for t in ctl_json(s, "transactions", "list", "--since", created)}
    assert first_a not in {t["id"] for t in ctl_json(s, "transactions", "list", "--until", created)}


@pytest.mark.parametrize("args", [
    ("--status", "DONE"),
    ("--type", "TRANSFER"),
    ("--since", "2026-02-15T15:00:00"),          # no offset
    ("--until", "yesterday"),
    ("--wallet", "not-a-uuid"),
    ("--limit", "many"),
])
def test_transactions_list_rejects_bad_filters(world, args):
    result = world.stack.walletctl("transactions", "list", *args)
    assert result.returncode == 64, result
    assert result.stdout == ""
    assert args[1] in result.stderr


# --- withdrawals cancel -------------------------------------------------------------------------

def test_withdrawals_cancel(world):
    s = world.stack
    before = h.get_wallet(s, world.a)["balance"]
    pending = h.withdraw(s, world.a, 700, scheduled_for=h.future(7200))["id"]
    doc = ctl_json(s, "withdrawals", "cancel", pending)
    api = api_transaction(s, world.a, pending)
    h.assert_transaction(api, status="CANCELED", failure_reason="canceled", amount=700)
    assert doc == api
    assert h.get_wallet(s, world.a)["balance"] == before
    # The API agrees it is final: canceling again there is a 409.
    h.assert_error(s.request("POST", f"/wallets/{world.a}/transactions/{pending}/cancel"), 409, code=h.NOT_CANCELABLE)
    # ... and so does walletctl, with the API's error in --json mode.
    again = s.walletctl("withdrawals", "cancel", pending, "--json")
    assert again.returncode == 1, again
    assert json.loads(again.stdout)["error"]["code"] == h.NOT_CANCELABLE
    assert "CANCELED" in again.stderr
    # The text form.
    other = h.withdraw(s, world.a, 800, scheduled_for=h.future(7200))["id"]
    assert f"withdrawal {other} canceled" in ok(s.walletctl("withdrawals", "cancel", other), "withdrawals cancel")
    h.assert_transaction(api_transaction(s, world.a, other), status="CANCELED")
    assert h.get_wallet(s, world.a)["balance"] == before
    # The audit still passes after walletctl's writes.
    assert ctl_json(s, "audit", "verify")["passed"] is True


@pytest.mark.parametrize("which", ["completed", "insufficient", "rejected", "canceled", "deposit"])
def test_withdrawals_cancel_of_a_non_pending_fails(world, which):
    s = world.stack
    wallet, tx_id = {
        "completed": (world.a, world.a_completed), "insufficient": (world.a, world.a_insufficient),
        "rejected": (world.b, world.b_rejected), "canceled": (world.a, world.a_canceled),
        "deposit": (world.a, world.a_deposits[0]),
    }[which]
    before_tx = api_transaction(s, wallet, tx_id)
    before_balance = h.get_wallet(s, wallet)["balance"]
    result = s.walletctl("withdrawals", "cancel", tx_id)
    assert result.returncode != 0, result
    assert result.stderr.strip(), "no message on stderr"
    assert api_transaction(s, wallet, tx_id) == before_tx
    assert h.get_wallet(s, wallet)["balance"] == before_balance


def test_withdrawals_cancel_unknown_id(world):
    result = world.stack.walletctl("withdrawals", "cancel", 987654321, "--json")
    assert result.returncode == 1, result
    assert json.loads(result.stdout)["error"]["code"] == h.NOT_FOUND


# --- audit verify ------------------------------------------------------------------------------

def test_audit_verify_passes(world):
    s = world.stack
    text = ok(s.walletctl("audit", "verify"), "audit verify")
    assert "audit passed" in text
    doc = ctl_json(s, "audit", "verify")
    ledger_rows = s.sqlite("SELECT COUNT(*) FROM ledger")[0][0]
    head_id, head = s.sqlite("SELECT id, hash FROM ledger ORDER BY id DESC LIMIT 1")[0]
    admin = s.sqlite("SELECT count(*) FROM admin_actions")[0]
    admin_head = s.sqlite("SELECT hash FROM admin_actions ORDER BY id DESC LIMIT 1")
    assert doc == {
        "passed": True,
        "ledger_rows": ledger_rows,
        "wallets": 2,
        "transactions": len(all_api_transactions(world)),
        "head_hash": head,
        "checkpoint": {"ledger_id": head_id, "hash": h.checkpoint_of(s.sqlite(h.LEDGER_ROW + " ORDER BY id"), head_id)},
        "anchors": [],
        "admin_actions": admin[0],
        "admin_head_hash": admin_head[0][0] if admin_head else "0" * 64,
        "discrepancies": [],
    }
    assert f"checked {ledger_rows} ledger rows" in text and head in text
    # Deposits 10000, 5000, 7000; the paid debit 3000; B's debit 4000 and its refund.
    assert ledger_rows >= 6


def tamper(world, tmp_path, name, statements):
    """A copy of the live database with the ledger's append-only triggers
    dropped and `statements` applied. Returns its path."""
    path = copy_database(world.stack, tmp_path / f"{name}.db")
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("DROP TRIGGER ledger_no_update")
        conn.execute("DROP TRIGGER ledger_no_delete")
        for sql, params in statements:
            cursor = conn.execute(sql, params)
            assert cursor.rowcount != 0, f"tampering statement changed nothing: {sql} {params}"
        conn.commit()
    finally:
        conn.close()
    return path


def audit_copy(world, path):
    """(text result, JSON document) of `audit verify --database PATH`; both must exit 1."""
    s = world.stack
    text = s.walletctl("audit", "verify", "--database", path)
    assert text.returncode == 1, f"audit verify passed a tampered database:\n{text.stdout}\n{text.stderr}"
    assert "audit FAILED" in text.stdout
    doc = ctl_json(s, "audit", "verify", "--database", path, expect_rc=1)
    assert doc["passed"] is False and doc["discrepancies"], doc
    for d in doc["discrepancies"]:
        assert set(d) == {"kind", "subject", "detail"}, d
        assert f"{d['kind']}: {d['subject']}: " in text.stdout, f"{d} not in the text report"
    return text, doc


def ledger_rows(world):
    return world.stack.sqlite(
        "SELECT l.id, w.uuid, l.transaction_id, l.kind, l.delta FROM ledger l JOIN wallets w ON w.id = l.wallet_id "
        "ORDER BY l.id")


def subjects(doc, kind=None):
    return {d["subject"] for d in doc["discrepancies"] if kind is None or d["kind"] == kind}


def test_audit_copy_without_triggers_still_passes(world, tmp_path):
    """The control for the tampering tests: copying and dropping the triggers alone is no discrepancy."""
    path = tamper(world, tmp_path, "control", [])
    assert ctl_json(world.stack, "audit", "verify", "--database", path)["passed"] is True


def test_audit_detects_a_changed_delta(world, tmp_path):
    rows = ledger_rows(world)
    row_id, wallet, tx_id, kind, delta = next(r for r in rows if r[3] == "DEPOSIT" and r[4] == 5000)
    path = tamper(world, tmp_path, "delta", [("UPDATE ledger SET delta = delta + 1 WHERE id = ?", (row_id,))])
    _, doc = audit_copy(world, path)
    assert f"ledger {row_id}" in subjects(doc, "broken_hash_chain"), doc
    assert f"ledger {row_id}" in subjects(doc, "balance_after_mismatch"), doc
    assert f"wallet {wallet}" in subjects(doc, "balance_mismatch"), doc
    assert f"transaction {tx_id}" in subjects(doc, "ledger_mismatch"), doc


def test_audit_detects_a_deleted_middle_row(world, tmp_path):
    """Ids may skip (on PostgreSQL a rolled-back transaction leaves its drawn id
    unused), so a removed row is found by its wallet's chain: the wallet's next row
    chained from it."""
    rows = ledger_rows(world)
    assert len(rows) >= 4
    followed = [r for i, r in enumerate(rows) if any(later[1] == r[1] for later in rows[i + 1:])]
    row_id, wallet, tx_id, _, _ = followed[len(followed) // 2]
    following = next(r[0] for r in rows if r[0] > row_id and r[1] == wallet)
    path = tamper(world, tmp_path, "delete", [("DELETE FROM ledger WHERE id = ?", (row_id,))])
    _, doc = audit_copy(world, path)
    assert "ledger_gap" not in [d["kind"] for d in doc["discrepancies"]], doc
    assert subjects(doc, "broken_hash_chain") == {f"ledger {following}"}, doc
    assert f"wallet {wallet}" in subjects(doc, "balance_mismatch"), doc
    assert f"transaction {tx_id}" in subjects(doc, "ledger_mismatch"), doc


def test_audit_detects_reordered_rows(world, tmp_path):
    """Swap the whole content (everything but the id, hash included) of two
    rows of different wallets: the ledger holds the same rows in another order."""
    rows = ledger_rows(world)
    first = rows[0]
    second = next(r for r in rows if r[1] != first[1])
    columns = "wallet_id, transaction_id, kind, delta, balance_after, created_at, hash"
    copy = copy_database(world.stack, tmp_path / "contents.db")
    conn = sqlite3.connect(str(copy))
    content = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {columns} FROM ledger WHERE id IN (?, ?)",
                                                 (first[0], second[0]))}
    conn.close()
    assignment = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
    path = tamper(world, tmp_path, "swap", [
        (f"UPDATE ledger SET {assignment} WHERE id = ?", (*content[second[0]], first[0])),
        (f"UPDATE ledger SET {assignment} WHERE id = ?", (*content[first[0]], second[0])),
    ])
    _, doc = audit_copy(world, path)
    broken = subjects(doc, "broken_hash_chain")
    assert {f"ledger {first[0]}", f"ledger {second[0]}"} <= broken, doc
    # Each wallet's running balance no longer adds up where the rows moved.
    assert f"ledger {first[0]}" in subjects(doc, "balance_after_mismatch") | broken


def test_audit_detects_a_changed_wallet_balance(world, tmp_path):
    path = tamper(world, tmp_path, "balance", [("UPDATE wallets SET balance = balance + 500 WHERE uuid = ?", (world.b,))])
    text, doc = audit_copy(world, path)
    assert [(d["kind"], d["subject"]) for d in doc["discrepancies"]] == [("balance_mismatch", f"wallet {world.b}")]
    assert "7500" in doc["discrepancies"][0]["detail"] and "7000" in doc["discrepancies"][0]["detail"]
    assert f"wallet {world.b}" in text.stdout


def test_audit_detects_a_changed_held_amount(world, tmp_path):
    path = tamper(world, tmp_path, "held", [("UPDATE wallets SET held = 100 WHERE uuid = ?", (world.a,))])
    _, doc = audit_copy(world, path)
    assert [(d["kind"], d["subject"]) for d in doc["discrepancies"]] == [("held_mismatch", f"wallet {world.a}")]


def test_audit_detects_a_changed_transaction_status(world, tmp_path):
    """A FAILED (refunded) withdrawal rewritten as COMPLETED: the ledger has a
    refund a completed withdrawal cannot have."""
    path = tamper(world, tmp_path, "status", [
        ("UPDATE transactions SET status = 'COMPLETED', failure_reason = NULL, next_attempt_at = NULL WHERE id = ?",
         (world.b_rejected,))])
    _, doc = audit_copy(world, path)
    assert f"transaction {world.b_rejected}" in subjects(doc, "ledger_mismatch"), doc


# --- reconcile -----------------------------------------------------------------------------------

def test_reconcile_passes(world):
    s = world.stack
    ledger = s.bank_dir / "ledger"
    text = ok(s.walletctl("reconcile", "--bank-ledger", ledger), "reconcile")
    assert "reconciliation passed" in text
    doc = ctl_json(s, "reconcile", "--bank-ledger", ledger)
    completed = [t for t in all_api_transactions(world) if t["type"] == "WITHDRAWAL" and t["status"] == "COMPLETED"]
    assert doc == {"passed": True, "completed_here": len(completed), "paid_by_bank": len(s.bank_ledger()),
                   "findings": []}


def crafted_reconcile(world, tmp_path, lines):
    path = tmp_path / "bank-ledger"
    path.write_text("".join(line + "\n" for line in lines))
    s = world.stack
    text = s.walletctl("reconcile", "--bank-ledger", path)
    assert text.returncode == 1, f"reconcile passed a crafted ledger:\n{text.stdout}\n{text.stderr}"
    assert "reconciliation FAILED" in text.stdout
    doc = ctl_json(s, "reconcile", "--bank-ledger", path, expect_rc=1)
    assert doc["passed"] is False
    findings = {(f["kind"], f["key"]) for f in doc["findings"]}
    for f in doc["findings"]:
        assert f"{f['kind']}: {f['key']}: " in text.stdout
    return findings, doc


def real_line(world):
    return (world.stack.bank_dir / "ledger").read_text().splitlines()[0]


def test_reconcile_completed_withdrawal_missing_at_bank(world, tmp_path):
    findings, doc = crafted_reconcile(world, tmp_path, [])
    assert findings == {("missing_at_bank", world.completed_key)}
    assert str(world.a_completed) in doc["findings"][0]["detail"]


def test_reconcile_bank_paid_a_key_we_do_not_show_completed(world, tmp_path):
    paid_at = real_line(world).split("\t")[0]
    rejected_key = stored_bank_key(world.stack, world.b_rejected)
    pending_key = stored_bank_key(world.stack, world.a_pending)
    unknown_key = f"{h.random_uuid()}:424242"
    findings, _ = crafted_reconcile(world, tmp_path, [
        real_line(world),
        "\t".join([paid_at, rejected_key, world.b, "4000", f"withdrawal-{world.b_rejected}"]),
        "\t".join([paid_at, pending_key, world.a, "2000", f"withdrawal-{world.a_pending}"]),
        "\t".join([paid_at, unknown_key, world.a, "1", "withdrawal-424242"]),
    ])
    assert findings == {("missing_here", rejected_key), ("missing_here", pending_key), ("missing_here", unknown_key)}


def test_reconcile_key_paid_twice(world, tmp_path):
    findings, doc = crafted_reconcile(world, tmp_path, [real_line(world), real_line(world)])
    assert findings == {("paid_twice", world.completed_key)}
    assert "2 times" in doc["findings"][0]["detail"]


def test_reconcile_amount_mismatch(world, tmp_path):
    fields = real_line(world).split("\t")
    fields[3] = str(int(fields[3]) + 1)
    findings, _ = crafted_reconcile(world, tmp_path, ["\t".join(fields)])
    assert findings == {("mismatch", world.completed_key)}


def test_reconcile_all_findings_at_once(world, tmp_path):
    paid_at = real_line(world).split("\t")[0]
    unknown_key = f"{world.a}:999999"
    findings, _ = crafted_reconcile(world, tmp_path, [
        "\t".join([paid_at, unknown_key, world.a, "5", "x"]),
        "\t".join([paid_at, unknown_key, world.a, "5", "x"]),
    ])
    assert findings == {("missing_at_bank", world.completed_key), ("missing_here", unknown_key),
                        ("paid_twice", unknown_key)}


def test_reconcile_bad_ledger_files(world, tmp_path):
    s = world.stack
    malformed = tmp_path / "malformed"
    malformed.write_text(real_line(world) + "\nthis is not a payout\n")
    result = s.walletctl("reconcile", "--bank-ledger", malformed)
    assert result.returncode != 0 and "line 2" in result.stderr, result
    missing = s.walletctl("reconcile", "--bank-ledger", tmp_path / "nope")
    assert missing.returncode != 0 and str(tmp_path / "nope") in missing.stderr, missing


# --- backup ---------------------------------------------------------------------------------------

def check_backup_copy(stack, path):
    """The copy opens, passes integrity_check and walletctl's audit; returns the audit JSON."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    return ctl_json(stack, "audit", "verify", "--database", path)


def test_backup(world, tmp_path):
    s = world.stack
    path = tmp_path / "copy.db"
    doc = ctl_json(s, "backup", path)
    assert doc == {"backup": str(path), "integrity": "ok"}
    audit = check_backup_copy(s, path)
    live = ctl_json(s, "audit", "verify")
    assert audit["passed"] is True
    assert (audit["ledger_rows"], audit["head_hash"], audit["transactions"]) == \
        (live["ledger_rows"], live["head_hash"], live["transactions"])
    # The copy holds the same data: walletctl reads it like the live one.
    assert ctl_json(s, "wallets", "list", "--database", path) == ctl_json(s, "wallets", "list")
    assert ctl_json(s, "transactions", "list", "--database", path) == ctl_json(s, "transactions", "list")
    # Nothing but the copy is left beside it (no -wal/-shm).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]
    # The text form.
    text = ok(s.walletctl("backup", tmp_path / "copy2.db"), "backup")
    assert "integrity ok" in text
    assert check_backup_copy(s, tmp_path / "copy2.db")["passed"] is True


def test_backup_never_overwrites(world, tmp_path):
    s = world.stack
    path = tmp_path / "existing.db"
    path.write_bytes(b"precious")
    result = s.walletctl("backup", path)
    assert result.returncode == 1, result
    assert "exists" in result.stderr
    assert path.read_bytes() == b"precious"


def test_backup_copy_is_private(world, tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "private.db"
        ok(world.stack.walletctl("backup", path), "backup")
    finally:
        os.umask(old)
    mode = path.stat().st_mode & 0o777
    assert mode & 0o077 == 0, f"backup copy has mode {mode:o}"


def test_backup_during_deposit_load(stack, tmp_path):
    """Threads deposit through nginx while walletctl takes backups (and runs
    the audit on the live database): every copy is one consistent snapshot."""
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(4)]
    stop = threading.Event()
    done = [0] * len(wallets)
    errors = []

    def depositor(i):
        client = h.Client(stack.url)
        try:
            while not stop.is_set():
                r = client.request("POST", f"/wallets/{wallets[i]}/deposit", body={"amount": 1 + i})
                if r.status != 200:
                    errors.append((r.status, r.body[:200]))
                    return
                done[i] += 1
        except Exception as e:     # reported below, not lost in the thread
            errors.append(repr(e))
        finally:
            client.close()

    threads = [threading.Thread(target=depositor, args=(i,), daemon=True) for i in range(len(wallets))]
    for t in threads:
        t.start()
    copies = []
    during = []         # deposits answered while each `walletctl backup` ran
    try:
        conftest.wait_until(lambda: sum(done) >= 50 or errors, 20, "the first deposits")
        for n in range(3):
            before = sum(done)
            path = tmp_path / f"under-load-{n}.db"
            result = stack.walletctl("backup", path)
            assert result.returncode == 0, result
            copies.append(path)
            during.append(sum(done) - before)
            live_audit = stack.walletctl("audit", "verify")
            assert live_audit.returncode == 0, f"audit of the live database under load:\n{live_audit.stdout}"
            conftest.wait_until(lambda: sum(done) > before + 20 or errors, 20, "more deposits")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    assert all(n > 0 for n in during), f"no deposit completed while a backup ran: {during}"
    counts = []
    for path in copies:
        audit = check_backup_copy(stack, path)
        assert audit["passed"] is True, audit
        counts.append(audit["ledger_rows"])
    # Deposits really ran across the backups: each copy is a later snapshot.
    assert counts == sorted(counts) and counts[0] < counts[-1], counts
    total = stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0]
    assert total == sum(done) and counts[-1] <= total
    assert ctl_json(stack, "audit", "verify")["passed"] is True


# --- stats ------------------------------------------------------------------------------------------

def test_stats(world):
    s = world.stack
    doc = ctl_json(s, "stats")
    wallets = [h.get_wallet(s, u) for u in (world.a, world.b)]
    txs = all_api_transactions(world)
    groups = {}
    for t in txs:
        count, amount = groups.get((t["type"], t["status"]), (0, 0))
        groups[(t["type"], t["status"])] = (count + 1, amount + t["amount"])
    assert doc["wallets"] == 2
    assert doc["total_balance"] == sum(w["balance"] for w in wallets)
    assert doc["total_held"] == 0
    assert {(g["type"], g["status"]): (g["count"], g["amount"]) for g in doc["transactions"]} == groups
    assert doc["due"] == 0 and doc["oldest_due"] is None and doc["outcome_unknown"] == 0
    last = doc["last_pass"]
    assert last is not None
    assert (last["claimed"], last["completed"], last["failed"], last["retried"]) == (2, 1, 1, 0)
    h.assert_utc_z(last["started_at"])
    assert h.parse_rfc3339(last["started_at"]) <= h.parse_rfc3339(last["finished_at"])
    text = ok(s.walletctl("stats"), "stats")
    assert f"wallets 2, total balance {doc['total_balance']}" in text
    rows = parse_table(text[text.index("TYPE"):text.index("\n\n", text.index("TYPE"))])
    assert {(r["TYPE"], r["STATUS"]): (int(r["COUNT"]), int(r["AMOUNT"])) for r in rows} == groups
    assert "due now: 0" in text


def test_stats_counts_what_is_due(world, tmp_path):
    """A copy where the PENDING withdrawal has come due: stats says so."""
    path = copy_database(world.stack, tmp_path / "due.db")
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE transactions SET next_attempt_at = 1000000, scheduled_for = 1000000 WHERE id = ?",
                 (world.a_pending,))
    conn.commit()
    conn.close()
    doc = ctl_json(world.stack, "stats", "--database", path)
    assert doc["due"] == 1 and doc["oldest_due"] == "1970-01-01T00:00:01Z", doc


# Sums above 2^53 (about 9.007e15, i.e. ten deposits of the largest amount):
# SQLite's total() returns a double, which cannot hold every integer there.
BIG = 10 ** 16 + 3       # as a double: 10000000000000004


def fill_big_wallet(stack):
    wallet = h.create_wallet(stack)["uuid"]
    for _ in range(10):
        h.deposit(stack, wallet, h.AMOUNT_MAX)
    h.deposit(stack, wallet, 3)
    h.assert_wallet(h.get_wallet(stack, wallet), balance=BIG)
    return wallet


def test_stats_sums_are_exact_above_2_53(stack):
    fill_big_wallet(stack)
    doc = ctl_json(stack, "stats")
    assert doc["total_balance"] == BIG
    assert doc["transactions"] == [{"type": "DEPOSIT", "status": "COMPLETED", "count": 11, "amount": BIG}]


def test_audit_held_is_exact_above_2_53(stack):
    wallet = fill_big_wallet(stack)
    # The bank answers HTTP 500 (outcome unknown): every withdrawal stays
    # PROCESSING with its funds held.
    stack.set_bank_mode("http500")
    for _ in range(10):
        h.withdraw(stack, wallet, h.AMOUNT_MAX)
    h.withdraw(stack, wallet, 3)
    assert stack.run_processor().returncode == 0
    assert stack.sqlite("SELECT balance, held FROM wallets") == [(0, BIG)]
    assert stack.sqlite("SELECT status, COUNT(*) FROM transactions WHERE type = 'WITHDRAWAL' GROUP BY 1") == \
        [("PROCESSING", 11)]
    doc = ctl_json(stack, "audit", "verify", expect_rc=None)
    assert doc["discrepancies"] == [] and doc["passed"] is True, doc


# --- a database that does not exist -------------------------------------------------------------------

READ_COMMANDS = [
    ("wallets", "list"),
    ("wallets", "show", "3f1c0000-0000-4000-8000-000000000000"),
    ("transactions", "list"),
    ("audit", "verify"),
    ("stats",),
    ("reconcile", "--bank-ledger", "/dev/null"),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("how", ["option", "environment"])
def test_missing_database(world, tmp_path, command, how):
    missing = tmp_path / "no-such.db"
    if how == "option":
        result = world.stack.walletctl(*command, "--database", missing)
    else:
        result = world.stack.walletctl(*command, extra_env={"WALLET_DB": missing})
    assert result.returncode != 0, result
    assert result.stdout == ""
    assert str(missing) in result.stderr and "cannot open the database" in result.stderr, result.stderr
    assert not missing.exists(), "walletctl created the database it was asked to read"
    assert list(tmp_path.iterdir()) == []


def test_missing_database_directory(world, tmp_path):
    result = world.stack.walletctl("backup", tmp_path / "copy.db", "--database", "/nonexistent-dir/wallet.db")
    assert result.returncode != 0
    assert "/nonexistent-dir/wallet.db" in result.stderr
    assert not (tmp_path / "copy.db").exists()


def test_missing_database_cancel(world, tmp_path):
    missing = tmp_path / "no-such.db"
    result = world.stack.walletctl("withdrawals", "cancel", 1, "--database", missing)
    assert result.returncode != 0, result
    assert not missing.exists(), "walletctl withdrawals cancel created a new, empty database"
    assert "cannot open the database" in result.stderr, result.stderr
