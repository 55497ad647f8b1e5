"""The stack on PostgreSQL. Through a server restart: while the server is down the
responder answers 503 (and the processor's pass fails without changing anything);
once it is back, the same responder serves again, on new connections, and nothing
acknowledged was lost. And a password in WALLET_DB never reaches a log. Runs when the stacks run on PostgreSQL and the server's
directory is known (`make test-postgres` sets WALLET_TEST_POSTGRES_DIR)."""

import os
import subprocess

import pytest

from . import helpers as h
from .conftest import REPO, SESSION_VARIABLE, wait_until

SERVER_DIR = os.environ.get("WALLET_TEST_POSTGRES_DIR")

pytestmark = pytest.mark.skipif(
    h.POSTGRES_SERVER is None or not SERVER_DIR,
    reason="needs WALLET_TEST_DB=postgres and the throwaway server's WALLET_TEST_POSTGRES_DIR")


def _server(action):
    # The server belongs to the suite, which stops it, not to this test: a server
    # started again here must not carry the mark that makes the session's end
    # take it for a process a test left behind.
    env = {k: v for k, v in os.environ.items() if k != SESSION_VARIABLE}
    subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), action, SERVER_DIR],
                   check=True, capture_output=True, text=True, timeout=60, env=env)


def test_responder_answers_503_while_the_server_is_down_and_serves_again_after(stack):
    wallet = h.create_wallet(stack)["uuid"]
    h.deposit(stack, wallet, 500)
    pid = stack.responder_pid()
    _server("stop")
    try:
        down = stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 7},
                             headers={"Idempotency-Key": "while-down"})
        h.assert_error(down, 503, "service_unavailable")
        assert stack.request("GET", f"/wallets/{wallet}/").status == 503
        assert stack.request("GET", "/healthz").status == 503
        result = stack.run_processor()
        assert result.returncode != 0
    finally:
        _server("start")
    # The same process reconnects: the first requests after the restart may still
    # meet a connection that has not noticed yet, then every one is served.
    wait_until(lambda: stack.request("GET", "/healthz").status == 200, timeout=30, message="/healthz answers 200 again")
    wait_until(lambda: stack.request("GET", f"/wallets/{wallet}/").status == 200, timeout=30,
               message="reads are served again")
    # The deposit refused while the server was down is retried with its key, and
    # applied once.
    statuses = []

    def retried():
        statuses.append(stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 7},
                                      headers={"Idempotency-Key": "while-down"}).status)
        return statuses[-1] == 200

    wait_until(retried, timeout=30, message="the retried deposit is applied")
    assert set(statuses) <= {200, 503}, statuses
    assert stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 7},
                         headers={"Idempotency-Key": "while-down"}).status == 200
    assert stack.responder_pid() == pid
    assert h.get_wallet(stack, wallet)["balance"] == 507
    assert h.ledger_sums(stack)[wallet] == (507, 507)


SECRET = "hunter2-never-logged"


def test_a_password_in_the_conninfo_is_refused_and_never_written_out(stack):
    """A password never belongs in WALLET_DB (a password file or a credential holds it):
    the responder, the processor and walletctl refuse one, and one libpq cannot parse
    (whose parse error would quote it), with a message that names WALLET_DB and never
    the password. A database that cannot be opened is named by host, port and name only."""
    outputs = []
    for location in (f"{stack.pg_conninfo} password={SECRET}",
                     f"postgresql://wallet:{SECRET}%zz@127.0.0.1:1/wallet"):
        env = {"WALLET_DB": location}
        responder = subprocess.run([str(stack.bin_dir / "wallet-fcgi"), "--socket", str(stack.base_dir / "refused.sock")],
                                   cwd=REPO, env=stack._command_env(env), capture_output=True, text=True, timeout=30)
        processor = stack.run_processor(extra_env=env)
        stats = stack.walletctl("stats", "--json", extra_env=env)
        for result in (responder, processor, stats):
            assert result.returncode != 0
            assert "WALLET_DB" in result.stdout + result.stderr, result.stdout + result.stderr
            outputs.append(result.stdout + result.stderr)
    wrong = stack.walletctl("stats", extra_env={"WALLET_DB": f"{h.POSTGRES_SERVER} dbname=nonexistent"})
    assert wrong.returncode != 0
    assert "dbname=nonexistent" in wrong.stderr, wrong.stderr
    backup = stack.walletctl("backup", stack.base_dir / "copy.db")
    assert backup.returncode == 1 and "pg_dump" in backup.stderr, backup.stderr
    assert not (stack.base_dir / "copy.db").exists()
    started = [line for line in stack.logs("wallet-fcgi.log").splitlines() if '"event": "started"' in line]
    assert started and "dbname=" + stack.pg_database in started[-1], started
    for output in outputs + [stack.logs("wallet-fcgi.log"), stack.logs("processor.log")]:
        assert SECRET not in output
