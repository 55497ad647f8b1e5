"""The stack on PostgreSQL through a server restart: while the server is down the
responder answers 503 (and the processor's pass fails without changing anything);
once it is back, the same responder serves again, on new connections, and nothing
acknowledged was lost. Runs when the stacks run on PostgreSQL and the server's
directory is known (`make test-postgres` sets WALLET_TEST_POSTGRES_DIR)."""

import os
import subprocess

import pytest

from . import helpers as h
from .conftest import REPO, wait_until

SERVER_DIR = os.environ.get("WALLET_TEST_POSTGRES_DIR")

pytestmark = pytest.mark.skipif(
    h.POSTGRES_SERVER is None or not SERVER_DIR,
    reason="needs WALLET_TEST_DB=postgres and the throwaway server's WALLET_TEST_POSTGRES_DIR")


def _server(action):
    subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), action, SERVER_DIR],
                   check=True, capture_output=True, text=True, timeout=60)


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
