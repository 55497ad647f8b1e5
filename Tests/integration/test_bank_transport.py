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

import socket
import threading

import pytest

from . import helpers as h

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
    """Accepts one connection and pays and answers the first request on it (keeping the
    connection alive), then pays the second request and closes the connection without a
    byte of answer. What libcurl's resend then meets depends on `resend`:
    "refused": the bank stopped listening after the first connection, so it is refused;
    "404": a second connection is accepted and answered with a bare 404 (as a proxy in
    front of the bank might), paying nothing. `paid` lists the keys paid, in order."""

    def __init__(self, resend="refused"):
        self.resend = resend
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.paid = []
        self.resent = []
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
            if self.resend == "refused":
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
            if self.resend == "404":
                again, _ = self.listener.accept()
                self.listener.close()
                with again:
                    resent = read_request(again)
                    assert resent is not None, "libcurl did not resend"
                    self.resent.append(resent[0]["idempotency-key"])
                    page = b"<html><body>Not Found</body></html>"
                    again.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(page), page))
        except Exception as error:  # reported by the test
            self.error = error

    def join(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the scripted bank is still serving"
        assert self.error is None, f"the scripted bank failed: {self.error!r}"


@pytest.mark.parametrize("resend", ["refused", "404"])
def test_a_resend_after_a_dropped_kept_connection_is_not_a_refund(stack, resend):
    """The bank paid the second withdrawal on a kept connection and closed it without an
    answer; libcurl resent the request on a new connection, which was refused, or answered
    with a bare 404 that says nothing about the first request. Either way the outcome is
    unknown: held, never refunded."""
    wallet = h.create_wallet(stack)["uuid"]
    h.deposit(stack, wallet, 10_000)
    first = h.withdraw(stack, wallet, 1_000)
    second = h.withdraw(stack, wallet, 2_000)

    bank = DropThenRefuseBank(resend)
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
    if resend == "404":
        assert bank.resent == bank.paid[1:], "libcurl's resend did not reach the scripted bank"

    paid = h.assert_json_ok(stack.request("GET", f"/wallets/{wallet}/transactions/{first['id']}/"), 200)
    assert paid["status"] == "COMPLETED", paid

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
