"""SIGKILL the responder under a deposit load: every deposit that was answered 2xx
survives, the ledger still equals the balance, the file is sound, and retries with
the same Idempotency-Key settle the unanswered ones exactly once."""

import concurrent.futures
import signal
import threading
import time

from . import helpers as h

THREADS = 8


def _ledger_sum(stack, wallet_uuid):
    return h.ledger_sums(stack)[wallet_uuid][1]


def test_sigkill_under_deposit_load(stack):
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(3)]
    stop = threading.Event()
    killed = threading.Event()
    lock = threading.Lock()
    answered = []    # (wallet, key, amount, transaction id)
    unanswered = []  # (wallet, key, amount, what happened)
    gateway_errors = []
    other = []
    counts = {"before_kill": 0}

    def load(t):
        client = h.Client(stack.url, timeout=10)
        i = 0
        deadline = time.monotonic() + 120   # a runaway loop cannot outlive a broken test
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                i += 1
                wallet = wallets[(t + i) % len(wallets)]
                amount = 1000 * t + i
                key = f"dur-{t}-{i}"
                try:
                    r = client.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount},
                                       headers={"Idempotency-Key": key})
                except OSError as e:
                    with lock:
                        unanswered.append((wallet, key, amount, repr(e)))
                    time.sleep(0.01)
                    continue
                with lock:
                    if r.status == 200:
                        answered.append((wallet, key, amount, r.json()["transaction"]["id"]))
                        if not killed.is_set():
                            counts["before_kill"] += 1
                    elif r.status in (502, 503, 504):
                        unanswered.append((wallet, key, amount, r.status))
                        gateway_errors.append(r)
                    else:
                        unanswered.append((wallet, key, amount, r.status))
                        other.append((r.status, r.body[:200]))
                if r.status != 200:
                    time.sleep(0.01)
        finally:
            client.close()

    old_pid = stack.responder_pid()
    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(load, t) for t in range(THREADS)]
        try:
            time.sleep(1.5)
            stack.kill_responder(signal.SIGKILL)
            killed.set()
            time.sleep(0.5)          # requests keep coming while the responder is dead
            stack.restart_responder()
            time.sleep(1.0)          # and after it is back
        finally:
            stop.set()               # whatever happened above, the load threads end
        for f in futures:
            f.result()

    new_pid = stack.responder_pid()
    assert new_pid != old_pid
    assert counts["before_kill"] > 20, f"too little load before the kill: {counts}"
    assert not other, f"answers other than 200 and 502/503/504: {other[:5]}"
    for r in gateway_errors:
        h.assert_error(r, r.status)          # nginx's own errors keep the JSON shape
    keys = [a[1] for a in answered]
    assert len(keys) == len(set(keys))
    print(f"\n{len(answered)} answered, {len(unanswered)} unanswered ({len(gateway_errors)} gateway errors)")

    # Every answered deposit is there, with its amount, completed.
    for wallet, key, amount, tid in answered:
        resp = stack.request("GET", f"/wallets/{wallet}/transactions/{tid}/")
        tx = h.assert_json_ok(resp, 200)
        h.assert_transaction(tx, type="DEPOSIT", status="COMPLETED", amount=amount, wallet=wallet,
                             idempotency_key=key)

    for wallet in wallets:
        sure = sum(a[2] for a in answered if a[0] == wallet)
        maybe = sum(u[2] for u in unanswered if u[0] == wallet)
        balance = h.get_wallet(stack, wallet)["balance"]
        assert sure <= balance <= sure + maybe, f"{wallet}: balance {balance} outside [{sure}, {sure + maybe}]"
        assert _ledger_sum(stack, wallet) == balance
    assert stack.integrity_check() == "ok"

    # Retrying every unanswered request with its key settles it exactly once.
    for wallet, key, amount, _ in unanswered:
        r = stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount},
                          headers={"Idempotency-Key": key})
        tx = h.assert_json_ok(r, 200)["transaction"]
        assert tx["amount"] == amount and tx["idempotency_key"] == key
    # And replaying an answered one gives back its transaction, not a new one.
    for wallet, key, amount, tid in answered[:: max(1, len(answered) // 50)]:
        r = stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount},
                          headers={"Idempotency-Key": key})
        assert h.assert_json_ok(r, 200)["transaction"]["id"] == tid
    for wallet in wallets:
        everything = sum(a[2] for a in answered if a[0] == wallet) + sum(u[2] for u in unanswered if u[0] == wallet)
        balance = h.get_wallet(stack, wallet)["balance"]
        assert balance == everything, f"{wallet}: after retries balance {balance} != sum of all deposits {everything}"
        assert _ledger_sum(stack, wallet) == balance
        rows, _ = h.list_all_transactions(stack, wallet, limit=500)
        assert len(rows) == sum(1 for a in answered if a[0] == wallet) + sum(1 for u in unanswered if u[0] == wallet)
    assert stack.integrity_check() == "ok"


def test_committed_data_survives_restart(stack):
    """A plain kill -9 with nothing in flight, then a restart: all state is still there."""
    w = h.create_wallet(stack)["uuid"]
    h.deposit(stack, w, 500)
    tx = h.withdraw(stack, w, 200, scheduled_for=h.future())
    before = h.list_all_transactions(stack, w)[0]
    stack.kill_responder(signal.SIGKILL)
    down = stack.request("GET", f"/wallets/{w}/")
    h.assert_error(down, 502)
    stack.restart_responder()
    assert h.get_wallet(stack, w)["balance"] == 500
    assert h.list_all_transactions(stack, w)[0] == before
    canceled = h.assert_json_ok(stack.request("POST", f"/wallets/{w}/transactions/{tx['id']}/cancel"), 200)
    assert canceled["status"] == "CANCELED"


def test_sigterm_finishes_and_restarts_clean(stack):
    """SIGTERM is the graceful stop: the responder exits and a new one serves the same data."""
    w = h.create_wallet(stack)["uuid"]
    h.deposit(stack, w, 5)
    stack.kill_responder(signal.SIGTERM)
    stack.restart_responder()
    assert h.get_wallet(stack, w)["balance"] == 5
    assert h.deposit(stack, w, 6)["wallet"]["balance"] == 11
