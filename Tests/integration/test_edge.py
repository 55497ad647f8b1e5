"""The HTTP edge, as a client sees it through nginx: methods outside the API are
answered by nginx itself (405, JSON, Allow), HEAD is GET without the body, nginx's
own protocol errors come back in the JSON error shape, and the responder's metrics
label only the API's methods.

Raw sockets where the request is something http.client will not send (an unknown
Transfer-Encoding, another HTTP version, a pipelined HEAD)."""

import shutil
import socket
import subprocess
from pathlib import Path

from . import helpers as h
from .conftest import free_port, stop_process, wait_until

# The methods the API serves on some route (Route.apiMethods in Router.swift, and
# the method check in nginx/wallet-locations.conf).
API_METHODS = {"GET", "HEAD", "POST", "DELETE"}
API_ALLOW = "GET, HEAD, POST, DELETE"


def _raw(stack, data):
    """The responses to raw request bytes (the last request should say Connection: close)."""
    return h.parse_responses(h.raw_exchange(stack.url, data))


def _request(method, path, version=b"HTTP/1.1", headers=(), body=b""):
    lines = [method.encode() + b" " + path.encode() + b" " + version, b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value.encode() for name, value in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _allow(resp):
    return [m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()]


def _assert_method_not_allowed(resp, method, allow=None):
    h.assert_error(resp, 405, h.METHOD_NOT_ALLOWED)
    methods = _allow(resp)
    assert methods, f"405 without Allow: {resp.headers}"
    assert set(methods) <= API_METHODS, f"Allow {methods} names a method the API does not serve"
    assert method not in methods, f"Allow {methods} includes the refused {method}"
    if allow is not None:
        assert resp.headers.get("allow") == allow, f"Allow {resp.headers.get('allow')!r}, expected {allow!r}"


def _assert_raw_method_not_allowed(stack, method, path, allow):
    answers = _raw(stack, _request(method, path))
    assert answers, f"no answer to {method} {path}"
    _assert_method_not_allowed(answers[0], method, allow)


# --- Methods -------------------------------------------------------------------------------

def test_methods_outside_the_api_are_answered_by_nginx_with_405_and_allow(stack):
    w = h.create_wallet(stack)
    tx = h.deposit(stack, w["uuid"], 7)["transaction"]
    u, t = w["uuid"], tx["id"]
    # The methods of the route the path names; outside the API, the API's.
    paths = {
        "/wallets": "POST", "/wallets/": "POST", "/healthz": "GET, HEAD", "/healthz/": "GET, HEAD",
        "/metrics": "GET, HEAD", "/metrics/": "GET, HEAD",
        f"/wallets/{u}/": "GET, HEAD", f"/wallets/{u}": "GET, HEAD", f"/wallets/{u}/deposit": "POST",
        f"/wallets/{u}/withdraw/": "POST", f"/wallets/{u}/transactions/": "GET, HEAD",
        f"/wallets/{u}/transactions/{t}": "GET, HEAD", f"/wallets/{u}/transactions/{t}/cancel": "POST",
        f"/wallets/{u}/transactions/{t}/cancel/": "POST", "/nowhere": API_ALLOW, "/": API_ALLOW,
    }
    soft = h.Soft()
    for path, allow in paths.items():
        for method in ("PUT", "PATCH", "OPTIONS", "PROPFIND", "FOOA", "FOOB"):
            soft.check(f"{method} {path}", _assert_raw_method_not_allowed, stack, method, path, allow)
        # nginx refuses these two before it looks at the path: the API's methods.
        for method in ("TRACE", "CONNECT"):
            soft.check(f"{method} {path}", _assert_raw_method_not_allowed, stack, method, path, API_ALLOW)
    # None of them reached the responder: nothing changed, nothing was counted or logged.
    soft.check("nothing changed", lambda: h.expect(h.get_wallet(stack, u)["balance"] == 7, "balance changed"))
    metrics = stack.request("GET", "/metrics")
    labels = {labels.get("method") for name, labels, _ in h.parse_prometheus(metrics.text)
              if name == "wallet_http_requests_total"}
    soft.check("metrics labels", lambda: h.expect(labels <= API_METHODS, f"method labels {labels}"))
    soft.check("responder log", lambda: h.expect("FOOA" not in stack.logs("wallet-fcgi.log"),
                                                 "the responder saw FOOA"))
    # The locations that tell the routes apart are internal: asked for directly, 404.
    for method in ("GET", "PUT"):
        resp = _raw(stack, _request(method, f"/_method/wallets/{u}/deposit"))
        soft.check(f"{method} /_method/...", lambda r=resp: h.expect(r, "no answer") or h.assert_error(r[0], 404, h.NOT_FOUND))
    soft.done()


def test_api_methods_on_the_wrong_route_are_the_responders_405_with_the_routes_allow(stack):
    u = h.create_wallet(stack)["uuid"]
    cases = [
        ("DELETE", f"/wallets/{u}/", "GET, HEAD"),
        ("DELETE", f"/wallets/{u}/transactions/", "GET, HEAD"),
        ("DELETE", "/wallets/", "POST"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("GET", f"/wallets/{u}/deposit", "POST"),
        ("GET", f"/wallets/{u}/transactions/1/cancel", "POST"),
    ]
    soft = h.Soft()
    for method, path, allow in cases:
        resp = stack.request(method, path)
        soft.check(f"{method} {path}", _assert_method_not_allowed, resp, method, allow)
    for path in ("/wallets/", f"/wallets/{u}/withdraw"):
        resp = stack.request("HEAD", path)
        soft.check(f"HEAD {path}", lambda r=resp: h.expect(
            r.status == 405 and r.headers.get("allow") == "POST" and r.body == b"" and r.headers.get("x-request-id"),
            f"{r.status} {r.headers} {r.body[:100]!r}"))
    soft.done()


# --- HEAD ------------------------------------------------------------------------------------

def test_head_answers_like_get_without_the_body(stack):
    w = h.create_wallet(stack)
    u = w["uuid"]
    tx = h.deposit(stack, u, 42)["transaction"]
    paths = [f"/wallets/{u}/", f"/wallets/{u}", f"/wallets/{u}/transactions/", f"/wallets/{u}/transactions/?limit=1",
             f"/wallets/{u}/transactions/{tx['id']}/", "/healthz", "/healthz/",
             f"/wallets/{h.random_uuid()}/", f"/wallets/{u}/transactions/?limit=0", "/nowhere"]
    soft = h.Soft()
    for path in paths:
        get = stack.request("GET", path)
        head = stack.request("HEAD", path)

        def check(get=get, head=head):
            assert head.status == get.status, f"HEAD {head.status}, GET {get.status}"
            assert head.body == b"", f"HEAD sent a body: {head.body[:100]!r}"
            for name in ("content-type", "cache-control", "x-content-type-options"):
                assert head.headers.get(name) == get.headers.get(name), f"{name}: {head.headers} vs {get.headers}"
            # The length of the body a GET gets (same wallet state, same answer).
            assert head.headers.get("content-length") == str(len(get.body)), f"{head.headers} vs {len(get.body)}"
            assert head.headers.get("x-request-id") and head.headers["x-request-id"] != get.headers.get("x-request-id")
        soft.check(f"HEAD {path}", check)
    metrics = stack.request("HEAD", "/metrics")
    soft.check("HEAD /metrics", lambda: h.expect(
        metrics.status == 200 and metrics.body == b"" and metrics.headers.get("content-type", "").startswith("text/plain"),
        f"{metrics.status} {metrics.headers}"))
    text = stack.request("GET", "/metrics").text
    heads = [v for name, labels, v in h.parse_prometheus(text)
             if name == "wallet_http_requests_total" and labels.get("method") == "HEAD"
             and labels.get("route") == "/wallets/{uuid}/" and labels.get("status") == "200"]
    soft.check("HEAD counted under its own label", lambda: h.expect(heads == [2.0], f"{heads}"))
    soft.done()


def test_head_keeps_the_connection_framing(stack):
    """A HEAD answer carries GET's Content-Length but no body: the next answer on the
    same client connection (and on nginx's kept connection to the responder) must
    start right after its headers."""
    u = h.create_wallet(stack)["uuid"]
    h.deposit(stack, u, 3)
    auth = ("Authorization", f"Bearer {stack.api_key}")
    head = f"HEAD /wallets/{u}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth[0]}: {auth[1]}\r\n\r\n".encode()
    data = head * 3 + _request("GET", f"/wallets/{u}/", headers=[auth])
    raw = h.raw_exchange(stack.url, data)
    # Three bodiless answers, then the GET's.
    for _ in range(3):
        end = raw.find(b"\r\n\r\n")
        assert end > 0 and raw.startswith(b"HTTP/1.1 200"), raw[:300]
        assert b"content-length: " in raw[:end].lower(), raw[:end]
        raw = raw[end + 4:]
    answers = h.parse_responses(raw)
    assert len(answers) == 1, raw[:500]
    assert h.assert_json_ok(answers[0], 200)["balance"] == 3
    # The responder still answers on every kept connection afterwards.
    for _ in range(20):
        assert stack.request("HEAD", "/healthz").status == 200
        assert h.assert_json_ok(stack.request("GET", f"/wallets/{u}/"), 200)["balance"] == 3


# --- nginx's own protocol errors ------------------------------------------------------------

def test_nginx_protocol_errors_are_json(stack):
    """411, 501 and 505 come from nginx before any location is chosen (or, for 411,
    never from nginx 1.22's HTTP/1.x code: no request can produce it, see
    nginx/wallet-locations.conf); each must still be the JSON error shape."""
    cases = [
        ("unknown Transfer-Encoding", _request("POST", "/wallets/", headers=[("Transfer-Encoding", "gzip")]),
         501, "not_implemented"),
        ("Transfer-Encoding gzip, chunked",
         _request("POST", "/wallets/", headers=[("Transfer-Encoding", "gzip, chunked")], body=b"0\r\n\r\n"),
         501, "not_implemented"),
        ("unknown Transfer-Encoding on an unknown path", _request("GET", "/nowhere", headers=[("Transfer-Encoding", "x")]),
         501, "not_implemented"),
        ("HTTP/2.0 request line", _request("GET", "/healthz", version=b"HTTP/2.0"), 505, "http_version_not_supported"),
        ("HTTP/3.1 request line", _request("POST", "/wallets/", version=b"HTTP/3.1"), 505, "http_version_not_supported"),
        ("HTTP/10.0 request line", _request("GET", "/", version=b"HTTP/10.0"), 505, "http_version_not_supported"),
    ]
    soft = h.Soft()
    for label, data, status, code in cases:
        answers = _raw(stack, data)

        def check(answers=answers, status=status, code=code):
            assert answers, "no answer"
            assert b"<html" not in answers[0].body.lower(), answers[0].body[:200]
            h.assert_error(answers[0], status, code)
        soft.check(label, check)
    soft.check("no wallet created", lambda: h.expect(stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == 0,
                                                     "a wallet was created"))
    soft.done()


def _nginx_binary():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def test_length_required_is_mapped_to_json(tmp_path):
    """nginx 1.22 never answers 411 to an HTTP/1.x request, so no request to the real
    stack can show its mapping. This runs a bare nginx with the shared snippet and one
    extra location that returns 411 (the error_page path any future 411 would take)."""
    run = tmp_path / "nginx"
    (run / "tmp").mkdir(parents=True)
    port = free_port()
    repo = Path(__file__).resolve().parents[2]
    (run / "nginx.conf").write_text(f"""
daemon off;
# One process (no workers as `nobody`): it reads no file once started.
master_process off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {run}/tmp/body;
    fastcgi_temp_path {run}/tmp/fastcgi;
    proxy_temp_path {run}/tmp/proxy;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    upstream wallet_fcgi {{ server unix:{run}/no-responder.sock; }}
    server {{
        listen 127.0.0.1:{port};
        access_log off;
        include {repo}/nginx/wallet-locations.conf;
        location = /_probe/411 {{ return 411; }}
    }}
}}
""")
    proc = subprocess.Popen([_nginx_binary(), "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(run / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def listening():
            assert proc.poll() is None, f"nginx exited: {proc.stderr.read()!r}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False
        wait_until(listening, 10, "the probe nginx to listen")
        answers = h.parse_responses(h.raw_exchange(url, _request("GET", "/_probe/411")))
        assert answers, "no answer"
        h.assert_error(answers[0], 411, "length_required")
        # The same nginx answers the other protocol errors as the real stack does.
        answers = h.parse_responses(h.raw_exchange(url, _request("GET", "/healthz", version=b"HTTP/2.0")))
        h.assert_error(answers[0], 505, "http_version_not_supported")
    finally:
        stop_process(proc)
