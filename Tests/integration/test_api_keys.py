"""API keys through the real stack: nginx, the responder, walletctl and the database.

Every route but /healthz and /metrics needs `Authorization: Bearer <key>`; a missing,
malformed, unknown or revoked key is 401 `unauthenticated` with `WWW-Authenticate:
Bearer` before anything else and changes nothing. A wallet belongs to the key that made
it: any other key gets exactly the 404 of a wallet that does not exist. Idempotency keys
are per API key. nginx limits requests per key (and per address) with a JSON 429 and
Retry-After. Keys are made, listed and revoked with walletctl; the database holds only
their digests, and the logs name a key by its id, never by its value.
"""

import hashlib
import json
import re
import time

import pytest

from . import conftest
from . import helpers as h

NO_KEY = {"Authorization": None}


def make_key(stack, name):
    """A new key made by `walletctl keys create NAME --json`: (id, secret)."""
    result = stack.walletctl("keys", "create", name, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert re.fullmatch(r"wsk_[A-Za-z0-9_-]{43}", doc["key"]), doc
    return doc["id"], doc["key"]


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def wallet_routes(wallet, transaction):
    """Every route of one wallet: (method, path, body)."""
    return [
        ("GET", f"/wallets/{wallet}/", None),
        ("GET", f"/wallets/{wallet}", None),
        ("POST", f"/wallets/{wallet}/deposit", {"amount": 5}),
        ("POST", f"/wallets/{wallet}/withdraw", {"amount": 5}),
        ("GET", f"/wallets/{wallet}/balance", None),
        ("GET", f"/wallets/{wallet}/balance?at=2026-01-01T00:00:00Z", None),
        ("GET", f"/wallets/{wallet}/transactions/", None),
        ("GET", f"/wallets/{wallet}/transactions/{transaction}/", None),
        ("POST", f"/wallets/{wallet}/transactions/{transaction}/cancel", None),
    ]


def snapshot(stack):
    """What any client write would change."""
    return [stack.sqlite(f"SELECT count(*), coalesce(sum({column}), 0) FROM {table}")[0]
            for table, column in (("wallets", "balance"), ("transactions", "amount"), ("ledger", "delta"),
                                  ("idempotency", "status"))]


@pytest.fixture(scope="module")
def world(wallet_bin_dir):
    """One stack for the module with a wallet (a deposit and a PENDING withdrawal) owned
    by the stack's key. The tests add keys and wallets; none takes any away."""
    stack = conftest.Stack()
    stack.start()
    try:
        wallet = h.create_wallet(stack)["uuid"]
        h.deposit(stack, wallet, 100)
        withdrawal = h.withdraw(stack, wallet, 10, scheduled_for=h.future(3600))
        yield stack, wallet, withdrawal["id"]
    finally:
        stack.stop()
        stack.remove()


def test_every_route_refuses_a_missing_malformed_unknown_or_revoked_key(world):
    stack, wallet, withdrawal = world
    _, revoked = make_key(stack, "soon-revoked")
    # Valid until revoked, while the service runs.
    assert stack.request("GET", f"/wallets/{wallet}/", headers=bearer(revoked)).status == 404
    revoked_id = next(k["id"] for k in json.loads(stack.walletctl("keys", "list", "--json").stdout) if k["name"] == "soon-revoked")
    assert stack.walletctl("keys", "revoke", revoked_id).returncode == 0
    presented = {
        "missing": NO_KEY,
        "malformed": {"Authorization": "Bearer short"},
        "malformed scheme": {"Authorization": "Basic " + "a" * 40},
        "malformed characters": {"Authorization": "Bearer " + "a" * 40 + "!"},
        "unknown": bearer("wsk_" + "A" * 43),
        "revoked": bearer(revoked),
    }
    before = snapshot(stack)
    routes = wallet_routes(wallet, withdrawal) + [
        ("POST", "/wallets/", None), ("POST", "/wallets", None), ("GET", "/wallets/not-a-uuid/", None),
        ("DELETE", f"/wallets/{wallet}/", None), ("GET", "/events", None), ("GET", f"/events?wallet={wallet}", None),
        ("GET", "/webhook-endpoints", None), ("POST", "/webhook-endpoints", {"url": "http://127.0.0.1:9/", "events": ["*"]}),
        ("DELETE", "/webhook-endpoints/1", None),
    ]
    for label, headers in presented.items():
        for method, path, body in routes:
            resp = stack.request(method, path, body=body, headers={**headers, "Idempotency-Key": "k-" + label})
            h.assert_error(resp, 401, "unauthenticated")
            assert resp.headers.get("www-authenticate") == 'Bearer realm="wallet"', (label, method, path)
    assert snapshot(stack) == before
    assert stack.sqlite("SELECT status FROM transactions WHERE id = ?", (withdrawal,))[0][0] == "PENDING"
    assert stack.sqlite("SELECT count(*) FROM webhook_endpoints")[0][0] == 0


def test_another_keys_events_and_endpoints_are_invisible(world):
    stack, wallet, _ = world
    _, other = make_key(stack, "event-neighbour")
    theirs = h.create_wallet(stack, headers=bearer(other))["uuid"]
    mine = stack.request("GET", "/events?limit=500").json()["results"]
    assert mine and {e["wallet"] for e in mine} <= {w for (w,) in stack.sqlite(
        "SELECT uuid FROM wallets WHERE api_key_id = (SELECT id FROM api_keys WHERE name = 'development')")}
    assert theirs not in {e["wallet"] for e in mine}
    assert stack.request("GET", f"/events?wallet={theirs}").json()["results"] == []
    assert [e["wallet"] for e in stack.request("GET", "/events", headers=bearer(other)).json()["results"]] == [theirs]
    endpoint = stack.request("POST", "/webhook-endpoints", body={"url": "http://127.0.0.1:9/hook", "events": ["*"]},
                             headers=bearer(other))
    assert endpoint.status == 201, endpoint
    assert stack.request("GET", "/webhook-endpoints").json()["results"] == []
    foreign = stack.request("DELETE", f"/webhook-endpoints/{endpoint.json()['id']}")
    h.assert_error(foreign, 404, "not_found")
    assert foreign.json() == stack.request("DELETE", "/webhook-endpoints/987654").json()


def test_health_and_metrics_need_no_key(world):
    stack, _, _ = world
    assert stack.request("GET", "/healthz", headers=NO_KEY).status == 200
    assert stack.request("GET", "/metrics", headers=NO_KEY).status == 200


def test_another_keys_wallet_is_404_everywhere_exactly_as_an_unknown_one(world):
    stack, wallet, withdrawal = world
    _, other = make_key(stack, "other-client")
    before = snapshot(stack)
    unknown = h.random_uuid()
    for (method, path, body), (_, missing_path, _) in zip(wallet_routes(wallet, withdrawal),
                                                         wallet_routes(unknown, withdrawal)):
        theirs = stack.request(method, path, body=body, headers=bearer(other))
        nobodys = stack.request(method, missing_path, body=body, headers=bearer(other))
        h.assert_error(theirs, 404, "not_found")
        assert theirs.json() == nobodys.json(), (method, path)
        assert sorted(set(theirs.headers) - {"x-request-id", "date"}) == sorted(set(nobodys.headers) - {"x-request-id", "date"})
    assert snapshot(stack) == before
    # The other client's own wallets and lists know nothing of it.
    mine = h.create_wallet(stack, headers=bearer(other))["uuid"]
    listed = stack.request("GET", f"/wallets/{mine}/transactions/", headers=bearer(other))
    assert listed.status == 200 and listed.json()["results"] == []
    # The owner still sees everything, and not the other client's wallet.
    assert h.get_wallet(stack, wallet)["balance"] == 100
    h.assert_error(stack.request("GET", f"/wallets/{mine}/"), 404, "not_found")


def test_one_idempotency_key_from_two_clients_gives_each_its_own_answer(world):
    stack, wallet, _ = world
    _, other = make_key(stack, "idempotent-neighbour")
    first = stack.request("POST", "/wallets/", headers={"Idempotency-Key": "shared"})
    second = stack.request("POST", "/wallets/", headers={**bearer(other), "Idempotency-Key": "shared"})
    assert first.status == 201 and second.status == 201
    assert first.json()["uuid"] != second.json()["uuid"]
    # Replays return each client's own answer.
    assert stack.request("POST", "/wallets/", headers={"Idempotency-Key": "shared"}).json() == first.json()
    assert stack.request("POST", "/wallets/", headers={**bearer(other), "Idempotency-Key": "shared"}).json() == second.json()
    # A different request under the same key: 422 for its own client only.
    theirs = second.json()["uuid"]
    assert stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 1},
                         headers={"Idempotency-Key": "dep"}).status == 200
    assert stack.request("POST", f"/wallets/{theirs}/deposit", body={"amount": 2},
                         headers={**bearer(other), "Idempotency-Key": "dep"}).status == 200
    h.assert_error(stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 3},
                                 headers={"Idempotency-Key": "dep"}), 422, "idempotency_key_reused")


def test_walletctl_keys_end_to_end(world):
    stack, wallet, _ = world
    made = stack.walletctl("keys", "create", "billing service")
    assert made.returncode == 0, made.stderr
    secret = re.search(r"\bwsk_[A-Za-z0-9_-]{43}\b", made.stdout).group(0)
    assert "only time" in made.stdout
    # Usable at once; only its digest is stored.
    created = stack.request("POST", "/wallets/", headers=bearer(secret))
    assert created.status == 201
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert stack.sqlite("SELECT count(*) FROM api_keys WHERE digest = ?", (digest,))[0][0] == 1
    dump = "\n".join(map(str, stack.sqlite("SELECT * FROM api_keys")))
    assert secret not in dump
    # Listed by name, state, wallets and last use, never with a secret or digest.
    listed = stack.walletctl("keys", "list")
    assert listed.returncode == 0 and "billing service" in listed.stdout
    assert secret not in listed.stdout and digest not in listed.stdout
    doc = next(k for k in json.loads(stack.walletctl("keys", "list", "--json").stdout) if k["name"] == "billing service")
    assert set(doc) == {"id", "name", "state", "wallets", "created_at", "last_used_at", "revoked_at"}
    assert doc["state"] == "live" and doc["wallets"] == 1 and doc["last_used_at"] is not None
    # Hand the stack key's wallet over, then revoke: the new owner sees it, the revoked key nothing.
    assert stack.walletctl("wallets", "assign", wallet, doc["id"]).returncode == 0
    assert stack.request("GET", f"/wallets/{wallet}/", headers=bearer(secret)).json()["balance"] >= 100
    h.assert_error(stack.request("GET", f"/wallets/{wallet}/"), 404, "not_found")
    assert stack.walletctl("wallets", "assign", wallet, stack.sqlite("SELECT id FROM api_keys WHERE name = 'development'")[0][0]).returncode == 0
    revoked = stack.walletctl("keys", "revoke", doc["id"], "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["state"] == "revoked"
    h.assert_error(stack.request("GET", f"/wallets/{created.json()['uuid']}/", headers=bearer(secret)), 401, "unauthenticated")
    # Errors are plain: an unknown key id, a revoked key as a new owner, a bad name.
    assert stack.walletctl("keys", "revoke", 99999).returncode == 1
    assert stack.walletctl("wallets", "assign", wallet, doc["id"]).returncode == 1
    assert stack.walletctl("keys", "create", "").returncode != 0
    # A chosen key is stored from stdin, never printed; storing it twice is refused unless asked.
    chosen = "chosen-" + "x" * 30
    stored = stack.walletctl("keys", "create", "imported", "--stdin", input=chosen + "\n")
    assert stored.returncode == 0 and chosen not in stored.stdout + stored.stderr
    assert stack.request("POST", "/wallets/", headers=bearer(chosen)).status == 201
    assert stack.walletctl("keys", "create", "again", "--stdin", input=chosen + "\n").returncode == 1
    assert stack.walletctl("keys", "create", "again", "--stdin", "--existing-ok", input=chosen + "\n").returncode == 0
    # Every change is in the admin trail, failures included, and no key is ever in it.
    trail = stack.sqlite("SELECT command, arguments, result FROM admin_actions ORDER BY id")
    commands = [(command, result) for command, _, result in trail]
    for expected in [("keys create", "ok"), ("wallets assign", "ok"), ("keys revoke", "ok"), ("keys revoke", "not_found"),
                     ("wallets assign", "api_key_not_usable"), ("keys create", "key_exists")]:
        assert expected in commands, (expected, commands)
    dump = "\n".join(map(str, stack.sqlite("SELECT * FROM admin_actions")))
    assert secret not in dump and chosen not in dump and stack.api_key not in dump
    assert '"key": "[redacted]"' in dump


def test_logs_name_the_key_by_id_and_never_show_a_presented_value(world):
    stack, wallet, _ = world
    key_id, secret = make_key(stack, "audited")
    resp = stack.request("POST", "/wallets/", headers=bearer(secret))
    assert resp.status == 201
    line = h.log_lines_with(stack, resp.headers["x-request-id"])[0]
    assert line["api_key"] == key_id and line["auth_failure"] is None
    reasons = {}
    for label, headers in {"missing": NO_KEY, "malformed": {"Authorization": "Bearer tiny-secret-value"},
                           "unknown": bearer("wsk_" + "Q" * 43)}.items():
        refused = stack.request("GET", f"/wallets/{wallet}/", headers=headers)
        reasons[label] = h.log_lines_with(stack, refused.headers["x-request-id"])[0]["auth_failure"]
    assert reasons == {"missing": "missing", "malformed": "malformed", "unknown": "unknown"}
    logs = stack.logs("wallet-fcgi.log") + stack.logs("nginx-access.log") + stack.logs("nginx-error.log")
    for value in (secret, "tiny-secret-value", "Q" * 43, stack.api_key, hashlib.sha256(secret.encode()).hexdigest()):
        assert value not in logs


def test_a_key_over_its_rate_limit_gets_429_while_another_key_is_served(stack_factory):
    stack = stack_factory(extra_env={"WALLET_RATE_LIMIT": "2"})
    _, other = make_key(stack, "patient")
    answers = [stack.request("GET", "/healthz", headers=NO_KEY).status for _ in range(12)]
    statuses = [stack.request("POST", "/wallets/").status for _ in range(12)]
    assert 201 in statuses and 429 in statuses, statuses
    limited = stack.request("POST", "/wallets/")
    h.assert_error(limited, 429, "rate_limited")
    assert limited.headers.get("retry-after") == "1"
    assert limited.headers.get("content-type") == "application/json"
    # The same key spelled otherwise (the scheme's case, more spaces) shares its allowance.
    for spelling in (f"bearer {stack.api_key}", f"BEARER   {stack.api_key}"):
        h.assert_error(stack.request("POST", "/wallets/", headers={"Authorization": spelling}), 429, "rate_limited")
    # Another key, from the same address, is still served.
    assert stack.request("POST", "/wallets/", headers=bearer(other)).status == 201
    # The refused requests never reached the responder: it made only the wallets it answered.
    assert stack.sqlite("SELECT count(*) FROM wallets")[0][0] == statuses.count(201) + 1
    # After Retry-After, the key is served again.
    time.sleep(1.1)
    assert stack.request("POST", "/wallets/").status == 201
    assert all(status in (200, 429) for status in answers)
