"""Every route of the API (openapi.yaml) as a client calls it, idempotency, request ids and logs,
health and metrics."""

import concurrent.futures
import datetime as dt
import json
import time

from . import helpers as h


# --- Wallets -----------------------------------------------------------------------

def test_create_wallet_with_empty_body(stack):
    before = h.utc_now()
    resp = stack.request("POST", "/wallets/")
    doc = h.assert_json_ok(resp, 201)
    h.assert_wallet(doc, balance=0)
    h.assert_utc_z(doc["created_at"], near=before, tolerance_seconds=60)
    h.assert_utc_z(doc["updated_at"], near=before, tolerance_seconds=60)
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1


def test_create_wallet_with_empty_object(stack):
    resp = stack.request("POST", "/wallets/", body={})
    h.assert_wallet(h.assert_json_ok(resp, 201), balance=0)


def test_create_wallet_without_trailing_slash(stack):
    resp = stack.request("POST", "/wallets")
    h.assert_wallet(h.assert_json_ok(resp, 201), balance=0)


def test_created_wallets_are_distinct(stack):
    uuids = {h.create_wallet(stack)["uuid"] for _ in range(5)}
    assert len(uuids) == 5


def test_get_wallet_with_and_without_trailing_slash(stack):
    created = h.create_wallet(stack)
    for path in (f"/wallets/{created['uuid']}/", f"/wallets/{created['uuid']}"):
        resp = stack.request("GET", path)
        doc = h.assert_json_ok(resp, 200)
        h.assert_wallet(doc, balance=0)
        assert doc == created, f"GET {path}: {doc} != {created}"


def test_wallet_uuid_is_lower_case_and_accepted_in_upper_case(stack):
    """openapi.yaml: a wallet UUID is accepted in either letter case and always returned in lower case."""
    w = h.create_wallet(stack)
    assert w["uuid"] == w["uuid"].lower()
    upper = w["uuid"].upper()
    assert h.assert_json_ok(stack.request("GET", f"/wallets/{upper}/"), 200) == w
    dep = h.assert_json_ok(stack.request("POST", f"/wallets/{upper}/deposit", body={"amount": 3}), 200)
    assert dep["wallet"]["uuid"] == w["uuid"] and dep["transaction"]["wallet"] == w["uuid"]


def test_get_unknown_wallet_is_404(stack):
    resp = stack.request("GET", f"/wallets/{h.random_uuid()}/")
    h.assert_error(resp, 404, h.NOT_FOUND)


# --- Deposits ----------------------------------------------------------------------------

def test_deposit(stack):
    w = h.create_wallet(stack)
    before = h.utc_now()
    resp = stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 1500})
    doc = h.assert_json_ok(resp, 200)
    assert set(doc) == {"wallet", "transaction"}, doc
    h.assert_wallet(doc["wallet"], balance=1500)
    assert doc["wallet"]["uuid"] == w["uuid"]
    tx = h.assert_transaction(doc["transaction"], wallet=w["uuid"], type="DEPOSIT", amount=1500,
                              status="COMPLETED", failure_reason=None, idempotency_key=None)
    assert tx["executed_at"] is not None, tx
    h.assert_utc_z(tx["executed_at"], near=before, tolerance_seconds=60)
    h.assert_utc_z(tx["created_at"], near=before, tolerance_seconds=60)

    second = h.deposit(stack, w["uuid"], 2500)
    assert second["wallet"]["balance"] == 4000
    assert second["transaction"]["id"] != tx["id"]
    assert h.get_wallet(stack, w["uuid"])["balance"] == 4000
    fetched = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/{tx['id']}/"), 200)
    assert fetched == tx


def test_deposit_updates_updated_at_not_created_at(stack):
    w = h.create_wallet(stack)
    time.sleep(1.1)
    after = h.deposit(stack, w["uuid"], 10)["wallet"]
    assert after["created_at"] == w["created_at"]
    assert h.parse_rfc3339(after["updated_at"]) > h.parse_rfc3339(w["updated_at"])


def test_deposit_with_trailing_slash(stack):
    w = h.create_wallet(stack)
    resp = stack.request("POST", f"/wallets/{w['uuid']}/deposit/", body={"amount": 7})
    assert h.assert_json_ok(resp, 200)["wallet"]["balance"] == 7


def test_deposit_to_unknown_wallet_is_404(stack):
    resp = stack.request("POST", f"/wallets/{h.random_uuid()}/deposit", body={"amount": 7})
    h.assert_error(resp, 404, h.NOT_FOUND)


# --- Withdrawals ------------------------------------------------------------------------

def test_withdraw_is_pending_and_leaves_balance(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 10_000)
    when = h.future(3600)
    resp = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body={"amount": 4000, "scheduled_for": when})
    tx = h.assert_json_ok(resp, 201)
    h.assert_transaction(tx, wallet=w["uuid"], type="WITHDRAWAL", amount=4000, status="PENDING",
                         executed_at=None, failure_reason=None, attempts=0, idempotency_key=None)
    assert h.parse_rfc3339(tx["scheduled_for"]) == h.parse_rfc3339(when), (tx["scheduled_for"], when)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 10_000
    fetched = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/{tx['id']}"), 200)
    assert fetched == tx


def test_withdraw_normalises_offset_and_fraction_to_utc(stack):
    w = h.create_wallet(stack)
    # Two hours ahead, written in +03:30 with fractional seconds.
    instant = (h.utc_now() + dt.timedelta(hours=2)).replace(microsecond=250000)
    local = instant.astimezone(dt.timezone(dt.timedelta(hours=3, minutes=30)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + ".25+03:30"
    assert h.parse_rfc3339(text) == instant
    tx = h.withdraw(stack, w["uuid"], 100, scheduled_for=text)
    got = h.assert_utc_z(tx["scheduled_for"])
    assert tx["scheduled_for"].endswith("Z")
    # Same instant; the service may keep or drop the fraction, never shift the time.
    assert 0 <= (instant - got).total_seconds() < 1, f"{text} became {tx['scheduled_for']}"
    assert tx["scheduled_for"].startswith(instant.strftime("%Y-%m-%dT%H:%M:%S")), tx["scheduled_for"]


def test_withdraw_without_scheduled_for_is_accepted_as_due_now(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 1000)
    before = h.utc_now()
    resp = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body={"amount": 300})
    due = h.assert_json_ok(resp, 201)
    h.assert_transaction(due, status="PENDING", type="WITHDRAWAL", amount=300, executed_at=None)
    if due["scheduled_for"] is not None:
        h.assert_utc_z(due["scheduled_for"], near=before, tolerance_seconds=5)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 1000


def test_withdraw_without_scheduled_for_is_paid_by_the_next_pass(stack):
    """"Due at once": one processor pass pays it, and leaves a future one alone."""
    stack.set_bank_mode("success")
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 1000)
    due = h.withdraw(stack, w["uuid"], 300)
    later = h.withdraw(stack, w["uuid"], 200, scheduled_for=h.future(3600))
    stack.run_processor()
    done = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/{due['id']}/"), 200)
    h.assert_transaction(done, status="COMPLETED", failure_reason=None)
    assert done["executed_at"] is not None
    waiting = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/{later['id']}/"), 200)
    h.assert_transaction(waiting, status="PENDING")
    assert h.get_wallet(stack, w["uuid"])["balance"] == 700


def test_withdraw_larger_than_balance_is_accepted(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 50)
    tx = h.withdraw(stack, w["uuid"], 5000, scheduled_for=h.future())
    h.assert_transaction(tx, status="PENDING", amount=5000)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 50
    # Empty wallet too.
    empty = h.create_wallet(stack)
    h.withdraw(stack, empty["uuid"], 1, scheduled_for=h.future())


def test_withdraw_from_unknown_wallet_is_404(stack):
    resp = stack.request("POST", f"/wallets/{h.random_uuid()}/withdraw", body={"amount": 7})
    h.assert_error(resp, 404, h.NOT_FOUND)


# --- Transaction lists ----------------------------------------------------------------

def _fill(stack, wallet_uuid, deposits, withdrawals):
    ids = []
    for i in range(max(deposits, withdrawals)):
        if i < deposits:
            ids.append(h.deposit(stack, wallet_uuid, 100 + i)["transaction"]["id"])
        if i < withdrawals:
            ids.append(h.withdraw(stack, wallet_uuid, 1 + i, scheduled_for=h.future())["id"])
    return ids


def test_transaction_list_newest_first(stack):
    w = h.create_wallet(stack)
    ids = _fill(stack, w["uuid"], 4, 3)
    resp = stack.request("GET", f"/wallets/{w['uuid']}/transactions/")
    doc = h.assert_json_ok(resp, 200)
    assert set(doc) == {"results", "next_cursor"}, doc
    assert doc["next_cursor"] is None
    got = [t["id"] for t in doc["results"]]
    assert got == list(reversed(ids)), f"not newest first: {got} vs created {ids}"
    for t in doc["results"]:
        h.assert_transaction(t, wallet=w["uuid"])
    # Without the trailing slash too.
    again = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions"), 200)
    assert again == doc


def test_transaction_list_of_empty_and_unknown_wallet(stack):
    w = h.create_wallet(stack)
    doc = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/"), 200)
    assert doc == {"results": [], "next_cursor": None}
    h.assert_error(stack.request("GET", f"/wallets/{h.random_uuid()}/transactions/"), 404, h.NOT_FOUND)


def test_transaction_list_only_shows_own_wallet(stack):
    a, b = h.create_wallet(stack), h.create_wallet(stack)
    h.deposit(stack, a["uuid"], 1)
    h.deposit(stack, b["uuid"], 2)
    doc = h.assert_json_ok(stack.request("GET", f"/wallets/{a['uuid']}/transactions/"), 200)
    assert [(t["wallet"], t["amount"]) for t in doc["results"]] == [(a["uuid"], 1)]


def test_transaction_list_filters_case_insensitive(stack):
    w = h.create_wallet(stack)
    _fill(stack, w["uuid"], 3, 2)
    first_wd = h.withdraw(stack, w["uuid"], 9, scheduled_for=h.future())
    h.assert_json_ok(stack.request("POST", f"/wallets/{w['uuid']}/transactions/{first_wd['id']}/cancel"), 200)
    base = f"/wallets/{w['uuid']}/transactions/"
    cases = {
        "?type=DEPOSIT": (3, {"DEPOSIT"}, None),
        "?type=deposit": (3, {"DEPOSIT"}, None),
        "?type=Withdrawal": (3, {"WITHDRAWAL"}, None),
        "?status=pending": (2, None, {"PENDING"}),
        "?status=PENDING": (2, None, {"PENDING"}),
        "?status=Completed": (3, None, {"COMPLETED"}),
        "?status=canceled": (1, None, {"CANCELED"}),
        "?status=failed": (0, None, None),
        "?status=pending&type=withdrawal": (2, {"WITHDRAWAL"}, {"PENDING"}),
        "?status=pending&type=DEPOSIT": (0, None, None),
    }
    problems = []
    for query, (count, types, statuses) in cases.items():
        resp = stack.request("GET", base + query)
        if resp.status != 200:
            problems.append(f"{query}: status {resp.status} {resp.body[:200]!r}")
            continue
        rows = resp.json()["results"]
        if len(rows) != count:
            problems.append(f"{query}: {len(rows)} rows, expected {count}")
        if types and {r["type"] for r in rows} - types:
            problems.append(f"{query}: types {[r['type'] for r in rows]}")
        if statuses and {r["status"] for r in rows} - statuses:
            problems.append(f"{query}: statuses {[r['status'] for r in rows]}")
    assert not problems, "\n".join(problems)


def test_transaction_list_limit(stack):
    w = h.create_wallet(stack)
    ids = _fill(stack, w["uuid"], 6, 0)
    base = f"/wallets/{w['uuid']}/transactions/"
    doc = h.assert_json_ok(stack.request("GET", base + "?limit=4"), 200)
    assert [t["id"] for t in doc["results"]] == list(reversed(ids))[:4]
    assert isinstance(doc["next_cursor"], str) and doc["next_cursor"]
    one = h.assert_json_ok(stack.request("GET", base + "?limit=1"), 200)
    assert [t["id"] for t in one["results"]] == [ids[-1]]
    big = h.assert_json_ok(stack.request("GET", base + "?limit=500"), 200)
    assert len(big["results"]) == 6 and big["next_cursor"] is None


def test_transaction_list_default_limit_is_50(stack):
    w = h.create_wallet(stack)
    ids = [h.deposit(stack, w["uuid"], 1)["transaction"]["id"] for _ in range(h.LIMIT_DEFAULT + 3)]
    doc = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/"), 200)
    assert [t["id"] for t in doc["results"]] == list(reversed(ids))[:h.LIMIT_DEFAULT]
    assert doc["next_cursor"] is not None


def test_cursor_pagination_walks_every_row_once(stack):
    w = h.create_wallet(stack)
    other = h.create_wallet(stack)
    ids = _fill(stack, w["uuid"], 14, 9)  # 23 rows
    h.deposit(stack, other["uuid"], 5)
    rows, sizes = h.list_all_transactions(stack, w["uuid"], limit=5)
    got = [t["id"] for t in rows]
    assert len(got) == len(set(got)), f"duplicates across pages: {got}"
    assert got == list(reversed(ids)), f"pages {sizes} gave {got}, expected {list(reversed(ids))}"
    assert sizes == [5, 5, 5, 5, 3], sizes

    # With a filter as well: only deposits, 4 per page.
    deposits, sizes = h.list_all_transactions(stack, w["uuid"], query="type=deposit", limit=4)
    want = [t["id"] for t in rows if t["type"] == "DEPOSIT"]
    assert [t["id"] for t in deposits] == want
    assert sizes[:-1] == [4] * (len(sizes) - 1)


def test_pagination_is_stable_while_rows_are_added(stack):
    w = h.create_wallet(stack)
    ids = _fill(stack, w["uuid"], 10, 0)
    base = f"/wallets/{w['uuid']}/transactions/"
    page1 = h.assert_json_ok(stack.request("GET", base + "?limit=4"), 200)
    # New rows arrive between pages: they are newer, so they must not shift older pages.
    _fill(stack, w["uuid"], 3, 0)
    seen = [t["id"] for t in page1["results"]]
    cursor = page1["next_cursor"]
    while cursor:
        page = h.assert_json_ok(stack.request("GET", base + "?limit=4&cursor=" + cursor), 200)
        seen += [t["id"] for t in page["results"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids)), seen


# --- Transaction detail -----------------------------------------------------------------

def test_transaction_detail_and_other_wallet(stack):
    a, b = h.create_wallet(stack), h.create_wallet(stack)
    tx = h.deposit(stack, a["uuid"], 42)["transaction"]
    for path in (f"/wallets/{a['uuid']}/transactions/{tx['id']}/", f"/wallets/{a['uuid']}/transactions/{tx['id']}"):
        assert h.assert_json_ok(stack.request("GET", path), 200) == tx
    h.assert_error(stack.request("GET", f"/wallets/{b['uuid']}/transactions/{tx['id']}/"), 404, h.NOT_FOUND)
    h.assert_error(stack.request("GET", f"/wallets/{a['uuid']}/transactions/{tx['id'] + 1000}/"), 404, h.NOT_FOUND)
    h.assert_error(stack.request("GET", f"/wallets/{h.random_uuid()}/transactions/{tx['id']}/"), 404, h.NOT_FOUND)


# --- Cancel --------------------------------------------------------------------------------

def test_cancel_pending_withdrawal(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 1000)
    tx = h.withdraw(stack, w["uuid"], 600, scheduled_for=h.future())
    resp = stack.request("POST", f"/wallets/{w['uuid']}/transactions/{tx['id']}/cancel")
    canceled = h.assert_json_ok(resp, 200)
    h.assert_transaction(canceled, id=tx["id"], status="CANCELED", failure_reason="canceled",
                         amount=600, type="WITHDRAWAL", executed_at=None)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 1000
    fetched = h.assert_json_ok(stack.request("GET", f"/wallets/{w['uuid']}/transactions/{tx['id']}/"), 200)
    assert fetched["status"] == "CANCELED"

    again = stack.request("POST", f"/wallets/{w['uuid']}/transactions/{tx['id']}/cancel")
    h.assert_error(again, 409, h.NOT_CANCELABLE)

    # A canceled withdrawal is never paid.
    stack.set_bank_mode("success")
    stack.run_processor()
    assert h.get_wallet(stack, w["uuid"])["balance"] == 1000
    assert h.bank_rows(stack.bank_ledger()) == [], stack.bank_ledger()


def test_cancel_with_trailing_slash(stack):
    w = h.create_wallet(stack)
    tx = h.withdraw(stack, w["uuid"], 5, scheduled_for=h.future())
    resp = stack.request("POST", f"/wallets/{w['uuid']}/transactions/{tx['id']}/cancel/")
    assert h.assert_json_ok(resp, 200)["status"] == "CANCELED"


def test_cancel_deposit_is_409(stack):
    w = h.create_wallet(stack)
    tx = h.deposit(stack, w["uuid"], 5)["transaction"]
    resp = stack.request("POST", f"/wallets/{w['uuid']}/transactions/{tx['id']}/cancel")
    h.assert_error(resp, 409, h.NOT_CANCELABLE)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 5


def test_cancel_other_wallets_transaction_is_404(stack):
    a, b = h.create_wallet(stack), h.create_wallet(stack)
    tx = h.withdraw(stack, a["uuid"], 5, scheduled_for=h.future())
    h.assert_error(stack.request("POST", f"/wallets/{b['uuid']}/transactions/{tx['id']}/cancel"), 404, h.NOT_FOUND)
    h.assert_error(stack.request("POST", f"/wallets/{a['uuid']}/transactions/{tx['id'] + 99}/cancel"),
                   404, h.NOT_FOUND)
    still = h.assert_json_ok(stack.request("GET", f"/wallets/{a['uuid']}/transactions/{tx['id']}/"), 200)
    assert still["status"] == "PENDING"


# --- Health and metrics -------------------------------------------------------------

def test_healthz(stack):
    for path in ("/healthz", "/healthz/"):
        resp = stack.request("GET", path)
        assert h.assert_json_ok(resp, 200) == {"status": "ok"}, path


def _metrics(stack):
    resp = stack.request("GET", "/metrics")
    assert resp.status == 200, resp
    assert resp.headers.get("content-type", "").startswith("text/plain"), resp.headers
    h.assert_request_id(resp)
    return h.parse_prometheus(resp.body.decode())


def _route_status_samples(samples, route_part, status):
    """Counter samples with a status label equal to `status` and another label mentioning `route_part`."""
    out = []
    for name, labels, value in samples:
        if name.endswith(("_bucket", "_sum")):
            continue
        status_ok = any(v == str(status) for k, v in labels.items() if k in ("status", "code", "status_code"))
        route_ok = any(route_part in v for k, v in labels.items() if k not in ("status", "code", "status_code"))
        if status_ok and route_ok:
            out.append((name, labels, value))
    return out


def test_metrics_requests_by_route_and_status(stack):
    w = h.create_wallet(stack)
    for _ in range(3):
        h.deposit(stack, w["uuid"], 1)
    stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 0})
    stack.request("GET", f"/wallets/{h.random_uuid()}/")
    samples = _metrics(stack)
    assert stack.request("GET", "/metrics/").status == 200

    created = _route_status_samples(samples, "wallet", 201)
    assert created, "no request counter for wallet creation with status 201"
    deposits = _route_status_samples(samples, "deposit", 200)
    assert deposits, "no request counter for deposit with status 200"
    counters = [s for s in deposits if s[0].endswith(("_total", "_count")) or "request" in s[0]]
    assert any(v == 3 for _, _, v in counters), f"deposit/200 counters: {deposits}"
    assert _route_status_samples(samples, "deposit", 400), "no counter for deposit with status 400"
    # The route label is a template, not the raw path (no unbounded label values).
    for name, labels, _ in samples:
        for v in labels.values():
            assert w["uuid"] not in v, f"a wallet uuid in a metric label: {name} {labels}"

    # Counters count: one more deposit adds one.
    h.deposit(stack, w["uuid"], 1)
    after = _route_status_samples(_metrics(stack), "deposit", 200)
    before_map = {(n, tuple(sorted(l.items()))): v for n, l, v in counters}
    bumped = [(n, l, v) for n, l, v in after if before_map.get((n, tuple(sorted(l.items())))) == v - 1]
    assert bumped, f"no deposit/200 counter went up by one: before {counters}, after {after}"


def test_metrics_latency_histogram(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 1)
    text = stack.request("GET", "/metrics").body.decode()
    samples = h.parse_prometheus(text)
    buckets = [s for s in samples if s[0].endswith("_bucket") and "le" in s[1]]
    assert buckets, "no histogram _bucket{...le=...} samples"
    families = {s[0][: -len("_bucket")] for s in buckets}
    checked = 0
    for family in families:
        sums = [s for s in samples if s[0] == family + "_sum"]
        counts = [s for s in samples if s[0] == family + "_count"]
        assert sums and counts, f"histogram {family} lacks _sum or _count"
        # Group buckets by their other labels; each series is cumulative and ends at +Inf == _count.
        series = {}
        for name, labels, value in buckets:
            if name != family + "_bucket":
                continue
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, []).append((float("inf") if labels["le"] == "+Inf" else float(labels["le"]), value))
        for key, points in series.items():
            points.sort()
            assert points[-1][0] == float("inf"), f"{family}{key} has no le=\"+Inf\" bucket"
            values = [v for _, v in points]
            assert values == sorted(values), f"{family}{key} buckets are not cumulative: {points}"
            count = [v for n, l, v in counts if tuple(sorted(l.items())) == key]
            assert count and count[0] == values[-1], f"{family}{key}: +Inf {values[-1]} != _count {count}"
            checked += 1
        assert any(v > 0 for _, _, v in counts), f"histogram {family} never observed anything"
    assert checked


def test_metrics_transactions_by_type_and_status(stack):
    w = h.create_wallet(stack)
    for _ in range(3):
        h.deposit(stack, w["uuid"], 1)
    for _ in range(2):
        h.withdraw(stack, w["uuid"], 1, scheduled_for=h.future())
    samples = _metrics(stack)

    def find(type_word, status_word):
        hits = []
        for name, labels, value in samples:
            values = [v.lower() for v in labels.values()]
            typed = type_word in name.lower() or type_word in values
            if typed and status_word in values:
                hits.append((name, labels, value))
        return hits

    pending = find("withdrawal", "pending")
    assert pending, "no withdrawals-by-status sample for PENDING"
    assert any(v == 2 for _, _, v in pending), f"PENDING withdrawals: {pending}"
    completed = find("deposit", "completed")
    assert completed, "no transactions-by-type-and-status sample for completed deposits"
    assert any(v == 3 for _, _, v in completed), f"COMPLETED deposits: {completed}"


# --- Idempotency -------------------------------------------------------------------------

def test_idempotent_deposit_replay(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    first = stack.request("POST", path, body={"amount": 250}, headers={"Idempotency-Key": "dep-1"})
    doc = h.assert_json_ok(first, 200)
    assert doc["transaction"]["idempotency_key"] == "dep-1"
    # Another deposit in between: the replay is the stored answer, not a fresh rendering.
    h.deposit(stack, w["uuid"], 1)
    second = stack.request("POST", path, body={"amount": 250}, headers={"Idempotency-Key": "dep-1"})
    assert second.status == first.status
    assert second.body == first.body, f"replay differs:\n{first.body!r}\n{second.body!r}"
    assert h.get_wallet(stack, w["uuid"])["balance"] == 251
    rows, _ = h.list_all_transactions(stack, w["uuid"])
    assert len(rows) == 2
    assert second.headers.get("x-request-id") != first.headers.get("x-request-id")


def test_idempotent_replay_of_a_raw_body(stack):
    """The same key and the same body bytes, sent as raw bytes."""
    w = h.create_wallet(stack)
    body = json.dumps({"amount": 10}).encode()
    hdr = {"Idempotency-Key": "same-body", "Content-Type": "application/json"}
    first = stack.request("POST", f"/wallets/{w['uuid']}/deposit", raw_body=body, headers=hdr)
    h.assert_json_ok(first, 200)
    again = stack.request("POST", f"/wallets/{w['uuid']}/deposit", raw_body=body, headers=hdr)
    assert (again.status, again.body) == (first.status, first.body)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 10


def test_idempotency_key_with_different_body_is_422(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    h.assert_json_ok(stack.request("POST", path, body={"amount": 1}, headers={"Idempotency-Key": "k"}), 200)
    resp = stack.request("POST", path, body={"amount": 2}, headers={"Idempotency-Key": "k"})
    h.assert_error(resp, 422, h.IDEMPOTENCY_KEY_REUSED)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 1


def test_idempotency_key_on_different_path_is_422(stack):
    a, b = h.create_wallet(stack), h.create_wallet(stack)
    key = {"Idempotency-Key": "shared-key"}
    h.assert_json_ok(stack.request("POST", f"/wallets/{a['uuid']}/deposit", body={"amount": 5}, headers=key), 200)
    other_wallet = stack.request("POST", f"/wallets/{b['uuid']}/deposit", body={"amount": 5}, headers=key)
    h.assert_error(other_wallet, 422, h.IDEMPOTENCY_KEY_REUSED)
    other_route = stack.request("POST", f"/wallets/{a['uuid']}/withdraw", body={"amount": 5}, headers=key)
    h.assert_error(other_route, 422, h.IDEMPOTENCY_KEY_REUSED)
    create = stack.request("POST", "/wallets/", headers=key)
    h.assert_error(create, 422, h.IDEMPOTENCY_KEY_REUSED)
    assert h.get_wallet(stack, a["uuid"])["balance"] == 5
    assert h.get_wallet(stack, b["uuid"])["balance"] == 0
    rows, _ = h.list_all_transactions(stack, a["uuid"])
    assert len(rows) == 1
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 2


def test_failed_request_with_key_stores_nothing(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    key = {"Idempotency-Key": "fix-and-retry"}
    h.assert_error(stack.request("POST", path, body={"amount": 0}, headers=key), 400, h.INVALID_AMOUNT)
    ok = stack.request("POST", path, body={"amount": 30}, headers=key)
    assert h.assert_json_ok(ok, 200)["wallet"]["balance"] == 30
    # Same for a withdrawal scheduled in the past, then corrected.
    wkey = {"Idempotency-Key": "fix-withdrawal"}
    wpath = f"/wallets/{w['uuid']}/withdraw"
    bad = stack.request("POST", wpath, body={"amount": 5, "scheduled_for": "2020-01-01T00:00:00Z"}, headers=wkey)
    h.assert_error(bad, 400, h.INVALID_SCHEDULED_FOR)
    good = stack.request("POST", wpath, body={"amount": 5, "scheduled_for": h.future()}, headers=wkey)
    h.assert_json_ok(good, 201)
    # A 404 stores nothing either: the key is free for the real wallet afterwards.
    nkey = {"Idempotency-Key": "after-404"}
    h.assert_error(stack.request("POST", f"/wallets/{h.random_uuid()}/deposit", body={"amount": 1}, headers=nkey),
                   404, h.NOT_FOUND)
    h.assert_json_ok(stack.request("POST", path, body={"amount": 1}, headers=nkey), 200)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 31


def test_idempotent_wallet_creation(stack):
    key = {"Idempotency-Key": "create-once"}
    first = stack.request("POST", "/wallets/", headers=key)
    doc = h.assert_json_ok(first, 201)
    second = stack.request("POST", "/wallets/", headers=key)
    assert second.status == 201
    assert second.body == first.body
    assert second.json()["uuid"] == doc["uuid"]
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1
    other = h.assert_json_ok(stack.request("POST", "/wallets/", headers={"Idempotency-Key": "create-twice"}), 201)
    assert other["uuid"] != doc["uuid"]


def test_withdrawal_replayed_after_scheduled_for_passed(stack):
    w = h.create_wallet(stack)
    when_dt = (h.utc_now() + dt.timedelta(seconds=3)).replace(microsecond=0)
    when = h.iso_z(when_dt)
    body = {"amount": 77, "scheduled_for": when}
    key = {"Idempotency-Key": "wd-replay"}
    first = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body=body, headers=key)
    h.assert_json_ok(first, 201)
    time.sleep(max(0.0, (when_dt - h.utc_now()).total_seconds()) + 1.5)
    # Without the key the same body is now refused: the time really passed.
    late = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body=body)
    h.assert_error(late, 400, h.INVALID_SCHEDULED_FOR, field="scheduled_for")
    replay = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body=body, headers=key)
    assert replay.status == 201, replay
    assert replay.body == first.body
    rows, _ = h.list_all_transactions(stack, w["uuid"])
    assert len(rows) == 1


def test_invalid_idempotency_keys_are_400(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    body = b'{"amount": 1}'
    bad_keys = {
        "empty": b"",
        "256 chars": b"k" * 256,
        "control char": b"abc\x01def",
        "DEL": b"abc\x7fdef",
        "tab inside": b"abc\tdef",
        "non-ASCII UTF-8": "clé-ñ".encode("utf-8"),
        "latin-1 byte": b"cl\xe9",
    }
    problems = []
    for label, key in bad_keys.items():
        for route, rbody in ((path, body), ("/wallets/", b"")):
            headers = [("Content-Type", "application/json"), ("Idempotency-Key", key)] if rbody else \
                [("Idempotency-Key", key)]
            resp = h.raw_request(stack.url, "POST", route, headers=headers, body=rbody)
            try:
                h.assert_error(resp, 400, h.INVALID_IDEMPOTENCY_KEY)
            except AssertionError as e:
                problems.append(f"{label} on {route}: {e}")
    assert not problems, "\n".join(problems)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 0
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1
    # The boundaries on the accepted side: 1 and 255 printable characters, every printable class.
    for key in ("k", "k" * 255, "A-z_0.9~!#$%&'*+^`|:/?=@[]{}()<>,;\"\\ x"):
        resp = stack.request("POST", path, body={"amount": 1}, headers={"Idempotency-Key": key})
        h.assert_json_ok(resp, 200)
    assert h.get_wallet(stack, w["uuid"])["balance"] == 3


def test_concurrent_requests_with_one_key_make_one_effect(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"

    def call(_):
        client = h.Client(stack.url)
        try:
            return client.request("POST", path, body={"amount": 999}, headers={"Idempotency-Key": "race"})
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(call, range(32)))
    statuses = sorted({a.status for a in answers})
    assert statuses == [200], f"statuses {statuses}: {[a for a in answers if a.status != 200][:3]}"
    bodies = {a.body for a in answers}
    assert len(bodies) == 1, f"{len(bodies)} different bodies: {list(bodies)[:3]}"
    assert h.get_wallet(stack, w["uuid"])["balance"] == 999
    rows, _ = h.list_all_transactions(stack, w["uuid"])
    assert len(rows) == 1


def test_concurrent_wallet_creation_with_one_key(stack):
    def call(_):
        client = h.Client(stack.url)
        try:
            return client.request("POST", "/wallets/", headers={"Idempotency-Key": "one-wallet"})
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(call, range(32)))
    assert {a.status for a in answers} == {201}, [a for a in answers if a.status != 201][:3]
    assert len({a.body for a in answers}) == 1
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1


# --- Request ids and logs ---------------------------------------------------------------

def test_request_id_on_every_response(stack):
    w = h.create_wallet(stack)
    answers = [
        stack.request("GET", f"/wallets/{w['uuid']}/"),                                        # 200
        stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 1}),            # 200
        stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": -1}),           # 400
        stack.request("GET", f"/wallets/{h.random_uuid()}/"),                                  # 404 responder
        stack.request("GET", "/no/such/path"),                                                 # 404
        stack.request("DELETE", f"/wallets/{w['uuid']}/"),                                     # 405
        stack.request("POST", f"/wallets/{w['uuid']}/deposit",                                 # 413 nginx
                      raw_body=b" " * (h.BODY_BYTES_MAX + 10), headers={"Content-Type": "application/json"}),
        stack.request("GET", "/healthz"),
        stack.request("GET", "/metrics"),
    ]
    assert [a.status for a in answers] == [200, 200, 400, 404, 404, 405, 413, 200, 200], \
        [(a.status, a.body[:100]) for a in answers]
    ids = [h.assert_request_id(a) for a in answers]
    assert len(set(ids)) == len(ids), f"request ids repeat: {ids}"
    for rid in ids:
        assert 8 <= len(rid) <= 128 and rid.isprintable() and " " not in rid, rid


def test_security_headers_on_every_response(stack):
    """openapi.yaml: Cache-Control: no-store and X-Content-Type-Options: nosniff on every response."""
    w = h.create_wallet(stack)
    answers = [
        stack.request("GET", f"/wallets/{w['uuid']}/"),
        stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 0}),
        stack.request("GET", "/nowhere"),
        stack.request("POST", "/wallets/", raw_body=b" " * (h.BODY_BYTES_MAX + 1),
                      headers={"Content-Type": "application/json"}),
        stack.request("GET", "/metrics"),
    ]
    for a in answers:
        assert a.headers.get("cache-control") == "no-store", (a.status, a.headers)
        assert a.headers.get("x-content-type-options") == "nosniff", (a.status, a.headers)


def test_request_log_line_carries_request_id(stack):
    w = h.create_wallet(stack)
    resp = stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 1234})
    doc = h.assert_json_ok(resp, 200)
    rid = resp.headers["x-request-id"]
    lines = h.log_lines_with(stack, rid)
    assert lines, f"request id {rid} not in wallet-fcgi.log:\n{stack.logs('wallet-fcgi.log')[-2000:]}"

    def has(line, *candidates):
        values = [str(v) for v in h.flatten_values(line)]
        return any(c in values for c in candidates)

    request_lines = [l for l in lines if has(l, "POST") and has(l, "200")]
    assert request_lines, f"no request line (method POST, status 200) for {rid}: {lines}"
    line = request_lines[0]
    assert any("deposit" in str(v) for v in h.flatten_values(line)), f"route missing: {line}"
    assert any(("duration" in k or "latency" in k or k.endswith("_ms") or k.endswith("_us"))
               and isinstance(v, (int, float)) for k, v in line.items()), f"no duration in {line}"

    # The audit line of the money movement: wallet, transaction, kind, amount, balance after, request id.
    tx = doc["transaction"]
    audit = [l for l in lines if has(l, w["uuid"]) and has(l, str(tx["id"])) and has(l, "1234")]
    assert audit, f"no audit line for deposit {tx['id']} carrying request id {rid}: {lines}"
    second = stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 1234})
    rid2 = second.headers["x-request-id"]
    tx2 = second.json()["transaction"]
    audit2 = [l for l in h.log_lines_with(stack, rid2) if has(l, str(tx2["id"])) and has(l, "2468")]
    assert audit2, f"audit line of the second deposit lacks balance after (2468): {h.log_lines_with(stack, rid2)}"
    assert any(has(l, "deposit", "DEPOSIT") for l in audit2), f"audit line lacks its kind: {audit2}"


def test_error_request_is_logged_with_its_status(stack):
    resp = stack.request("GET", f"/wallets/{h.random_uuid()}/")
    assert resp.status == 404
    rid = resp.headers["x-request-id"]
    lines = h.log_lines_with(stack, rid)
    assert any("404" in [str(v) for v in h.flatten_values(l)] for l in lines), \
        f"no log line with status 404 for {rid}: {lines}"
