"""Anchored ledger checkpoints (docs/CHECKPOINTS.md) and statements.

Every processor pass logs `{"event": "ledger_checkpoint", "ledger_id": N,
"hash": "..."}`; `walletctl audit verify --anchor N:HASH` fails once the ledger
no longer yields it, even after someone with write access to the file rewrote
a row AND recomputed the ledger's own hash chain (and the stored checkpoints),
which plain `audit verify` cannot see. `walletctl statement` ends with the
checkpoint of its period, checked the same way.
"""

import csv
import datetime as dt
import io
import json
import sqlite3
import subprocess
import time

from . import helpers as h
from .helpers import GENESIS, LEDGER_ROW, checkpoint_of, checkpoint_step, copy_database, ctl_json



def logged_checkpoints(result):
    """The ledger_checkpoint lines of a processor run, in order."""
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    found = [line for line in lines if line.get("event") == "ledger_checkpoint"]
    for line in found:
        assert line["component"] == "wallet-processor" and line["level"] == "info", line
    return found


def rewrite_consistently(path, sql):
    """What someone with write access to the file could do: lift the guards, run
    `sql`, then recompute the ledger's hash chain and the stored checkpoints so
    that everything the database itself can check agrees again."""
    conn = sqlite3.connect(str(path))
    conn.executescript(
        "DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;"
        "DROP TRIGGER ledger_checkpoints_no_update; DROP TRIGGER ledger_checkpoints_no_delete;" + sql)
    # Each row chains from its wallet's previous row (the same text as a checkpoint
    # step, from that row's hash); the stored checkpoints are recomputed as defined.
    heads = {}
    checkpoint = GENESIS
    checkpoints = {}
    for row in conn.execute(LEDGER_ROW + " ORDER BY id").fetchall():
        heads[row[1]] = checkpoint_step(heads.get(row[1], GENESIS), row)
        conn.execute("UPDATE ledger SET hash = ? WHERE id = ?", (heads[row[1]], row[0]))
        checkpoint = checkpoint_step(checkpoint, row)
        checkpoints[row[0]] = checkpoint
    for (ledger_id,) in conn.execute("SELECT ledger_id FROM ledger_checkpoints").fetchall():
        conn.execute("UPDATE ledger_checkpoints SET hash = ? WHERE ledger_id = ?", (checkpoints[ledger_id], ledger_id))
    conn.commit()
    conn.close()


def test_processor_checkpoint_anchors_the_ledger(stack, tmp_path):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    other = h.create_wallet(s)["uuid"]
    h.deposit(s, wallet, 1_000)
    h.deposit(s, wallet, 2_000)
    h.deposit(s, other, 500)
    h.withdraw(s, other, 200)
    [first] = logged_checkpoints(s.run_processor())
    rows = s.sqlite(LEDGER_ROW + " ORDER BY id")
    assert first["ledger_id"] == rows[-1][0] == 4
    assert first["hash"] == checkpoint_of(rows, 4)
    # The processor kept it. (Rows chain per wallet, so it is no row's own hash.)
    assert first["hash"] not in [hash for (hash,) in s.sqlite("SELECT hash FROM ledger")]
    assert s.sqlite("SELECT ledger_id, hash FROM ledger_checkpoints") == [(4, first["hash"])]
    anchor = f"{first['ledger_id']}:{first['hash']}"

    # Nothing new: the same checkpoint again. More rows: the next one continues it.
    assert [(c["ledger_id"], c["hash"]) for c in logged_checkpoints(s.run_processor())] == [(4, first["hash"])]
    h.deposit(s, other, 700)
    [second] = logged_checkpoints(s.run_processor())
    assert (second["ledger_id"], second["hash"]) == (5, checkpoint_of(s.sqlite(LEDGER_ROW + " ORDER BY id"), 5))
    later = f"{second['ledger_id']}:{second['hash']}"

    report = ctl_json(s, "audit", "verify", "--anchor", anchor, "--anchor", later.upper())
    assert report["passed"], report
    assert [(a["ledger_id"], a["held"]) for a in report["anchors"]] == [(4, True), (5, True)]
    assert report["checkpoint"] == {"ledger_id": 5, "hash": second["hash"]}
    text = s.walletctl("audit", "verify", "--anchor", anchor)
    assert text.returncode == 0 and f"anchor {anchor}: holds" in text.stdout

    # The first deposit becomes 1500, consistently: its ledger row, the wallet's later
    # row, its balance and the transaction, and every hash after. Plain verify passes.
    first_deposit = s.sqlite("SELECT transaction_id, wallet_id FROM ledger WHERE id = 1")[0]
    forged = copy_database(s, tmp_path / "forged.db")
    rewrite_consistently(forged, f"""
        UPDATE ledger SET delta = 1500, balance_after = 1500 WHERE id = 1;
        UPDATE ledger SET balance_after = 3500 WHERE id = 2;
        UPDATE wallets SET balance = balance + 500 WHERE id = {first_deposit[1]};
        UPDATE transactions SET amount = 1500 WHERE id = {first_deposit[0]};
    """)
    plain = ctl_json(s, "audit", "verify", "--database", forged)
    assert plain["passed"], plain["discrepancies"]
    for given in (anchor, later):
        failed = s.walletctl("audit", "verify", "--database", forged, "--anchor", given)
        assert failed.returncode == 1, failed.stdout
        assert "anchor_mismatch" in failed.stdout and "DOES NOT HOLD" in failed.stdout and "audit FAILED" in failed.stdout
    doc = ctl_json(s, "audit", "verify", "--database", forged, "--anchor", anchor, expect_rc=1)
    assert [d["kind"] for d in doc["discrepancies"]] == ["anchor_mismatch"]

    # A row removed from the end: the anchor's row is gone.
    cut = copy_database(s, tmp_path / "cut.db")
    rewrite_consistently(cut, f"""
        DELETE FROM ledger WHERE id = 5;
        DELETE FROM ledger_checkpoints WHERE ledger_id = 5;
        DELETE FROM transactions WHERE id = (SELECT max(id) FROM transactions);
        UPDATE wallets SET balance = balance - 700 WHERE uuid = '{other}';
    """)
    assert ctl_json(s, "audit", "verify", "--database", cut)["passed"]
    doc = ctl_json(s, "audit", "verify", "--database", cut, "--anchor", later, expect_rc=1)
    assert [d["kind"] for d in doc["discrepancies"]] == ["anchor_mismatch"]
    assert "no row 5" in doc["discrepancies"][0]["detail"]
    # ...while the anchor before the cut still holds.
    assert ctl_json(s, "audit", "verify", "--database", cut, "--anchor", anchor)["passed"]

    # A stored checkpoint left as it was is caught without any anchor.
    stale = copy_database(s, tmp_path / "stale.db")
    conn = sqlite3.connect(str(stale))
    conn.executescript("DROP TRIGGER ledger_checkpoints_no_update;"
                       f"UPDATE ledger_checkpoints SET hash = '{'ab' * 32}' WHERE ledger_id = 4;")
    conn.close()
    doc = ctl_json(s, "audit", "verify", "--database", stale, expect_rc=1)
    assert [d["kind"] for d in doc["discrepancies"]] == ["checkpoint_mismatch"]

    # A malformed anchor is a usage error.
    for bad in ("4", "4:xyz", f"x:{first['hash']}", f"-1:{first['hash']}", f"4:{first['hash']}0"):
        assert s.walletctl("audit", "verify", "--anchor", bad).returncode == 64, bad


def micros(text):
    moment = h.parse_rfc3339(text)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def iso_micro(moment):
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def statement_csv(stack, wallet, start, end):
    """The CSV statement, read as bytes (text mode would hide the CRLFs) and parsed."""
    result = subprocess.run(
        [str(stack.bin_dir / "walletctl"), "statement", wallet, "--from", start, "--to", end],
        env=stack.env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    raw = result.stdout.decode()
    assert raw.endswith("\r\n") and "\n" not in raw.replace("\r\n", "")
    return list(csv.DictReader(io.StringIO(raw, newline="")))


def test_consecutive_statements(stack):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    other = h.create_wallet(s)["uuid"]
    marks = [h.utc_now() - dt.timedelta(seconds=1)]
    h.deposit(s, wallet, 10_000)
    h.withdraw(s, wallet, 2_500)
    assert s.run_processor().returncode == 0
    time.sleep(0.01)
    marks.append(h.utc_now())
    time.sleep(0.01)
    h.deposit(s, other, 1)                    # another wallet's row: in the checkpoint, not the statement
    s.set_bank_mode("fail")
    h.withdraw(s, wallet, 1_000)
    assert s.run_processor(extra_env={"WALLET_MAX_RETRIES": "0"}).returncode == 0
    h.deposit(s, wallet, 300)
    time.sleep(0.01)
    marks.append(h.utc_now())
    time.sleep(0.01)
    h.deposit(s, other, 2)                    # after the last period
    times = [iso_micro(m) for m in marks]

    first = statement_csv(s, wallet, times[0], times[1])
    second = statement_csv(s, wallet, times[1], times[2])
    assert list(first[0]) == ["record", "wallet", "time", "ledger_id", "transaction_id", "kind", "amount",
                              "balance_after", "hash"]
    assert [r["record"] for r in first] == ["opening", "entry", "entry", "closing", "checkpoint"]
    assert [(r["kind"], int(r["amount"]), int(r["balance_after"])) for r in first[1:3]] == \
        [("DEPOSIT", 10_000, 10_000), ("DEBIT", -2_500, 7_500)]
    assert (int(first[0]["balance_after"]), int(first[3]["balance_after"])) == (0, 7_500)
    assert [(r["kind"], int(r["amount"])) for r in second[1:-2]] == [("DEBIT", -1_000), ("REFUND", 1_000), ("DEPOSIT", 300)]
    # One statement's closing balance is the next one's opening.
    assert second[0]["balance_after"] == first[3]["balance_after"]
    assert int(second[-2]["balance_after"]) == 7_800
    assert int(second[0]["balance_after"]) + sum(int(r["amount"]) for r in second[1:-2]) == 7_800
    for rows, end in ((first, times[1]), (second, times[2])):
        assert h.parse_rfc3339(rows[-1]["time"]) == h.parse_rfc3339(end)
        for r in rows[1:-2]:
            assert r["wallet"] == wallet and h.parse_rfc3339(r["time"]) < h.parse_rfc3339(end)

    # Each checkpoint covers every row (of any wallet) before the period's end, and
    # audit verify accepts it as an anchor.
    ledger = s.sqlite(LEDGER_ROW + " ORDER BY id")
    for rows, end in ((first, times[1]), (second, times[2])):
        checkpoint = rows[-1]
        last_id = int(checkpoint["ledger_id"])
        assert last_id == max(r[0] for r in ledger if r[6] < micros(end))
        assert checkpoint["hash"] == checkpoint_of(ledger, last_id)
        assert ctl_json(s, "audit", "verify", "--anchor", f"{last_id}:{checkpoint['hash']}")["passed"]
    # The second period's checkpoint includes the other wallet's row inside it, not the one after.
    assert int(second[-1]["ledger_id"]) == len(ledger) - 1

    # JSON: the same statement.
    doc = ctl_json(s, "statement", wallet, "--from", times[1], "--to", times[2])
    assert doc == json.loads(s.walletctl("statement", wallet, "--from", times[1], "--to", times[2],
                                         "--format", "json").stdout)
    assert (doc["wallet"], doc["opening_balance"], doc["closing_balance"]) == (wallet, 7_500, 7_800)
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in doc["entries"]] == \
        [("DEBIT", -1_000, 6_500), ("REFUND", 1_000, 7_500), ("DEPOSIT", 300, 7_800)]
    assert doc["checkpoint"] == {"ledger_id": int(second[-1]["ledger_id"]), "hash": second[-1]["hash"]}

    # An empty period before anything: zero balances, the genesis checkpoint.
    empty = ctl_json(s, "statement", wallet, "--from", "2020-01-01T00:00:00Z", "--to", "2020-02-01T00:00:00+01:00")
    assert (empty["opening_balance"], empty["entries"], empty["closing_balance"]) == (0, [], 0)
    assert empty["checkpoint"] == {"ledger_id": 0, "hash": GENESIS}

    # Usage errors, and an unknown wallet.
    assert s.walletctl("statement", wallet, "--from", times[2], "--to", times[1]).returncode == 64
    assert s.walletctl("statement", wallet, "--from", "yesterday", "--to", times[1]).returncode == 64
    assert s.walletctl("statement", wallet, "--from", times[0], "--to", times[1], "--format", "xml").returncode == 64
    unknown = s.walletctl("statement", h.random_uuid(), "--from", times[0], "--to", times[1])
    assert unknown.returncode == 1 and "no wallet" in unknown.stderr
