"""Every error case of the contract (openapi.yaml): status, the JSON error shape, the code, the field,
and that nothing leaks or changes."""

import concurrent.futures
import datetime as dt
import json
import time

from . import helpers as h

JSON = {"Content-Type": "application/json"}


def _unchanged(stack, wallet_uuid, balance, tx_count):
    assert h.get_wallet(stack, wallet_uuid)["balance"] == balance
    rows, _ = h.list_all_transactions(stack, wallet_uuid)
    assert len(rows) == tx_count, f"{len(rows)} transactions, expected {tx_count}"


# --- Amounts -----------------------------------------------------------------------------

BAD_AMOUNT_BODIES = {
    "zero": '{"amount": 0}',
    "minus one": '{"amount": -1}',
    "minus zero": '{"amount": -0}',
    "minus max": '{"amount": -1000000000000000}',
    "fraction": '{"amount": 1.5}',
    "integral fraction 1.0": '{"amount": 1.0}',
    "exponent 1e3": '{"amount": 1e3}',
    "exponent 1E3": '{"amount": 1E3}',
    "exponent 1e+3": '{"amount": 1e+3}',
    "string": '{"amount": "100"}',
    "true": '{"amount": true}',
    "false": '{"amount": false}',
    "null": '{"amount": null}',
    "array": '{"amount": [100]}',
    "object": '{"amount": {"value": 100}}',
    "missing": '{}',
    "missing, other field": '{"amt": 100}',
    "10^15 + 1": '{"amount": 1000000000000001}',
    "2^63": '{"amount": 9223372036854775808}',
    "2^64 + 1": '{"amount": 18446744073709551617}',
    "30 digits": '{"amount": 123456789012345678901234567890}',
    "1e400": '{"amount": 1e400}',
}


def test_bad_amounts_are_400_invalid_amount(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 10)
    soft = h.Soft()
    for label, body in BAD_AMOUNT_BODIES.items():
        raw = body.encode()
        dep = stack.request("POST", f"/wallets/{w['uuid']}/deposit", raw_body=raw, headers=JSON)
        soft.check(f"deposit {label} {body}", h.assert_error, dep, 400, h.INVALID_AMOUNT, field="amount")
        wd_raw = raw[:-1] + b', "scheduled_for": "' + h.future().encode() + b'"}' if body != "{}" else \
            b'{"scheduled_for": "' + h.future().encode() + b'"}'
        wd = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", raw_body=wd_raw, headers=JSON)
        soft.check(f"withdraw {label} {wd_raw!r}", h.assert_error, wd, 400, h.INVALID_AMOUNT, field="amount")
    soft.check("nothing changed", _unchanged, stack, w["uuid"], 10, 1)
    soft.done()


def test_amount_bounds_accepted(stack):
    w = h.create_wallet(stack)
    one = h.deposit(stack, w["uuid"], 1)
    assert one["transaction"]["amount"] == 1
    top = h.deposit(stack, w["uuid"], h.AMOUNT_MAX)
    assert top["transaction"]["amount"] == h.AMOUNT_MAX
    assert top["wallet"]["balance"] == h.AMOUNT_MAX + 1
    tx = h.withdraw(stack, w["uuid"], h.AMOUNT_MAX, scheduled_for=h.future())
    assert tx["amount"] == h.AMOUNT_MAX
    h.withdraw(stack, w["uuid"], 1, scheduled_for=h.future())
    # An amount above the balance is not an amount error: withdrawals do not check funds.
    h.withdraw(stack, w["uuid"], h.AMOUNT_MAX, scheduled_for=h.future())


def test_balance_overflow_is_422_and_changes_nothing(stack):
    """2^63-1 = 9223 * 10^15 + 372036854775807: 9223 maximal deposits through the API
    (concurrently, keep-alive), then the edge on both sides."""
    w = h.create_wallet(stack)
    bystander = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    deposits = h.BALANCE_MAX // h.AMOUNT_MAX
    assert deposits == 9223
    threads = 16
    started = time.monotonic()

    def worker(n):
        client, statuses = h.Client(stack.url), {}
        try:
            for _ in range(n):
                r = client.request("POST", path, body={"amount": h.AMOUNT_MAX})
                statuses[r.status] = statuses.get(r.status, 0) + 1
        finally:
            client.close()
        return statuses

    shares = [deposits // threads + (1 if i < deposits % threads else 0) for i in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, shares))
    elapsed = time.monotonic() - started
    print(f"\n{deposits} deposits of 10^15 took {elapsed:.1f} s ({deposits / elapsed:.0f}/s)")
    total = {}
    for r in results:
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
    assert total == {200: deposits}, total
    balance = deposits * h.AMOUNT_MAX
    assert h.get_wallet(stack, w["uuid"])["balance"] == balance
    tx_count = stack.sqlite("SELECT COUNT(*) FROM transactions")[0][0]
    ledger_count = stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0]
    before = h.get_wallet(stack, w["uuid"])

    # One more maximal deposit would pass 2^63-1.
    resp = stack.request("POST", path, body={"amount": h.AMOUNT_MAX})
    h.assert_error(resp, 422, h.BALANCE_OVERFLOW)
    with_key = stack.request("POST", path, body={"amount": h.AMOUNT_MAX}, headers={"Idempotency-Key": "ovf"})
    h.assert_error(with_key, 422, h.BALANCE_OVERFLOW)
    assert h.get_wallet(stack, w["uuid"]) == before
    assert stack.sqlite("SELECT COUNT(*) FROM transactions")[0][0] == tx_count
    assert stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0] == ledger_count

    # Exactly 2^63-1 is fine.
    rest = h.BALANCE_MAX - balance
    assert rest == 372036854775807
    top = h.deposit(stack, w["uuid"], rest)
    assert top["wallet"]["balance"] == h.BALANCE_MAX
    assert h.get_wallet(stack, w["uuid"])["balance"] == h.BALANCE_MAX
    # And one unit more is not; the key of the refused request is still free.
    h.assert_error(stack.request("POST", path, body={"amount": 1}), 422, h.BALANCE_OVERFLOW)
    h.assert_error(stack.request("POST", path, body={"amount": 1}, headers={"Idempotency-Key": "ovf"}),
                   422, h.BALANCE_OVERFLOW)
    assert h.get_wallet(stack, w["uuid"])["balance"] == h.BALANCE_MAX
    # Other wallets are unaffected, and the key works elsewhere once nothing was stored.
    h.assert_json_ok(stack.request("POST", f"/wallets/{bystander['uuid']}/deposit", body={"amount": 5},
                                   headers={"Idempotency-Key": "ovf"}), 200)
    assert h.ledger_sums(stack)[w["uuid"]] == (h.BALANCE_MAX, h.BALANCE_MAX)


# --- Bodies and content types -------------------------------------------------------------

NOT_JSON = {
    "open brace": b"{",
    "word": b"abc",
    "trailing comma": b'{"amount": 1,}',
    "single quotes": b"{'amount': 1}",
    "extra brace": b'{"amount": 1}}',
    "trailing garbage": b'{"amount": 1} x',
    "two objects": b'{"amount": 1}{"amount": 1}',
    "unquoted key": b"{amount: 1}",
    "NaN": b'{"amount": NaN}',
    "invalid UTF-8": b'{"amount": 1, "note": "\xff\xfe"}',
    "NUL byte": b'{"amount": 1}\x00',
    "NUL in string": b'{"amount": 1, "note": "a\x00b"}',
    "lone surrogate escape ok but bad escape": b'{"amount": 1, "note": "\\x41"}',
    "UTF-16": '{"amount": 1}'.encode("utf-16"),
    # Documented in openapi.yaml: a repeated member name and nesting deeper than 16 levels.
    "duplicate member": b'{"amount": 1, "amount": 2}',
    "nested 40 levels": b'{"amount": 1, "x": ' + b"[" * 40 + b"]" * 40 + b"}",
}

NOT_OBJECT = {
    "empty array": b"[]",
    "array of object": b'[{"amount": 1}]',
    "string": b'"amount"',
    "number": b"5",
    "null": b"null",
    "true": b"true",
}


def test_non_json_bodies_are_400(stack):
    w = h.create_wallet(stack)
    soft = h.Soft()
    for route in (f"/wallets/{w['uuid']}/deposit", f"/wallets/{w['uuid']}/withdraw", "/wallets/"):
        for label, raw in {**NOT_JSON, **NOT_OBJECT}.items():
            resp = stack.request("POST", route, raw_body=raw, headers=JSON)
            soft.check(f"{route} {label} {raw[:40]!r}", h.assert_error, resp, 400, h.INVALID_JSON)
    soft.check("nothing changed", _unchanged, stack, w["uuid"], 0, 0)
    soft.check("no wallet created", lambda: h.expect(stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1,
                                                     "wallets were created"))
    soft.done()


def test_moderate_nesting_in_unknown_members_is_accepted(stack):
    """The other side of the nesting limit: 10 levels inside an ignored member are fine."""
    w = h.create_wallet(stack)
    raw = b'{"amount": 4, "x": ' + b"[" * 9 + b"]" * 9 + b"}"
    resp = stack.request("POST", f"/wallets/{w['uuid']}/deposit", raw_body=raw, headers=JSON)
    assert h.assert_json_ok(resp, 200)["wallet"]["balance"] == 4


def test_empty_body_on_deposit_is_400(stack):
    w = h.create_wallet(stack)
    resp = h.raw_request(stack.url, "POST", f"/wallets/{w['uuid']}/deposit",
                         headers=[("Content-Type", "application/json"), ("Content-Length", "0")])
    h.assert_error(resp, 400, codes=(h.INVALID_JSON, h.INVALID_AMOUNT))
    _unchanged(stack, w["uuid"], 0, 0)


def test_wrong_content_type_is_415(stack):
    w = h.create_wallet(stack)
    soft = h.Soft()
    body = b'{"amount": 5}'
    wd_body = json.dumps({"amount": 5, "scheduled_for": h.future()}).encode()
    types = ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x",
             "application/jsonx", "text/json", "application/octet-stream"]
    for ctype in types:
        for route, raw in ((f"/wallets/{w['uuid']}/deposit", body), (f"/wallets/{w['uuid']}/withdraw", wd_body),
                           ("/wallets/", b"{}")):
            resp = stack.request("POST", route, raw_body=raw, headers={"Content-Type": ctype})
            soft.check(f"{route} as {ctype}", h.assert_error, resp, 415, h.UNSUPPORTED_MEDIA_TYPE)
    # A body with no Content-Type at all is "sent with another content type": 415.
    for route, raw in ((f"/wallets/{w['uuid']}/deposit", body), (f"/wallets/{w['uuid']}/withdraw", wd_body),
                       ("/wallets/", b"{}")):
        resp = h.raw_request(stack.url, "POST", route, body=raw)
        soft.check(f"{route} without Content-Type", h.assert_error, resp, 415, h.UNSUPPORTED_MEDIA_TYPE)
    soft.check("nothing changed", _unchanged, stack, w["uuid"], 0, 0)
    soft.check("no wallet created", lambda: h.expect(stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 1,
                                                     "wallets were created"))
    soft.done()


def test_json_content_type_variants_accepted(stack):
    w = h.create_wallet(stack)
    soft = h.Soft()
    for ctype in ("application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"):
        resp = stack.request("POST", f"/wallets/{w['uuid']}/deposit", raw_body=b'{"amount": 1}',
                             headers={"Content-Type": ctype})
        soft.check(ctype, h.assert_json_ok, resp, 200)
    soft.done()


def test_body_over_16_kib_is_413_json(stack):
    w = h.create_wallet(stack)
    path = f"/wallets/{w['uuid']}/deposit"
    soft = h.Soft()
    # The limit is inclusive: exactly 16 KiB of valid JSON is accepted.
    exact = b'{"amount": 3}'.ljust(h.BODY_BYTES_MAX, b" ")
    assert len(exact) == h.BODY_BYTES_MAX
    soft.check("exactly 16 KiB", h.assert_json_ok, stack.request("POST", path, raw_body=exact, headers=JSON), 200)
    over = b'{"amount": 5}'.ljust(h.BODY_BYTES_MAX + 1, b" ")
    for route in (path, f"/wallets/{w['uuid']}/withdraw", "/wallets/"):
        resp = stack.request("POST", route, raw_body=over, headers=JSON)
        soft.check(f"16 KiB + 1 to {route}", h.assert_error, resp, 413, h.PAYLOAD_TOO_LARGE)
    big = stack.request("POST", path, raw_body=b"x" * (1024 * 1024), headers=JSON)
    soft.check("1 MiB", h.assert_error, big, 413, h.PAYLOAD_TOO_LARGE)
    # Chunked, without a Content-Length: nginx counts the de-chunked body.
    chunk = b" " * 8192
    chunked = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    for _ in range(3):
        chunked += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    chunked += b"0\r\n\r\n"
    answers = h.parse_responses(h.raw_exchange(stack.url, chunked))
    soft.check("chunked 24 KiB", lambda: h.expect(answers, "no answer to a chunked 24 KiB body") or
               h.assert_error(answers[0], 413, h.PAYLOAD_TOO_LARGE))
    soft.check("only the 16 KiB deposit counted", _unchanged, stack, w["uuid"], 3, 1)
    soft.done()


# --- Methods and paths ------------------------------------------------------------------

def test_wrong_method_is_405_with_allow(stack):
    w = h.create_wallet(stack)
    tx = h.withdraw(stack, w["uuid"], 5, scheduled_for=h.future())
    u, t = w["uuid"], tx["id"]
    cases = [
        ("GET", "/wallets/", "POST"),
        ("PUT", "/wallets/", "POST"),
        ("DELETE", "/wallets", "POST"),
        ("POST", f"/wallets/{u}/", "GET"),
        ("DELETE", f"/wallets/{u}/", "GET"),
        ("PUT", f"/wallets/{u}", "GET"),
        ("GET", f"/wallets/{u}/deposit", "POST"),
        ("PATCH", f"/wallets/{u}/deposit", "POST"),
        ("GET", f"/wallets/{u}/withdraw", "POST"),
        ("PUT", f"/wallets/{u}/withdraw/", "POST"),
        ("POST", f"/wallets/{u}/transactions/", "GET"),
        ("DELETE", f"/wallets/{u}/transactions", "GET"),
        ("POST", f"/wallets/{u}/transactions/{t}/", "GET"),
        ("DELETE", f"/wallets/{u}/transactions/{t}/", "GET"),
        ("GET", f"/wallets/{u}/transactions/{t}/cancel", "POST"),
        ("DELETE", f"/wallets/{u}/transactions/{t}/cancel", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
        ("OPTIONS", f"/wallets/{u}/", "GET"),
        ("OPTIONS", "/wallets/", "POST"),
    ]
    soft = h.Soft()
    for method, path, allowed in cases:
        resp = stack.request(method, path)

        def check(resp=resp, method=method, allowed=allowed):
            h.assert_error(resp, 405, h.METHOD_NOT_ALLOWED)
            allow = resp.headers.get("allow")
            assert allow, f"no Allow header: {resp.headers}"
            methods = {m.strip().upper() for m in allow.split(",")}
            assert allowed in methods, f"Allow {allow!r} lacks {allowed}"
            assert method not in methods, f"Allow {allow!r} includes the refused {method}"
        soft.check(f"{method} {path}", check)
    # HEAD goes wherever GET does (test_edge.py); on a POST-only path it is 405 with Allow, and no body.
    for path, allowed in (("/wallets/", "POST"), (f"/wallets/{u}/deposit", "POST"), (f"/wallets/{u}/transactions/{t}/cancel", "POST")):
        resp = stack.request("HEAD", path)
        soft.check(f"HEAD {path}", lambda r=resp, a=allowed: h.expect(
            r.status == 405 and a in r.headers.get("allow", "") and r.body == b"" and r.headers.get("x-request-id"),
            f"{r.status} {r.headers}"))
    soft.check("withdrawal untouched", lambda: h.assert_transaction(
        h.assert_json_ok(stack.request("GET", f"/wallets/{u}/transactions/{t}/"), 200), status="PENDING"))
    soft.done()


def test_unknown_paths_are_404_json(stack):
    w = h.create_wallet(stack)
    tx = h.deposit(stack, w["uuid"], 1)["transaction"]
    u, t = w["uuid"], tx["id"]
    paths = ["/", "/foo", "/wallet/", "/WALLETS/", "/wallets/x/y/z", f"/wallets/{u}/foo", f"/wallets/{u}/deposit/extra",
             f"/wallets/{u}/transactions/{t}/cancel/extra", f"/wallets/{u}/transactions/{t}/foo", "/healthz/extra",
             "/metrics/x", "/index.html", "/wallets/x", "/healthzz", f"/wallets/{u}/transactions/{t}/cancel/"
             "x"]
    soft = h.Soft()
    for path in paths:
        for method in ("GET", "POST"):
            body = {"amount": 1} if method == "POST" else None
            resp = stack.request(method, path, body=body)
            soft.check(f"{method} {path}", h.assert_error, resp, 404, h.NOT_FOUND)
    soft.check("nothing changed", _unchanged, stack, u, 1, 1)
    soft.done()


def test_malformed_and_unknown_uuids_are_404(stack):
    w = h.create_wallet(stack)
    u = w["uuid"]
    malformed = ["not-a-uuid", "123", u[:-1], u + "0", u + "x", u.replace("-", ""), "-" + u,
                 "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "%20", "00000000-0000-0000-0000-00000000000g"]
    unknown = [h.random_uuid(), "00000000-0000-0000-0000-000000000000"]
    soft = h.Soft()
    for ident in malformed + unknown:
        cases = [("GET", f"/wallets/{ident}/", None),
                 ("GET", f"/wallets/{ident}", None),
                 ("POST", f"/wallets/{ident}/deposit", {"amount": 1}),
                 ("POST", f"/wallets/{ident}/withdraw", {"amount": 1}),
                 ("GET", f"/wallets/{ident}/transactions/", None),
                 ("GET", f"/wallets/{ident}/transactions/1/", None),
                 ("POST", f"/wallets/{ident}/transactions/1/cancel", None)]
        for method, path, body in cases:
            soft.check(f"{method} {path}", h.assert_error, stack.request(method, path, body=body), 404, h.NOT_FOUND)
    soft.check("nothing changed", _unchanged, stack, u, 0, 0)
    soft.done()


def test_non_numeric_transaction_ids_are_404(stack):
    w = h.create_wallet(stack)
    tx = h.withdraw(stack, w["uuid"], 1, scheduled_for=h.future())
    u = w["uuid"]
    soft = h.Soft()
    for ident in ("abc", "1.5", "-1", "0", "1e3", "0x1", "%20", "99999999999999999999999", "9223372036854775808",
                  f"{tx['id']}abc", f"{tx['id']}.0", "+1" if tx["id"] != 1 else "+2", str(tx["id"] + 1)):
        soft.check(f"GET {ident}", h.assert_error,
                   stack.request("GET", f"/wallets/{u}/transactions/{ident}/"), 404, h.NOT_FOUND)
        soft.check(f"cancel {ident}", h.assert_error,
                   stack.request("POST", f"/wallets/{u}/transactions/{ident}/cancel"), 404, h.NOT_FOUND)
    soft.check("withdrawal untouched", lambda: h.assert_transaction(
        h.assert_json_ok(stack.request("GET", f"/wallets/{u}/transactions/{tx['id']}/"), 200), status="PENDING"))
    soft.done()


# --- Timestamps --------------------------------------------------------------------------

def test_bad_scheduled_for_is_400(stack):
    w = h.create_wallet(stack)
    past_seconds = h.iso_z(h.utc_now() - dt.timedelta(seconds=5))
    values = [
        "2020-01-01T00:00:00Z", past_seconds, "1970-01-01T00:00:00Z",            # past
        "2099-01-01T00:00:00", "2099-01-01T00:00:00.5",                         # no offset
        "tomorrow", "now", "", " ", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
        "2099-13-01T00:00:00Z", "2099-00-10T00:00:00Z", "2099-02-30T00:00:00Z", "2099-02-29T00:00:00Z",
        "2099-04-31T00:00:00Z", "2099-01-01T24:00:01Z", "2099-01-01T00:60:00Z", "2099-01-01T00:00:61Z",
        "2099-01-01", "2099-01-01T00:00Z", "2099-01-01T00:00:00+25:00", "2099-01-01T00:00:00+0330",
        "2099-01-01T00:00:00ZZ", "2099-01-01T00:00:00 Z", "99999-01-01T00:00:00Z", "2099-1-1T0:0:0Z",
        "2099-01-01T00:00:00.Z", "2099-01-01T00:00:00+03:30:00",
        4102444800, 4102444800.5, -1, True, {}, [], ["2099-01-01T00:00:00Z"],
    ]
    soft = h.Soft()
    for value in values:
        resp = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body={"amount": 1, "scheduled_for": value})
        soft.check(f"scheduled_for={value!r}", h.assert_error, resp, 400, h.INVALID_SCHEDULED_FOR,
                   field="scheduled_for")
    soft.check("nothing changed", _unchanged, stack, w["uuid"], 0, 0)
    soft.done()


def test_unusual_but_valid_scheduled_for_accepted(stack):
    w = h.create_wallet(stack)
    soft = h.Soft()
    cases = {
        "2099-01-01T00:00:00.123456789Z": "2099-01-01T00:00:00",
        "2099-01-01T00:00:00-05:00": "2099-01-01T05:00:00",
        "2099-01-01T00:00:00+00:00": "2099-01-01T00:00:00",
        "2099-01-01T03:30:00+03:30": "2099-01-01T00:00:00",
        "2099-12-31T23:59:59.999Z": "2099-12-31T23:59:59",
    }
    for value, utc_prefix in cases.items():
        resp = stack.request("POST", f"/wallets/{w['uuid']}/withdraw", body={"amount": 1, "scheduled_for": value})

        def check(resp=resp, utc_prefix=utc_prefix):
            tx = h.assert_json_ok(resp, 201)
            h.assert_utc_z(tx["scheduled_for"])
            assert tx["scheduled_for"].startswith(utc_prefix), f"{tx['scheduled_for']} is not {utc_prefix}..."
        soft.check(value, check)
    soft.done()


# --- Query filters -----------------------------------------------------------------------

def test_bad_filters_are_400(stack):
    w = h.create_wallet(stack)
    h.deposit(stack, w["uuid"], 1)
    cases = [
        ("status=foo", "status"), ("status=pendingx", "status"), ("status=PENDING,FAILED", "status"),
        ("type=bar", "type"), ("type=deposits", "type"), ("type=1", "type"),
        ("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
        ("limit=1.5", "limit"), ("limit=1e2", "limit"), ("limit=99999999999999999999999", "limit"),
        ("limit=", "limit"), ("limit=%2010", "limit"),
        ("cursor=garbage", "cursor"), ("cursor=!!!", "cursor"), ("cursor=%FF%FE", "cursor"), ("cursor=%00", "cursor"),
    ]
    soft = h.Soft()
    for query, field in cases:
        resp = stack.request("GET", f"/wallets/{w['uuid']}/transactions/?{query}")
        soft.check(query, h.assert_error, resp, 400, h.INVALID_QUERY, field=field)
    soft.done()


# --- Unknown fields, cancel ----------------------------------------------------------------

def test_unknown_body_fields_are_ignored(stack):
    """The contract is silent; the project documents that unknown members are ignored."""
    w = h.create_wallet(stack)
    dep = stack.request("POST", f"/wallets/{w['uuid']}/deposit", body={"amount": 5, "note": "x", "currency": "EUR"})
    assert h.assert_json_ok(dep, 200)["wallet"]["balance"] == 5
    wd = stack.request("POST", f"/wallets/{w['uuid']}/withdraw",
                       body={"amount": 2, "scheduled_for": h.future(), "extra": [1, {"a": None}]})
    h.assert_transaction(h.assert_json_ok(wd, 201), amount=2, status="PENDING")
    h.assert_wallet(h.assert_json_ok(stack.request("POST", "/wallets/", body={"name": "x"}), 201), balance=0)


def test_cancel_of_deposit_or_canceled_is_409(stack):
    w = h.create_wallet(stack)
    u = w["uuid"]
    deposit_tx = h.deposit(stack, u, 100)["transaction"]
    canceled = h.withdraw(stack, u, 1, scheduled_for=h.future())
    h.assert_json_ok(stack.request("POST", f"/wallets/{u}/transactions/{canceled['id']}/cancel"), 200)
    soft = h.Soft()
    for label, tid in (("deposit", deposit_tx["id"]), ("CANCELED withdrawal", canceled["id"])):
        before = h.assert_json_ok(stack.request("GET", f"/wallets/{u}/transactions/{tid}/"), 200)
        resp = stack.request("POST", f"/wallets/{u}/transactions/{tid}/cancel")
        soft.check(label, h.assert_error, resp, 409, h.NOT_CANCELABLE)
        after = h.assert_json_ok(stack.request("GET", f"/wallets/{u}/transactions/{tid}/"), 200)
        soft.check(f"{label} unchanged", lambda b=before, a=after: h.expect(a == b, f"{b} became {a}"))
    soft.check("balance unchanged", lambda: h.expect(h.get_wallet(stack, u)["balance"] == 100, "balance changed"))
    soft.done()


def test_cancel_of_processed_withdrawals_is_409(stack):
    """COMPLETED and FAILED withdrawals (made so by one processor pass) cannot be canceled."""
    stack.set_bank_mode("success")
    w = h.create_wallet(stack)
    u = w["uuid"]
    h.deposit(stack, u, 100)
    paid = h.withdraw(stack, u, 60)                    # due now, funded: COMPLETED after a pass
    unfunded = h.withdraw(stack, u, 1000)              # due now, unfunded: FAILED insufficient_funds
    stack.run_processor()
    status = {t["id"]: t for t in h.list_all_transactions(stack, u)[0]}
    assert status[paid["id"]]["status"] == "COMPLETED", status[paid["id"]]
    assert status[unfunded["id"]]["status"] == "FAILED", status[unfunded["id"]]
    assert status[unfunded["id"]]["failure_reason"] == "insufficient_funds"
    assert h.get_wallet(stack, u)["balance"] == 40
    soft = h.Soft()
    for label, tid in (("COMPLETED withdrawal", paid["id"]), ("FAILED withdrawal", unfunded["id"])):
        resp = stack.request("POST", f"/wallets/{u}/transactions/{tid}/cancel")
        soft.check(label, h.assert_error, resp, 409, h.NOT_CANCELABLE)
        after = h.assert_json_ok(stack.request("GET", f"/wallets/{u}/transactions/{tid}/"), 200)
        soft.check(f"{label} unchanged", lambda b=status[tid], a=after: h.expect(a == b, f"{b} became {a}"))
    soft.check("balance unchanged", lambda: h.expect(h.get_wallet(stack, u)["balance"] == 40, "balance changed"))
    soft.done()


def test_error_bodies_never_leak(stack):
    """A sweep of odd requests; every answer that is an error must be clean (assert_error checks
    for stack traces, SQL and file paths; here also the non-error answers)."""
    w = h.create_wallet(stack)
    u = w["uuid"]
    requests = [
        ("POST", f"/wallets/{u}/deposit", b'{"amount": 1, "amount": "x"}'),
        ("POST", f"/wallets/{u}/deposit", b'{"amount": 1e999999}'),
        ("POST", f"/wallets/{u}/deposit", b'{"amount": ' + b"9" * 5000 + b"}"),
        ("POST", f"/wallets/{u}/withdraw", b'{"amount": 1, "scheduled_for": "' + b"9" * 5000 + b'"}'),
        ("POST", f"/wallets/{u}/deposit", b'{"amount": 1, "x": "' + "\u0000".encode() + b'"}'),
        ("POST", f"/wallets/{u}/deposit", b"[" * 5000 + b"]" * 5000),
        ("POST", f"/wallets/{u}/deposit", b'{"a":' * 2000 + b"1" + b"}" * 2000),
        ("POST", f"/wallets/{u}/deposit", b"{\"amount\": 1, \"'; DROP TABLE wallets; --\": 1}"),
        ("GET", f"/wallets/{u}' OR '1'='1/", None),
        ("GET", f"/wallets/{u}/transactions/?cursor=' OR 1=1 --", None),
        ("GET", f"/wallets/{u}/transactions/?status=' OR 1=1 --", None),
        ("GET", f"/wallets/{u}/transactions/?limit=1;DROP TABLE ledger", None),
    ]
    soft = h.Soft()
    for method, path, raw in requests:
        resp = stack.request(method, path.replace(" ", "%20").replace("'", "%27"), raw_body=raw,
                             headers=JSON if raw is not None else None)

        def check(resp=resp):
            assert resp.status < 500, f"{resp.status}: {resp.body[:300]!r}"
            h.assert_request_id(resp)
            h.assert_no_leak(resp.body)
            if resp.status >= 400:
                h.assert_error(resp, resp.status)
        soft.check(f"{method} {path[:60]} {raw[:40] if raw else b''!r}", check)
    soft.check("integrity", lambda: h.expect(stack.integrity_check() == "ok",
                                             "integrity_check failed"))
    soft.check("ledger table intact", lambda: stack.sqlite("SELECT COUNT(*) FROM ledger"))
    soft.done()
