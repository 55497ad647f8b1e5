"""Group commit: the responder applies concurrent writes in one SQLite transaction, each
request in its own savepoint. These tests hit it with bursts from many threads at once and
check the promises that design must keep: every client gets exactly its own answer, a
refused request leaves no trace even when it shared a transaction with accepted ones, and a
crash mid-batch loses no write that was answered 2xx."""

import collections
import concurrent.futures
import signal
import threading
import time
import uuid as uuidlib

from . import helpers as h

THREADS = 32
ROUNDS = 20
# A wallet one maximal deposit short of overflowing: 9,223 x 10^15 <= 2^63-1 < 9,224 x 10^15.
NEAR_LIMIT_DEPOSITS = h.BALANCE_MAX // h.AMOUNT_MAX
# Preparing it is part of the test's budget; past this the overflow cases are left out.
NEAR_LIMIT_BUDGET_SECONDS = 15.0


def _metric(stack, name):
    text = stack.request("GET", "/metrics").text
    for sample, labels, value in h.parse_prometheus(text):
        if sample == name and not labels:
            return value
    return None


def _fill_to_near_limit(stack, wallet):
    """9,223 deposits of 10^15 from 32 keep-alive clients; returns the seconds it took."""
    started = time.monotonic()
    path = f"/wallets/{wallet}/deposit"

    def worker(n):
        client, statuses = h.Client(stack.url), collections.Counter()
        try:
            for _ in range(n):
                statuses[client.request("POST", path, body={"amount": h.AMOUNT_MAX}).status] += 1
        finally:
            client.close()
        return statuses

    shares = [NEAR_LIMIT_DEPOSITS // THREADS + (1 if i < NEAR_LIMIT_DEPOSITS % THREADS else 0) for i in range(THREADS)]
    total = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        for statuses in pool.map(worker, shares):
            total.update(statuses)
    assert total == {200: NEAR_LIMIT_DEPOSITS}, total
    return time.monotonic() - started


def test_mixed_burst_each_client_gets_its_own_answer(stack):
    """32 threads fire at once, round after round, a mix of writes that succeed (deposits,
    keyed deposits, withdrawals, cancels of pending withdrawals, idempotent replays) and
    writes that are refused (unknown wallet 404, balance overflow 422, key reused with
    another body 422, cancel of a non-pending transaction 409). Each answer is the one for
    its own request (status, code, and the transaction's wallet and amount), and the refused
    ones left nothing behind: per wallet the transactions are exactly the accepted ones and
    the balances are exact."""
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(4)]
    near = h.create_wallet(stack)["uuid"]
    fill_seconds = _fill_to_near_limit(stack, near)
    with_overflow = fill_seconds <= NEAR_LIMIT_BUDGET_SECONDS
    print(f"\nnear-limit wallet prepared in {fill_seconds:.1f} s; overflow cases {'in' if with_overflow else 'left out'}")
    base_balance = {w: 0 for w in wallets}
    base_balance[near] = NEAR_LIMIT_DEPOSITS * h.AMOUNT_MAX

    # Per thread: a stored key (for replays and reuse), an already canceled withdrawal and a
    # completed deposit (cancels of those are 409), and one pending withdrawal per round.
    stored = {}
    canceled = {}
    done_deposit = {}
    pending = {}
    for t in range(THREADS):
        w = wallets[t % len(wallets)]
        amount = 7_000_000 + t
        doc = h.deposit(stack, w, amount, headers={"Idempotency-Key": f"stored-{t}"})
        stored[t] = (w, amount, doc["transaction"]["id"], doc)
        base_balance[w] += amount
        c = h.withdraw(stack, w, 1 + t, scheduled_for=h.future(86_400))
        assert stack.request("POST", f"/wallets/{w}/transactions/{c['id']}/cancel").status == 200
        canceled[t] = (w, c["id"])
        d = h.deposit(stack, w, 3)
        done_deposit[t] = (w, d["transaction"]["id"])
        base_balance[w] += 3
        for r in range(ROUNDS):
            p = h.withdraw(stack, w, 100_000 + t * 100 + r, scheduled_for=h.future(86_400))
            pending[(t, r)] = (w, p["id"], p["amount"])
    counts_before = dict(stack.sqlite(
        "SELECT w.uuid, COUNT(t.id) FROM wallets w LEFT JOIN transactions t ON t.wallet_id = w.id GROUP BY w.uuid"))
    wallets_before = stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0]
    ledger_before = stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0]
    batches_before = _metric(stack, "wallet_write_batches_total")
    writes_before = _metric(stack, "wallet_write_requests_total")

    KINDS = ["deposit", "unknown_wallet", "overflow", "key_reused", "replay", "cancel_canceled",
             "withdraw", "near_deposit", "keyed_deposit", "cancel_pending", "cancel_deposit"]

    def request_for(t, r):
        """(kind, method, path, body, headers, expectation) of thread t's request in round r."""
        kind = KINDS[(t + r) % len(KINDS)]
        w = wallets[(t + r) % len(wallets)]
        unique = 1_000 + t * 1_000 + r            # every request carries its own amount
        if kind == "overflow" and not with_overflow:
            kind = "deposit"
        if kind == "deposit":
            return kind, "POST", f"/wallets/{w}/deposit", {"amount": unique}, None, (200, w, unique)
        if kind == "keyed_deposit":
            return kind, "POST", f"/wallets/{w}/deposit", {"amount": unique}, {"Idempotency-Key": f"burst-{t}-{r}"}, \
                (200, w, unique)
        if kind == "near_deposit":
            return kind, "POST", f"/wallets/{near}/deposit", {"amount": unique}, None, (200, near, unique)
        if kind == "unknown_wallet":
            return kind, "POST", f"/wallets/{uuidlib.uuid4()}/deposit", {"amount": unique}, None, (404, "not_found")
        if kind == "overflow":
            return kind, "POST", f"/wallets/{near}/deposit", {"amount": h.AMOUNT_MAX}, None, (422, h.BALANCE_OVERFLOW)
        if kind == "key_reused":
            sw, samount, _, _ = stored[t]
            return kind, "POST", f"/wallets/{sw}/deposit", {"amount": samount + 1}, {"Idempotency-Key": f"stored-{t}"}, \
                (422, h.IDEMPOTENCY_KEY_REUSED)
        if kind == "replay":
            sw, samount, _, _ = stored[t]
            return kind, "POST", f"/wallets/{sw}/deposit", {"amount": samount}, {"Idempotency-Key": f"stored-{t}"}, \
                ("replay", t)
        if kind == "cancel_canceled":
            cw, cid = canceled[t]
            return kind, "POST", f"/wallets/{cw}/transactions/{cid}/cancel", None, None, (409, h.NOT_CANCELABLE, "CANCELED")
        if kind == "cancel_deposit":
            dw, did = done_deposit[t]
            return kind, "POST", f"/wallets/{dw}/transactions/{did}/cancel", None, None, (409, h.NOT_CANCELABLE, "COMPLETED")
        if kind == "cancel_pending":
            pw, pid, pamount = pending[(t, r)]
            return kind, "POST", f"/wallets/{pw}/transactions/{pid}/cancel", None, None, ("canceled", pw, pid, pamount)
        assert kind == "withdraw"
        return kind, "POST", f"/wallets/{w}/withdraw", {"amount": unique, "scheduled_for": h.future(86_400)}, None, \
            (201, w, unique)

    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    answers = []          # (t, r, kind, expectation, status, doc)

    def client_run(t):
        client = h.Client(stack.url)
        try:
            for r in range(ROUNDS):
                kind, method, path, body, headers, expectation = request_for(t, r)
                barrier.wait(timeout=30)
                resp = client.request(method, path, body=body, headers=headers)
                doc = resp.json()
                with lock:
                    answers.append((t, r, kind, expectation, resp.status, doc))
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        for f in [pool.submit(client_run, t) for t in range(THREADS)]:
            f.result()
    assert len(answers) == THREADS * ROUNDS

    # Each answer is its own.
    wrong = []
    accepted = collections.defaultdict(list)    # wallet -> [(type, amount, id)]
    canceled_in_burst = set()
    kinds = collections.Counter()
    for t, r, kind, exp, status, doc in answers:
        kinds[kind] += 1
        try:
            if exp[0] in (200, 201):
                want_status, want_wallet, want_amount = exp
                h.expect(status == want_status, f"status {status}")
                tx = doc["transaction"] if want_status == 200 else doc
                if want_status == 200:
                    h.expect(doc["wallet"]["uuid"] == want_wallet, f"wallet object {doc['wallet']['uuid']}")
                h.assert_transaction(tx, wallet=want_wallet, amount=want_amount,
                                     type="DEPOSIT" if want_status == 200 else "WITHDRAWAL",
                                     status="COMPLETED" if want_status == 200 else "PENDING")
                accepted[want_wallet].append((tx["type"], want_amount, tx["id"]))
            elif exp[0] == "replay":
                sw, samount, sid, sdoc = stored[exp[1]]
                h.expect(status == 200 and doc == sdoc, f"replay gave {status} {doc}, not the stored answer")
            elif exp[0] == "canceled":
                _, pw, pid, pamount = exp
                h.expect(status == 200, f"status {status}")
                h.assert_transaction(doc, id=pid, wallet=pw, amount=pamount, status="CANCELED")
                canceled_in_burst.add(pid)
            else:
                want_status, code = exp[0], exp[1]
                h.expect(status == want_status, f"status {status}")
                h.expect(set(doc) == {"error"} and doc["error"]["code"] == code, f"error {doc}")
                if len(exp) > 2:
                    h.expect(exp[2] in doc["error"]["message"], f"409 message does not name {exp[2]}: {doc}")
        except (AssertionError, KeyError, TypeError) as e:
            wrong.append(f"thread {t} round {r} {kind}: expected {exp}, got {status} {str(doc)[:300]} ({e})")
    assert not wrong, f"{len(wrong)} clients got an answer that is not theirs:\n" + "\n".join(wrong[:10])
    assert set(kinds) >= set(KINDS) - ({"overflow"} if not with_overflow else set()), kinds

    # The burst really was group-committed: fewer transactions than write requests.
    if batches_before is not None:
        batches = _metric(stack, "wallet_write_batches_total") - batches_before
        writes = _metric(stack, "wallet_write_requests_total") - writes_before
        print(f"{int(writes)} writes in {int(batches)} batches ({writes / max(batches, 1):.1f} per batch)")
        assert writes >= THREADS * ROUNDS and batches < writes, (writes, batches)

    # Refused requests left no trace; accepted ones are all there, exactly.
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == wallets_before, "a 404 created a wallet"
    counts_after = dict(stack.sqlite(
        "SELECT w.uuid, COUNT(t.id) FROM wallets w LEFT JOIN transactions t ON t.wallet_id = w.id GROUP BY w.uuid"))
    for w in wallets + [near]:
        assert counts_after[w] == counts_before[w] + len(accepted[w]), \
            f"{w}: {counts_after[w] - counts_before[w]} new transactions, {len(accepted[w])} accepted"
        expected = base_balance[w] + sum(a for kind, a, _ in accepted[w] if kind == "DEPOSIT")
        wallet = h.get_wallet(stack, w)
        assert wallet["balance"] == expected, f"{w}: balance {wallet['balance']} != {expected}"
        assert h.ledger_sums(stack)[w] == (expected, expected)
    new_deposits = sum(1 for w in accepted for kind, _, _ in accepted[w] if kind == "DEPOSIT")
    assert stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0] == ledger_before + new_deposits
    for t, (sw, samount, sid, _) in stored.items():
        rows = stack.sqlite("SELECT id, amount FROM transactions WHERE idempotency_key = ?", (f"stored-{t}",))
        assert rows == [(sid, samount)], f"key stored-{t}: {rows}"
    for t, (cw, cid) in canceled.items():
        assert stack.sqlite("SELECT status FROM transactions WHERE id = ?", (cid,)) == [("CANCELED",)]
    for t, (dw, did) in done_deposit.items():
        assert stack.sqlite("SELECT status FROM transactions WHERE id = ?", (did,)) == [("COMPLETED",)]
    for (t, r), (pw, pid, _) in pending.items():
        want = "CANCELED" if pid in canceled_in_burst else "PENDING"
        assert stack.sqlite("SELECT status FROM transactions WHERE id = ?", (pid,)) == [(want,)], (t, r, pid)
    audit = stack.walletctl("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_sigkill_with_batches_in_flight_loses_no_answered_write(stack):
    """32 threads deposit nonstop (with some refused writes mixed in) while the responder
    is killed with SIGKILL mid-load and restarted: every deposit answered 2xx is in the
    database with its amount, each balance lies between the answered deposits and those
    plus the unanswered ones, balances equal their ledger sums, and the file is sound."""
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(4)]
    stop = threading.Event()
    killed = threading.Event()
    lock = threading.Lock()
    answered = []        # (wallet, amount, transaction id)
    unanswered = []      # (wallet, amount, what)
    refused = collections.Counter()
    other = []
    before_kill = [0]

    def load(t):
        client = h.Client(stack.url, timeout=10)
        i = 0
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                i += 1
                amount = t * 100_000 + i              # unique per request
                if i % 7 == 0:
                    # A write that is refused inside the batch: must neither answer 2xx nor leave anything.
                    try:
                        r = client.request("POST", f"/wallets/{uuidlib.uuid4()}/deposit", body={"amount": amount})
                    except OSError:
                        continue
                    with lock:
                        if r.status == 404:
                            refused[r.status] += 1
                        elif r.status not in (502, 503, 504):
                            other.append(("unknown wallet", r.status, r.body[:200]))
                    continue
                wallet = wallets[(t + i) % len(wallets)]
                try:
                    r = client.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount})
                except OSError as e:
                    with lock:
                        unanswered.append((wallet, amount, repr(e)))
                    time.sleep(0.01)
                    continue
                with lock:
                    if r.status == 200:
                        tx = r.json()["transaction"]
                        answered.append((wallet, amount, tx["id"]))
                        if tx["amount"] != amount or tx["wallet"] != wallet:
                            other.append(("not my answer", wallet, amount, tx))
                        if not killed.is_set():
                            before_kill[0] += 1
                    elif r.status in (502, 503, 504):
                        unanswered.append((wallet, amount, r.status))
                    else:
                        other.append((r.status, r.body[:200]))
                if r.status != 200:
                    time.sleep(0.01)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(load, t) for t in range(THREADS)]
        try:
            # Kill once the load is well under way (300 answered writes, or 10 s at most).
            load_deadline = time.monotonic() + 10
            while before_kill[0] < 300 and time.monotonic() < load_deadline:
                time.sleep(0.05)
            stack.kill_responder(signal.SIGKILL)
            killed.set()
            time.sleep(0.3)
            stack.restart_responder()
            time.sleep(0.7)
        finally:
            stop.set()
        for f in futures:
            f.result()

    print(f"\n{len(answered)} answered ({before_kill[0]} before the kill), {len(unanswered)} unanswered, "
          f"{sum(refused.values())} refused")
    assert before_kill[0] >= 300, f"too little load before the kill: {before_kill[0]}"
    assert not other, f"unexpected answers: {other[:5]}"
    ids = [a[2] for a in answered]
    assert len(ids) == len(set(ids)), "two answers carry the same transaction id"

    # Every 2xx write is there.
    missing = []
    client = h.Client(stack.url)
    try:
        for wallet, amount, tid in answered:
            r = client.request("GET", f"/wallets/{wallet}/transactions/{tid}/")
            if r.status != 200:
                missing.append((wallet, amount, tid, r.status))
                continue
            tx = r.json()
            if (tx["amount"], tx["wallet"], tx["type"], tx["status"]) != (amount, wallet, "DEPOSIT", "COMPLETED"):
                missing.append((wallet, amount, tid, tx))
    finally:
        client.close()
    assert not missing, f"{len(missing)} deposits answered 200 are lost or changed: {missing[:5]}"

    sums = h.ledger_sums(stack)
    for w in wallets:
        sure = sum(a for wallet, a, _ in answered if wallet == w)
        maybe = sum(a for wallet, a, _ in unanswered if wallet == w)
        balance = h.get_wallet(stack, w)["balance"]
        assert sure <= balance <= sure + maybe, f"{w}: balance {balance} outside [{sure}, {sure + maybe}]"
        assert sums[w] == (balance, balance), f"{w}: balance/ledger {sums[w]}"
        count = stack.sqlite("SELECT COUNT(*) FROM transactions t JOIN wallets w ON w.id = t.wallet_id "
                             "WHERE w.uuid = ?", (w,))[0][0]
        n_sure = sum(1 for wallet, _, _ in answered if wallet == w)
        n_maybe = sum(1 for wallet, _, _ in unanswered if wallet == w)
        assert n_sure <= count <= n_sure + n_maybe, (w, count, n_sure, n_maybe)
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == len(wallets), "a refused deposit created a wallet"
    assert stack.integrity_check() == "ok"
    audit = stack.walletctl("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
