"""Events, the feed, references and webhooks, end to end: the real responder
behind nginx, the real processor against the mock bank, real notifier
processes delivering to receivers on loopback (README, "Events and
webhooks")."""

import collections
import hashlib
import hmac
import http.server
import json
import signal
import threading
import time
import urllib.parse

import pytest

from .helpers import assert_error, assert_json_ok, create_wallet, deposit, future, withdraw


# --- helpers ---------------------------------------------------------------------------

def feed(stack, after=0, limit=500, **filters):
    """Every event after `after`, following next_after until it is null."""
    events = []
    while True:
        query = urllib.parse.urlencode({"after": after, "limit": limit, **filters})
        doc = assert_json_ok(stack.request("GET", f"/events?{query}"), 200)
        assert set(doc) == {"results", "next_after"}, doc
        events += doc["results"]
        if doc["next_after"] is None:
            return events
        assert doc["next_after"] == doc["results"][-1]["id"], doc["next_after"]
        after = doc["next_after"]


def types_of(events, transaction_id):
    return [e["type"] for e in events if e["type"] != "wallet.created" and e["data"]["id"] == transaction_id]


class Receiver:
    """A webhook receiver on loopback. `script(event_id, attempt)` gives the
    status to answer (or "hang" to never answer within the notifier's
    timeout). Verifies every signature with the endpoint's secret, records
    every delivery and the largest number of concurrent deliveries of one event."""

    def __init__(self, script=lambda event_id, attempt: 204, hang_seconds=3.0):
        self.script = script
        self.hang_seconds = hang_seconds
        self.secret = None
        self.lock = threading.Lock()
        self.deliveries = []            # (event_id, status answered, body dict)
        self.attempts = collections.Counter()
        self.in_flight = collections.Counter()
        self.max_in_flight = 0
        self.bad_signatures = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = int(self.headers["Wallet-Event-Id"])
                receiver.check_signature(self.headers.get("Wallet-Signature", ""), body, self.headers)
                with receiver.lock:
                    receiver.attempts[event_id] += 1
                    attempt = receiver.attempts[event_id]
                    receiver.in_flight[event_id] += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight[event_id])
                try:
                    status = receiver.script(event_id, attempt)
                    if status == "hang":
                        time.sleep(receiver.hang_seconds)
                        status = 204
                    elif isinstance(status, tuple):
                        time.sleep(status[1])
                        status = status[0]
                    with receiver.lock:
                        receiver.deliveries.append((event_id, status, json.loads(body)))
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                finally:
                    with receiver.lock:
                        receiver.in_flight[event_id] -= 1

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check_signature(self, header, body, headers):
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        ok = False
        if self.secret and "t" in parts and "v1" in parts:
            expected = hmac.new(self.secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300
        ok = ok and headers.get("Content-Type") == "application/json" and headers.get("User-Agent", "").startswith("wallet-notifier/")
        if not ok:
            with self.lock:
                self.bad_signatures.append(header)

    def delivered_ids(self):
        with self.lock:
            return [event_id for event_id, status, _ in self.deliveries if 200 <= status < 300]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(*args, **kwargs):
        r = Receiver(*args, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def subscribe(stack, receiver, events=("*",)):
    resp = stack.request("POST", "/webhook-endpoints", body={"url": receiver.url, "events": list(events)})
    doc = assert_json_ok(resp, 201)
    assert set(doc) == {"id", "url", "events", "secret", "created_at"}, doc
    assert doc["secret"].startswith("whsec_")
    receiver.secret = doc["secret"]
    return doc


def run_notifier_until(stack, condition, seconds=20, extra_env=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = stack.run_notifier(extra_env=extra_env)
        assert result.returncode == 0, result.stderr
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached; notifier log:\n" + stack.logs("notifier.log")[-3000:])


# --- the outbox and the feed -------------------------------------------------------------

def test_every_event_type_once_through_the_real_processor(stack_factory):
    s = stack_factory(extra_env={"WALLET_RETRY_BASE_SECONDS": "0", "WALLET_MAX_RETRIES": "1",
                                 "WALLET_UNKNOWN_RECHECK_SECONDS": "3600"})
    wallet = create_wallet(s)["uuid"]
    dep = deposit(s, wallet, 10_000)["transaction"]
    # Retried once (the bank fails the key's first call), then paid.
    s.set_bank_mode("fail-first 1")
    retried = withdraw(s, wallet, 100)["id"]
    s.run_processor()
    s.run_processor()
    # Failed on both attempts: refunded.
    s.set_bank_mode("fail")
    failed = withdraw(s, wallet, 200)["id"]
    s.run_processor()
    s.run_processor()
    # Unknown on both attempts: held.
    s.set_bank_mode("http500")
    unknown = withdraw(s, wallet, 300)["id"]
    s.run_processor()
    s.run_processor()
    canceled = withdraw(s, wallet, 400, scheduled_for=future())["id"]
    assert_json_ok(s.request("POST", f"/wallets/{wallet}/transactions/{canceled}/cancel"), 200)

    events = feed(s)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["type"] for e in events if e["type"] == "wallet.created"] == ["wallet.created"]
    assert types_of(events, dep["id"]) == ["deposit.completed"]
    assert types_of(events, retried) == ["withdrawal.scheduled", "withdrawal.processing", "withdrawal.retrying",
                                         "withdrawal.completed"]
    assert types_of(events, failed) == ["withdrawal.scheduled", "withdrawal.processing", "withdrawal.retrying",
                                        "withdrawal.failed"]
    assert types_of(events, unknown) == ["withdrawal.scheduled", "withdrawal.processing", "withdrawal.retrying",
                                         "withdrawal.outcome_unknown"]
    assert types_of(events, canceled) == ["withdrawal.scheduled", "withdrawal.canceled"]
    assert {e["type"] for e in events} == {
        "wallet.created", "deposit.completed", "withdrawal.scheduled", "withdrawal.processing", "withdrawal.retrying",
        "withdrawal.outcome_unknown", "withdrawal.completed", "withdrawal.failed", "withdrawal.canceled"}
    by_type = {e["type"]: e for e in events if e["data"].get("id") in (failed, retried, unknown)}
    assert by_type["withdrawal.failed"]["data"]["refund"]["amount"] == 200
    assert by_type["withdrawal.retrying"]["data"]["next_attempt_at"]
    assert by_type["withdrawal.outcome_unknown"]["data"]["failure_reason"] == "bank_outcome_unknown"
    # The data is the transaction as the API shows it now, for the final ones.
    final = assert_json_ok(s.request("GET", f"/wallets/{wallet}/transactions/{retried}/"), 200)
    completed = next(e for e in events if e["type"] == "withdrawal.completed")["data"]
    assert {k: completed[k] for k in final} == final
    # Filters.
    assert [e["type"] for e in feed(s, type="withdrawal.canceled")] == ["withdrawal.canceled"]
    assert len(feed(s, wallet=wallet)) == len(events)
    assert feed(s, wallet="3f1c9a2e-7b4d-4c8e-9f10-2a6b5d8e4c71") == []
    for query, field in [("type=nope", "type"), ("limit=0", "limit"), ("after=-3", "after"), ("wallet=x", "wallet")]:
        assert_error(s.request("GET", f"/events?{query}"), 400, "invalid_query", field=field)


def test_feed_paging_under_concurrent_writes_has_no_gap_and_no_duplicate(stack):
    wallets = [create_wallet(stack)["uuid"] for _ in range(4)]
    stop = threading.Event()
    errors = []

    def writer(wallet):
        try:
            while not stop.is_set():
                resp = stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 1})
                assert resp.status == 200, resp.body
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in wallets]
    for t in threads:
        t.start()
    seen, after, deadline = [], 0, time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            doc = assert_json_ok(stack.request("GET", f"/events?after={after}&limit=7"), 200)
            seen += [e["id"] for e in doc["results"]]
            if doc["results"]:
                after = doc["results"][-1]["id"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    seen += [e["id"] for e in feed(stack, after=after)]
    everything = [row[0] for row in stack.sqlite("SELECT id FROM events ORDER BY id")]
    assert seen == everything, "the reader saw every committed event once, in order"
    assert len(everything) > 100


def test_crash_every_committed_change_has_its_event_and_no_event_lacks_its_change(stack):
    wallet = create_wallet(stack)["uuid"]
    stop = threading.Event()

    def writer(n):
        while not stop.is_set():
            try:
                stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 1}, timeout=3)
                stack.request("POST", f"/wallets/{wallet}/withdraw", body={"amount": 1, "scheduled_for": future()}, timeout=3)
            except Exception:  # noqa: BLE001 - the responder dies under us on purpose
                pass

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stack.kill_responder(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    assert stack.sqlite("SELECT count(*) FROM transactions")[0][0] > 10
    orphans = stack.sqlite(
        "SELECT count(*) FROM transactions t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.transaction_id = t.id)")
    assert orphans == [(0,)]
    expected = stack.sqlite(
        "SELECT count(*) FROM transactions WHERE type = 'DEPOSIT'")[0][0] + stack.sqlite(
        "SELECT count(*) FROM transactions WHERE type = 'WITHDRAWAL'")[0][0]
    assert stack.sqlite("SELECT count(*) FROM events WHERE type <> 'wallet.created'")[0][0] == expected
    assert stack.sqlite(
        "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.transaction_id = l.transaction_id "
        "AND e.type = 'deposit.completed')") == [(0,)]
    assert stack.sqlite(
        "SELECT count(*) FROM events e WHERE e.transaction_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = e.transaction_id)") == [(0,)]


# --- references -------------------------------------------------------------------------

def test_reference_reaches_the_bank_and_the_refund_and_filters_the_list(stack_factory):
    s = stack_factory(extra_env={"WALLET_MAX_RETRIES": "0"})
    wallet = create_wallet(s)["uuid"]
    resp = s.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 1000, "reference": "top-up 1"})
    assert assert_json_ok(resp, 200)["transaction"]["reference"] == "top-up 1"
    paid = assert_json_ok(s.request("POST", f"/wallets/{wallet}/withdraw", body={"amount": 100, "reference": "order-981"}), 201)
    plain = withdraw(s, wallet, 50)
    assert plain["reference"] is None
    s.run_processor()
    ledger = s.bank_ledger()
    assert {row.reference for row in ledger} == {"order-981", f"withdrawal-{plain['id']}"}
    # Refused by the bank: refunded, and the refund's ledger row leads to the reference.
    s.set_bank_mode("fail")
    refunded = assert_json_ok(s.request("POST", f"/wallets/{wallet}/withdraw", body={"amount": 70, "reference": "order-982"}), 201)
    s.run_processor()
    rows = s.sqlite("SELECT t.reference FROM ledger l JOIN transactions t ON t.id = l.transaction_id WHERE l.kind = 'REFUND'")
    assert rows == [("order-982",)]
    failed = next(e for e in feed(s, type="withdrawal.failed"))
    assert failed["data"]["reference"] == "order-982" and failed["data"]["refund"]["amount"] == 70
    listed = assert_json_ok(s.request("GET", f"/wallets/{wallet}/transactions/?reference=order-981"), 200)
    assert [t["id"] for t in listed["results"]] == [paid["id"]]
    assert_json_ok(s.request("GET", f"/wallets/{wallet}/transactions/?reference=nothing"), 200)["results"] == []
    assert_error(s.request("GET", f"/wallets/{wallet}/transactions/?reference="), 400, "invalid_query", field="reference")
    for bad in ["", "x" * 129, "caf\u00e9", 7, "tab\there"]:
        assert_error(s.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 1, "reference": bad}), 400,
                     "invalid_reference", field="reference")
    assert s.walletctl("audit", "verify").returncode == 0
    assert refunded["reference"] == "order-982"


# --- webhooks ---------------------------------------------------------------------------

def test_webhook_endpoints_api(stack):
    created = assert_json_ok(stack.request("POST", "/webhook-endpoints",
                                           body={"url": "https://hooks.example.com/w", "events": ["withdrawal.*"]},
                                           headers={"Idempotency-Key": "ep-1"}), 201)
    replay = assert_json_ok(stack.request("POST", "/webhook-endpoints/",
                                          body={"url": "https://hooks.example.com/w", "events": ["withdrawal.*"]},
                                          headers={"Idempotency-Key": "ep-1"}), 201)
    assert replay == created
    listed = assert_json_ok(stack.request("GET", "/webhook-endpoints"), 200)
    assert listed == {"results": [{k: created[k] for k in ("id", "url", "events", "created_at")}]}
    assert "whsec_" not in json.dumps(stack.sqlite("SELECT * FROM webhook_endpoints"))
    assert "whsec_" not in json.dumps(stack.sqlite("SELECT * FROM idempotency"))
    for body, code in [({"url": "ftp://x.example/", "events": ["*"]}, "invalid_url"),
                       ({"url": "https://user@x.example/", "events": ["*"]}, "invalid_url"),
                       ({"url": "https://x.example/" + "a" * 2048, "events": ["*"]}, "invalid_url"),
                       ({"url": "https://x.example/", "events": ["refund.*"]}, "invalid_events"),
                       ({"url": "https://x.example/", "events": []}, "invalid_events")]:
        assert_error(stack.request("POST", "/webhook-endpoints", body=body), 400, code)
    resp = stack.request("DELETE", f"/webhook-endpoints/{created['id']}")
    assert resp.status == 204 and resp.body == b""
    assert_error(stack.request("DELETE", f"/webhook-endpoints/{created['id']}"), 404, "not_found")
    assert_error(stack.request("DELETE", "/webhook-endpoints/abc"), 404, "not_found")
    assert_error(stack.request("PUT", "/webhook-endpoints"), 405, "method_not_allowed")
    assert assert_json_ok(stack.request("GET", "/webhook-endpoints/"), 200) == {"results": []}


def test_webhook_endpoints_refuse_http_and_private_addresses_in_production(stack_factory):
    s = stack_factory(extra_env={"WALLET_WEBHOOK_ALLOW_HTTP": "0"})
    for url in ["http://hooks.example.com/", "https://127.0.0.1/", "https://localhost/x", "https://10.0.0.8/",
                "https://[::1]/", "https://169.254.169.254/", "https://[fe80::1]/", "https://192.168.0.1/"]:
        assert_error(s.request("POST", "/webhook-endpoints", body={"url": url, "events": ["*"]}), 400, "invalid_url", field="url")
    assert_json_ok(s.request("POST", "/webhook-endpoints", body={"url": "https://hooks.example.com/", "events": ["*"]}), 201)


def test_webhook_delivery_signed_in_order_and_exactly_the_subscribed_types(stack, receivers):
    everything = receivers()
    deposits_only = receivers()
    subscribe(stack, everything)
    subscribe(stack, deposits_only, events=["deposit.*"])
    wallet = create_wallet(stack)["uuid"]
    for amount in (1, 2, 3):
        deposit(stack, wallet, amount)
    withdraw(stack, wallet, 1, scheduled_for=future())
    expected = [e["id"] for e in feed(stack)]
    run_notifier_until(stack, lambda: everything.delivered_ids() == expected
                       and len(deposits_only.delivered_ids()) == 3)
    assert everything.bad_signatures == [] and deposits_only.bad_signatures == []
    assert [body["type"] for _, _, body in deposits_only.deliveries] == ["deposit.completed"] * 3
    bodies = {body["id"]: body for _, _, body in everything.deliveries}
    assert bodies == {e["id"]: e for e in feed(stack)}, "the delivered body is the feed's event"
    rows = stack.sqlite("SELECT state, attempts, last_status FROM webhook_deliveries")
    assert rows and all(row == ("delivered", 1, 204) for row in rows), rows


def test_a_failing_receiver_holds_back_only_its_own_later_events_and_recovers_in_order(stack, receivers):
    down = {"on": True}
    flaky = receivers(lambda event_id, attempt: 503 if down["on"] else 204)
    healthy = receivers()
    subscribe(stack, flaky)
    subscribe(stack, healthy)
    wallet = create_wallet(stack)["uuid"]
    for amount in (1, 2, 3):
        deposit(stack, wallet, amount)
    expected = [e["id"] for e in feed(stack)]
    env = {"WALLET_WEBHOOK_RETRY_BASE_SECONDS": "0"}
    run_notifier_until(stack, lambda: healthy.delivered_ids() == expected, extra_env=env)
    stack.run_notifier(extra_env=env)
    # The flaky one saw only its first event, again and again: the later ones wait.
    with flaky.lock:
        tried = {event_id for event_id, _, _ in flaky.deliveries}
    assert tried == {expected[0]}
    failing = stack.sqlite("SELECT event_id, attempts, last_status, last_error FROM webhook_deliveries "
                           "WHERE state = 'pending' AND attempts > 0")
    assert len(failing) == 1 and failing[0][0] == expected[0] and failing[0][2] == 503, failing
    listing = stack.walletctl("webhooks", "deliveries", "--failed", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)[0]["last_status"] == 503
    metrics = stack.request("GET", "/metrics").body.decode()
    assert "wallet_webhook_deliveries_failing 1" in metrics
    down["on"] = False
    run_notifier_until(stack, lambda: flaky.delivered_ids() == expected, extra_env=env)
    assert flaky.bad_signatures == []


def test_a_pass_ends_on_its_time_and_the_next_goes_on_in_order(stack, receivers):
    """A pass stops claiming and sending once WALLET_NOTIFY_PASS_SECONDS are up (here 1 s,
    against a receiver that takes 0.4 s per delivery): it exits 0 having delivered a part,
    gives back the rest of its window (no lease left behind), and the next passes deliver
    the rest, in order."""
    slow = receivers(lambda event_id, attempt: (204, 0.4))
    subscribe(stack, slow)
    wallet = create_wallet(stack)["uuid"]
    for amount in range(1, 9):
        deposit(stack, wallet, amount)
    expected = [e["id"] for e in feed(stack)]
    env = {"WALLET_NOTIFY_PASS_SECONDS": "1"}
    first = stack.run_notifier(extra_env=env)
    assert first.returncode == 0, first.stderr
    delivered = slow.delivered_ids()
    assert 1 <= len(delivered) < len(expected), delivered
    assert delivered == expected[:len(delivered)]
    held = stack.sqlite("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending' AND lease_until > ?",
                        (int(time.time() * 1e6),))
    assert held == [(0,)], "the pass kept leases on deliveries it gave back"
    run_notifier_until(stack, lambda: slow.delivered_ids() == expected, extra_env=env)
    assert slow.bad_signatures == []


def test_a_receiver_that_never_answers_times_out_and_backs_off(stack, receivers):
    silent = receivers(lambda event_id, attempt: "hang", hang_seconds=3)
    subscribe(stack, silent)
    create_wallet(stack)
    env = {"WALLET_WEBHOOK_TIMEOUT_MS": "500", "WALLET_WEBHOOK_RETRY_BASE_SECONDS": "60"}
    started = time.time()
    result = stack.run_notifier(extra_env=env)
    assert result.returncode == 0
    assert time.time() - started < 3, "the notifier gave up at its timeout"
    (attempts, next_at, status, error), = stack.sqlite(
        "SELECT attempts, next_attempt_at, last_status, last_error FROM webhook_deliveries")
    assert attempts == 1 and status is None and "imeout" in error, error
    # Backoff: base 60 s with jitter in [0.5, 1.5).
    assert 25 <= next_at / 1e6 - time.time() <= 95
    # Not due again yet: a second pass sends nothing.
    stack.run_notifier(extra_env=env)
    assert stack.sqlite("SELECT attempts FROM webhook_deliveries") == [(1,)]
    result = stack.walletctl("webhooks", "redeliver", "1")
    assert result.returncode != 0, "still pending: nothing to queue again"


def test_given_up_after_the_give_up_age_then_the_endpoint_moves_on_and_redeliver(stack, receivers):
    state = {"status": 500}
    receiver = receivers(lambda event_id, attempt: state["status"])
    subscribe(stack, receiver)
    wallet = create_wallet(stack)["uuid"]
    deposit(stack, wallet, 5)
    env = {"WALLET_WEBHOOK_GIVE_UP_SECONDS": "0", "WALLET_WEBHOOK_RETRY_BASE_SECONDS": "0"}
    run_notifier_until(stack, lambda: stack.sqlite("SELECT count(*) FROM webhook_deliveries WHERE state = 'failed'")[0][0] == 2,
                       extra_env=env)
    assert "wallet_webhook_deliveries_failed 2" in stack.request("GET", "/metrics").body.decode()
    first = stack.sqlite("SELECT min(id) FROM webhook_deliveries")[0][0]
    state["status"] = 200
    assert stack.walletctl("webhooks", "redeliver", str(first)).returncode == 0
    run_notifier_until(stack, lambda: len(receiver.delivered_ids()) == 1)


def test_two_notifiers_never_send_one_delivery_at_once(stack, receivers):
    slow = receivers(lambda event_id, attempt: (204, 0.05))
    subscribe(stack, slow)
    wallet = create_wallet(stack)["uuid"]
    for amount in range(1, 31):
        deposit(stack, wallet, amount)
    expected = [e["id"] for e in feed(stack)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sorted(set(slow.delivered_ids())) != expected:
        procs = [stack.spawn_notifier() for _ in range(3)]
        for p in procs:
            assert p.wait(30) == 0
    assert sorted(set(slow.delivered_ids())) == expected
    assert slow.max_in_flight == 1, "one delivery was in flight twice at once"
    assert slow.delivered_ids() == sorted(slow.delivered_ids()), "in event order"


def test_deleting_an_endpoint_stops_its_deliveries(stack, receivers):
    receiver = receivers()
    endpoint = subscribe(stack, receiver)
    wallet = create_wallet(stack)["uuid"]
    stack.run_notifier()
    deposit(stack, wallet, 1)
    assert stack.request("DELETE", f"/webhook-endpoints/{endpoint['id']}").status == 204
    stack.run_notifier()
    assert len(receiver.delivered_ids()) == 1, "only the event before the deletion"


def test_the_notifier_refuses_plain_http_and_private_peers_in_production(stack, receivers):
    # Created while development allowed it (the stack's WALLET_WEBHOOK_ALLOW_HTTP=1);
    # a notifier running with the production setting refuses to send there.
    receiver = receivers()
    subscribe(stack, receiver)
    create_wallet(stack)
    assert stack.run_notifier(extra_env={"WALLET_WEBHOOK_ALLOW_HTTP": "0"}).returncode == 0
    assert receiver.deliveries == []
    (attempts, error), = stack.sqlite("SELECT attempts, last_error FROM webhook_deliveries")
    assert attempts == 1 and error, error
