"""Transport faults between the processor and the bank that the mock bank CGI behind
nginx cannot script: a kept-alive connection that the bank closes after reading a
request, and a bank that then refuses new connections. A small scripted bank (a
socket server in this file) plays the bank; the rest is the real stack: withdrawals
scheduled through nginx and the responder, `wallet-processor` run as a process, libcurl
talking to the scripted bank on loopback.

The rule under test (README, "Withdrawals"): a call is "not paid, nothing sent" only when
no connection was ever established for it. libcurl resends a request on a new
connection when a reused one closes without a byte of answer; if that new connection is
refused, the first request may still have reached the bank, which may have paid.
"""

import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as h  # noqa: E402

SUCCESS = b'{"data": "success", "status": 200}'


def read_request(conn):
    """Reads one HTTP/1.1 request (headers and a Content-Length body) from conn.
    Returns (headers dict with lower-case names, body bytes), or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return headers, body


class DropThenRefuseBank:
    """Accepts one connection and then stops listening, so every later connection is
    refused. On that connection it pays and answers the first request (keeping the
    connection alive), then pays the second request and closes the connection without
    a byte of answer. `paid` lists the idempotency keys it paid, in order."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.paid = []
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
            # From now on a connect to this port is refused.
            self.listener.close()
            with conn:
                first = read_request(conn)
                assert first is not None, "the first request never came"
                self.paid.append(first[0]["idempotency-key"])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(SUCCESS), SUCCESS))
                second = read_request(conn)
                assert second is not None, "the second request never came on the kept connection"
                self.paid.append(second[0]["idempotency-key"])
                # The money has left; the answer never does.
        except Exception as error:  # reported by the test
            self.error = error

    def join(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the scripted bank is still serving"
        assert self.error is None, f"the scripted bank failed: {self.error!r}"


def test_refused_resend_after_a_dropped_kept_connection_is_not_a_refund(stack):
    wallet = h.create_wallet(stack)["uuid"]
    h.deposit(stack, wallet, 10_000)
    first = h.withdraw(stack, wallet, 1_000)
    second = h.withdraw(stack, wallet, 2_000)

    bank = DropThenRefuseBank()
    # One call at a time, so the second withdrawal's call goes out on the connection
    # the first one kept alive; no retries, so the first attempt is the last.
    result = stack.run_processor(extra_env={
        "WALLET_BANK_URL": f"http://127.0.0.1:{bank.port}/pay",
        "WALLET_BANK_CONCURRENCY": "1",
        "WALLET_MAX_RETRIES": "0",
        "WALLET_BANK_TIMEOUT_MS": "5000",
    })
    assert result.returncode == 0, result.stderr[-4000:]
    bank.join()
    assert len(bank.paid) == 2, "the scripted bank did not see both calls"

    paid = h.assert_json_ok(stack.request("GET", f"/wallets/{wallet}/transactions/{first['id']}/"), 200)
    assert paid["status"] == "COMPLETED", paid

    # The bank paid the second withdrawal. Its answer was lost and libcurl's resend was
    # refused: that is an unknown outcome, held, never a refund.
    doubtful = h.assert_json_ok(stack.request("GET", f"/wallets/{wallet}/transactions/{second['id']}/"), 200)
    assert doubtful["status"] == "PROCESSING", doubtful
    assert doubtful["failure_reason"] == "bank_outcome_unknown", doubtful
    balance, held = stack.sqlite("SELECT balance, held FROM wallets WHERE uuid = ?", (wallet,))[0]
    assert (balance, held) == (10_000 - 1_000 - 2_000, 2_000)
    refunds = stack.sqlite("SELECT count(*) FROM ledger WHERE transaction_id = ? AND kind = 'REFUND'", (second["id"],))
    assert refunds == [(0,)]
    outcomes = h.json_log_lines(result.stderr)
    assert any(o.get("withdrawal") == second["id"] and o.get("outcome") == "unknown" for o in outcomes), outcomes

    keys = dict(stack.sqlite("SELECT id, bank_key FROM transactions WHERE id IN (?, ?)", (first["id"], second["id"])))
    assert bank.paid == [keys[first["id"]], keys[second["id"]]]
