"""Kept FastCGI connections: nginx reuses its connections to the responder
(`fastcgi_keep_conn on` and an upstream `keepalive` pool), and libfcgi gives each
connection a thread of its own for as long as it stays open. These tests check what
that design must keep: the responder grows its thread pool so that idle pooled
connections never leave a new one unserved, a request it answered without reading its
whole body leaves the connection clean for the next one, and a stop closes the idle
connections at once instead of waiting on them."""

import concurrent.futures
import os
import signal
import socket
import struct
import threading
import time

from . import helpers as h

# More concurrent requests than nginx keeps idle connections (keepalive 16 per worker,
# 2 workers in the development stack), so that a fixed pool of one thread would stall.
CONCURRENT = 48
ROUNDS = 4

# FastCGI record types and constants (the FastCGI 1.0 specification).
FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6
FCGI_RESPONDER, FCGI_KEEP_CONN = 1, 1


def _record(kind, content, request_id=1):
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), 0) + content


def _pair_length(n):
    return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)


def _fastcgi_request(params, body=b"", keep=True):
    """The bytes of one FastCGI request: begin, params, then the body as stdin records."""
    out = _record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", FCGI_RESPONDER, FCGI_KEEP_CONN if keep else 0))
    encoded = b"".join(_pair_length(len(k)) + _pair_length(len(v)) + k + v
                       for k, v in ((k.encode(), v.encode()) for k, v in params.items()))
    out += _record(FCGI_PARAMS, encoded) + _record(FCGI_PARAMS, b"")
    for start in range(0, len(body), 65535):
        out += _record(FCGI_STDIN, body[start:start + 65535])
    return out + _record(FCGI_STDIN, b"")


def _read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _fastcgi_response(sock):
    """Reads records up to FCGI_END_REQUEST; returns (status, body) of the CGI response."""
    stdout = b""
    while True:
        _, kind, _, length, padding = struct.unpack(">BBHHBx", _read_exact(sock, 8))
        content = _read_exact(sock, length + padding)[:length]
        if kind == FCGI_STDOUT:
            stdout += content
        elif kind == FCGI_END_REQUEST:
            break
    head, _, body = stdout.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n")[0].split()[1])
    return status, body


def _params(method, path, length=0, key=None):
    params = {"REQUEST_METHOD": method, "DOCUMENT_URI": path, "QUERY_STRING": "",
              "CONTENT_TYPE": "application/json" if length else "", "CONTENT_LENGTH": str(length) if length else "",
              "REQUEST_ID": "keepalive-test"}
    if key:
        params["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return params


def test_a_kept_connection_serves_the_next_request_after_an_unread_body(stack):
    """Straight to the responder's socket, one kept connection: a body over the 16 KiB
    limit is refused (413) without being read, then the same connection answers a
    deposit and a read correctly, so nothing of the refused body was taken for them."""
    wallet = h.create_wallet(stack)["uuid"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(stack.run_dir / "fcgi.sock"))
        oversized = b'{"amount": 1, "pad": "' + b"x" * (h.BODY_BYTES_MAX + 100) + b'"}'
        sock.sendall(_fastcgi_request(_params("POST", f"/wallets/{wallet}/deposit", len(oversized), stack.api_key), oversized))
        status, body = _fastcgi_response(sock)
        assert status == 413, body
        assert b'"payload_too_large"' in body

        deposit = b'{"amount": 25}'
        sock.sendall(_fastcgi_request(_params("POST", f"/wallets/{wallet}/deposit", len(deposit), stack.api_key), deposit))
        status, body = _fastcgi_response(sock)
        assert status == 200, body
        sock.sendall(_fastcgi_request(_params("GET", f"/wallets/{wallet}/", key=stack.api_key)))
        status, body = _fastcgi_response(sock)
        assert status == 200, body
        assert b'"balance": 25' in body
        # A request without FCGI_KEEP_CONN is answered and then the responder closes.
        sock.sendall(_fastcgi_request(_params("GET", "/healthz"), keep=False))
        assert _fastcgi_response(sock)[0] == 200
        assert sock.recv(1) == b""
    assert h.get_wallet(stack, wallet)["balance"] == 25


def test_the_thread_pool_grows_past_the_connections_nginx_keeps(stack):
    """A responder started with one thread: each connection nginx keeps holds a thread,
    so without growth the second concurrent request would wait for a thread that never
    comes back (nginx's 504 after 15 s). Rounds of 48 concurrent requests all get their
    answer, and the log shows the pool grew."""
    stack.kill_responder(signal.SIGTERM)
    pid = stack.restart_responder(args=("--threads", "1"))
    wallet = h.create_wallet(stack)["uuid"]
    path = f"/wallets/{wallet}/"
    barrier = threading.Barrier(CONCURRENT)

    def one(_):
        barrier.wait(timeout=30)
        return stack.request("GET", path, timeout=12).status

    for _ in range(ROUNDS):
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            statuses = list(pool.map(one, range(CONCURRENT)))
        assert statuses == [200] * CONCURRENT, statuses
        barrier.reset()
    lines = [line for line in h.json_log_lines(stack.logs("wallet-fcgi.log")) if line.get("event") == "accept_threads"]
    assert lines and max(line["threads"] for line in lines) > 1, "the pool never grew"
    with open(f"/proc/{pid}/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    assert threads > 2, f"{threads} threads in the responder (main, writer and one accept thread at start)"


def test_a_stop_closes_idle_kept_connections_without_waiting_on_them(stack):
    """After a burst, nginx holds idle connections to the responder, each sitting in a
    responder thread. SIGTERM wakes those threads and the responder exits well within its
    10 s drain deadline; nginx drops the closed connections, so a new responder answers
    the very next requests."""
    wallet = h.create_wallet(stack)["uuid"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda _: stack.request("GET", f"/wallets/{wallet}/").status, range(200)))
    assert statuses == [200] * 200
    pid = stack.responder_pid()
    connections = [name for name in os.listdir(f"/proc/{pid}/fd")
                   if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")]
    assert len(connections) > 2, "nginx kept no connection open (listening socket and stop pipe aside)"
    started = time.monotonic()
    stack.kill_responder(signal.SIGTERM, timeout=10)
    assert time.monotonic() - started < 5, "the stop waited on idle kept connections"
    log = stack.logs("wallet-fcgi.log")
    assert '"event": "stopped"' in log
    stack.restart_responder()
    for _ in range(20):
        response = stack.request("GET", f"/wallets/{wallet}/")
        assert response.status == 200, response
