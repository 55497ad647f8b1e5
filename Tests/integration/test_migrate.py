"""`walletctl migrate --from FILE --to URI`: a deployment made through the
service on SQLite, with paid, refunded and pending withdrawals, stored answers
and events, copied into an empty PostgreSQL database; the audit passes on both
sides with the same heads, the service goes on on PostgreSQL where it left off
(stored answers included), and a second copy into the same database is
refused without changing it. Runs in the postgres suite (it needs the
throwaway server of `make test-postgres`)."""

import json
import secrets

import pytest

from . import helpers as h
from .conftest import _psql

pytestmark = pytest.mark.skipif(h.POSTGRES_SERVER is None, reason="needs the postgres suite's server (WALLET_TEST_DB=postgres)")


@pytest.fixture
def empty_database():
    name = "m_" + secrets.token_hex(8)
    _psql(h.POSTGRES_SERVER, f"CREATE DATABASE {name}")
    yield f"{h.POSTGRES_SERVER} dbname={name}"
    _psql(h.POSTGRES_SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _audit(stack, database):
    result = stack.walletctl("audit", "verify", "--json", extra_env={"WALLET_DB": database})
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_a_deployment_moves_to_postgres_and_goes_on_there(stack_factory, empty_database):
    source = stack_factory(sqlite=True, bank_mode="success")
    wallet = h.create_wallet(source)["uuid"]
    h.deposit(source, wallet, 10_000, headers={"Idempotency-Key": "before-the-move"})
    h.withdraw(source, wallet, 1_000)
    h.withdraw(source, wallet, 500, scheduled_for="2099-01-01T00:00:00Z")
    assert source.run_processor().returncode == 0
    source.set_bank_mode("fail")
    h.withdraw(source, wallet, 2_000)
    assert source.run_processor(extra_env={"WALLET_MAX_RETRIES": "0"}).returncode == 0
    before = _audit(source, str(source.db_path))

    moved = source.walletctl("migrate", "--from", source.db_path, "--to", empty_database, "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    report = json.loads(moved.stdout)
    assert report["verified"] is True and report["problems"] == []
    rows = {table["name"]: table["rows"] for table in report["tables"]}
    assert rows["wallets"] == 1 and rows["transactions"] == 4 and rows["ledger"] == 4 and rows["events"] > 0
    assert "password" not in moved.stdout and report["to"].startswith("postgresql host=")

    after = _audit(source, empty_database)
    assert after["head_hash"] == before["head_hash"]
    assert after["admin_head_hash"] != before["admin_head_hash"]  # the migrate row, chained on
    assert after["ledger_rows"] == before["ledger_rows"] and after["transactions"] == before["transactions"]

    # The service on PostgreSQL, with the same API key: the wallet as it was, a
    # stored answer still replayed, and new writes on new ids.
    target = stack_factory(database=empty_database, extra_env={"WALLET_DEV_API_KEY": source.api_key})
    target.api_key = source.api_key
    h.API_KEYS[target.http_port] = source.api_key
    # Paid 1,000; 2,000 refunded; 500 not due, so not debited yet.
    assert h.get_wallet(target, wallet)["balance"] == 9_000
    replay = h.deposit(target, wallet, 10_000, headers={"Idempotency-Key": "before-the-move"})
    assert replay["wallet"]["balance"] == 10_000
    h.deposit(target, wallet, 1)
    assert _audit(target, empty_database)["passed"] is True

    again = source.walletctl("migrate", "--from", source.db_path, "--to", empty_database)
    assert again.returncode == 1 and "not empty" in again.stderr
    assert _audit(target, empty_database)["ledger_rows"] == before["ledger_rows"] + 1
