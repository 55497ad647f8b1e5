"""walletctl's admin trail: every command that changes the database leaves a row
in `admin_actions` (who, what, result) in the transaction of its change, and one
JSON line through syslog(3); `walletctl audit log` lists them and `walletctl
audit verify` checks their hash chain.

The syslog test runs walletctl in a mount namespace of its own (`unshare
--mount`) whose /dev/log is a datagram socket of the test: glibc's syslog(3)
always writes to /dev/log, so this is the real thing, facility and all.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess

import pytest

from . import helpers as h
from .helpers import copy_database, ctl_json


def login_uid():
    """This process's login uid as the trail records it (None when unset)."""
    try:
        with open("/proc/self/loginuid") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == 4294967295 else value


def pending_withdrawal(stack, wallet, amount=100):
    return h.withdraw(stack, wallet, amount, scheduled_for=h.future(3600))["id"]


def admin_hash(previous, row):
    """The admin trail's chain (Store.adminHashInput)."""
    id_, created_at, uid, login, sudo, command, arguments, result = row

    def quoted(text):
        return json.dumps(text, ensure_ascii=False)

    text = (f"{previous}|{id_}|{created_at}|{uid}|{'-' if login is None else login}|{'-' if sudo is None else sudo}|"
            f"{quoted(command)}|{quoted(arguments)}|{quoted(result)}")
    return hashlib.sha256(text.encode()).hexdigest()


def test_walletctl_cancel_is_recorded_with_its_change(stack):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    withdrawal = pending_withdrawal(s, wallet)
    # The stack's start stored its development API key: that is the trail's first row.
    [start] = ctl_json(s, "audit", "log")
    assert (start["command"], start["arguments"]["key"], start["result"]) == ("keys create", "[redacted]", "ok")
    base = start["id"]

    doc = ctl_json(s, "withdrawals", "cancel", withdrawal, extra_env={"SUDO_UID": "4321", "USER": "mallory"})
    assert doc["status"] == "CANCELED"
    action, _ = ctl_json(s, "audit", "log")
    assert set(action) == {"id", "time", "uid", "login_uid", "sudo_uid", "command", "arguments", "result", "hash"}
    assert (action["id"], action["command"], action["arguments"], action["result"]) == \
        (base + 1, "withdrawals cancel", {"id": withdrawal}, "ok")
    assert (action["uid"], action["login_uid"], action["sudo_uid"]) == (os.getuid(), login_uid(), 4321)
    assert "mallory" not in json.dumps(action)
    # One transaction: the row's time is the change's own `now`.
    changed = s.sqlite("SELECT updated_at FROM transactions WHERE id = ?", (withdrawal,))[0][0]
    recorded = s.sqlite("SELECT created_at FROM admin_actions WHERE id = ?", (base + 1,))[0][0]
    assert changed == recorded

    # A refused command is recorded with its error code, and changes nothing.
    again = s.walletctl("withdrawals", "cancel", withdrawal, extra_env={"SUDO_UID": "not-a-number"})
    assert again.returncode == 1
    unknown = s.walletctl("withdrawals", "cancel", 987654321, extra_env={"SUDO_UID": None})
    assert unknown.returncode == 1
    actions = ctl_json(s, "audit", "log")
    assert [(a["id"], a["result"], a["arguments"], a["sudo_uid"]) for a in actions[:3]] == [
        (base + 3, "not_found", {"id": 987654321}, None),
        (base + 2, "not_cancelable", {"id": withdrawal}, None),
        (base + 1, "ok", {"id": withdrawal}, 4321),
    ]
    assert s.sqlite("SELECT updated_at FROM transactions WHERE id = ?", (withdrawal,))[0][0] == changed

    # The table, and --limit.
    table = s.walletctl("audit", "log")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "UID", "LOGIN_UID", "SUDO_UID", "COMMAND", "ARGUMENTS", "RESULT"]
    assert len(lines) == 5 and "withdrawals cancel" in lines[3] and lines[3].rstrip().endswith("ok")
    assert [a["id"] for a in ctl_json(s, "audit", "log", "--limit", "1")] == [base + 3]

    # Reads leave no trace.
    for args in (("wallets", "list"), ("stats",), ("audit", "verify")):
        assert s.walletctl(*args).returncode == 0
    assert len(ctl_json(s, "audit", "log")) == 4
    verify = ctl_json(s, "audit", "verify")
    assert verify["passed"] and verify["admin_actions"] == 4
    assert verify["admin_head_hash"] == actions[0]["hash"]


def test_admin_trail_is_append_only_and_chained(stack, tmp_path):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    for _ in range(3):
        assert s.walletctl("withdrawals", "cancel", pending_withdrawal(s, wallet)).returncode == 0
    rows = s.sqlite("SELECT id, created_at, uid, login_uid, sudo_uid, command, arguments, result, hash FROM admin_actions "
                    "ORDER BY id")
    previous = "0" * 64
    for row in rows:
        assert admin_hash(previous, row[:8]) == row[8]
        previous = row[8]

    # The database refuses to change or remove a row.
    conn = sqlite3.connect(str(s.db_path), timeout=10)
    try:
        for sql in ("UPDATE admin_actions SET result = 'ok' WHERE id = 1", "DELETE FROM admin_actions WHERE id = 1"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()

    # Past the triggers, audit verify sees an edited row and a removed one.
    def tampered(name, sql):
        copy = copy_database(s, tmp_path / f"{name}.db")
        conn = sqlite3.connect(str(copy))
        conn.executescript("DROP TRIGGER admin_actions_no_update; DROP TRIGGER admin_actions_no_delete;" + sql)
        conn.commit()
        conn.close()
        return ctl_json(s, "audit", "verify", "--database", copy, expect_rc=1)

    edited = tampered("edited", "UPDATE admin_actions SET uid = 1000 WHERE id = 2;")
    assert [(d["kind"], d["subject"]) for d in edited["discrepancies"]] == [("broken_admin_chain", "admin action 2")]
    removed = tampered("removed", "DELETE FROM admin_actions WHERE id = 2;")
    assert [(d["kind"], d["subject"]) for d in removed["discrepancies"]] == [
        ("admin_gap", "admin action 3"), ("broken_admin_chain", "admin action 3")]


def _namespace_available():
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


# Inside a mount namespace of its own: a tmpfs over /dev with the few nodes a
# program needs bound from the real one, and the test's socket bound at /dev/log.
NAMESPACE_SCRIPT = r'''
set -eu
real=$(mktemp -d)
mount --bind /dev "$real"
mount -t tmpfs -o mode=755 wallet-test-dev /dev
for node in null zero full random urandom tty; do
    if [ -e "$real/$node" ]; then touch "/dev/$node"; mount --bind "$real/$node" "/dev/$node"; fi
done
touch /dev/log
mount --bind "$WALLET_TEST_SYSLOG_SOCKET" /dev/log
exec "$@"
'''

SYSLOG_RE = re.compile(r"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} walletctl\[(\d+)\]: (.*)$", re.S)
LOG_AUTHPRIV = 10
LOG_NOTICE, LOG_WARNING = 5, 4


@pytest.mark.skipif(not _namespace_available(), reason="needs `unshare --mount` (root)")
def test_admin_actions_go_to_syslog(stack, tmp_path):
    s = stack
    wallet = h.create_wallet(s)["uuid"]
    withdrawal = pending_withdrawal(s, wallet)
    socket_path = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(socket_path)
    receiver.settimeout(10)

    def walletctl(*args):
        env = dict(s.env, WALLET_TEST_SYSLOG_SOCKET=socket_path, SUDO_UID="777")
        return subprocess.run(
            ["unshare", "--mount", "--", "bash", "-c", NAMESPACE_SCRIPT, "namespace",
             str(s.bin_dir / "walletctl"), *map(str, args)],
            env=env, capture_output=True, text=True, timeout=60)

    try:
        done = walletctl("withdrawals", "cancel", withdrawal)
        assert done.returncode == 0, done.stderr
        refused = walletctl("withdrawals", "cancel", withdrawal)
        assert refused.returncode == 1, refused.stderr
        datagrams = [receiver.recv(65536).decode(), receiver.recv(65536).decode()]
    finally:
        receiver.close()

    actions = {a["id"]: a for a in ctl_json(s, "audit", "log")}
    base = min(actions)  # the stack's development key, stored at its start
    for datagram, severity, action_id in zip(datagrams, (LOG_NOTICE, LOG_WARNING), (base + 1, base + 2)):
        match = SYSLOG_RE.match(datagram)
        assert match, datagram
        assert int(match.group(1)) == LOG_AUTHPRIV * 8 + severity
        line = json.loads(match.group(3))
        assert line.pop("event") == "admin_action"
        assert line == actions[action_id]
        assert line["sudo_uid"] == 777 and line["uid"] == os.getuid()
    assert json.loads(SYSLOG_RE.match(datagrams[1]).group(3))["result"] == "not_cancelable"
