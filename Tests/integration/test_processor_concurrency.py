"""Several processors at once over many due withdrawals, while clients keep depositing
through nginx: every withdrawal is settled exactly once, the bank pays each completed one
exactly once and nothing else, and the books balance (README, "Withdrawals" and
"Withdrawals are claimed with leases": two processors never hold one lease)."""

import collections
import concurrent.futures
import random
import threading
import time

from . import helpers as h

WALLETS = 20
WITHDRAWALS = 1_000
PROCESSORS = 3
BANK_CONCURRENCY = 16
INITIAL_FUNDS = 10_000              # per wallet; the withdrawals ask ~27,500 each on average
DEPOSIT_THREADS = 4
MAX_ROUNDS = 5

SETTINGS = {
    "WALLET_BANK_CONCURRENCY": str(BANK_CONCURRENCY),
    # fcgiwrap children: one per bank call in flight across every processor.
    "WALLET_BANK_WORKERS": str(PROCESSORS * BANK_CONCURRENCY),
    # Nothing here should time out; if something did, its retry would be due at once.
    "WALLET_BANK_TIMEOUT_MS": "20000",
    "WALLET_RETRY_BASE_SECONDS": "0",
    "WALLET_UNKNOWN_RECHECK_SECONDS": "0",
}


def test_concurrent_processors_settle_each_withdrawal_once(stack_factory):
    """Three processors started at once over 1,000 due withdrawals on 20 wallets (funded so
    that some must fail for insufficient funds), bank `success`, deposits arriving all the
    while: every withdrawal ends COMPLETED or FAILED; the bank's payouts are the completed
    withdrawals one to one; each key was called once; balances equal their ledger sums,
    never negative, nothing held; audit verify passes."""
    stack = stack_factory(extra_env=SETTINGS, bank_mode="success")
    rng = random.Random(20261125)
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(WALLETS)]
    for w in wallets:
        h.deposit(stack, w, INITIAL_FUNDS)

    # 1,000 withdrawals, due at once, 50 per wallet.
    plan = [(wallets[i % WALLETS], rng.randint(100, 1_000)) for i in range(WITHDRAWALS)]
    local = threading.local()

    def schedule(item):
        wallet, amount = item
        if not hasattr(local, "client"):
            local.client = h.Client(stack.url)
        r = local.client.request("POST", f"/wallets/{wallet}/withdraw", body={"amount": amount})
        assert r.status == 201, r
        tx = r.json()
        assert tx["wallet"] == wallet and tx["amount"] == amount and tx["status"] == "PENDING", tx
        return tx["id"], wallet, amount

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        withdrawals = {tid: (wallet, amount) for tid, wallet, amount in pool.map(schedule, plan)}
    assert len(withdrawals) == WITHDRAWALS
    scheduled_in = time.monotonic() - started

    # Deposits keep coming while the processors run.
    stop = threading.Event()
    lock = threading.Lock()
    deposits = []        # (wallet, amount, transaction id), answered 200
    bad_answers = []

    def depositor(seed):
        r_ = random.Random(seed)
        client = h.Client(stack.url)
        deadline = time.monotonic() + 90
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                wallet, amount = r_.choice(wallets), r_.randint(1, 50)
                r = client.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount})
                with lock:
                    if r.status == 200:
                        tx = r.json()["transaction"]
                        deposits.append((wallet, amount, tx["id"]))
                        if tx["amount"] != amount or tx["wallet"] != wallet:
                            bad_answers.append(("echo", wallet, amount, tx))
                    else:
                        bad_answers.append((r.status, r.body[:200]))
                time.sleep(0.002)
        finally:
            client.close()

    threads = [threading.Thread(target=depositor, args=(seed,), daemon=True) for seed in range(DEPOSIT_THREADS)]
    for t in threads:
        t.start()
    rounds = 0
    started = time.monotonic()
    try:
        while True:
            rounds += 1
            procs = [stack.spawn_processor() for _ in range(PROCESSORS)]
            for p in procs:
                assert p.wait(timeout=90) == 0, f"a processor exited {p.returncode}\n{stack.diagnostics()}"
            open_count = stack.sqlite(
                "SELECT COUNT(*) FROM transactions WHERE type = 'WITHDRAWAL' AND status IN ('PENDING', 'PROCESSING')")[0][0]
            if open_count == 0:
                break
            assert rounds < MAX_ROUNDS, f"{open_count} withdrawals still open after {rounds} rounds"
        deposits_during = len(deposits)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    processed_in = time.monotonic() - started

    assert not bad_answers, f"deposit answers other than 200: {bad_answers[:5]}"
    assert deposits_during > 10, f"too few deposits during the passes ({deposits_during})"

    # Every withdrawal in exactly one final state.
    rows = stack.sqlite(
        "SELECT t.id, w.uuid, t.amount, t.status, t.failure_reason, t.attempts, t.executed_at, t.bank_key "
        "FROM transactions t JOIN wallets w ON w.id = t.wallet_id WHERE t.type = 'WITHDRAWAL'")
    assert len(rows) == WITHDRAWALS
    status = collections.Counter()
    completed = {}
    for tid, wallet, amount, st, reason, attempts, executed_at, key in rows:
        assert withdrawals[tid] == (wallet, amount), f"withdrawal {tid} changed: {(wallet, amount)}"
        status[st] += 1
        if st == "COMPLETED":
            assert reason is None and attempts == 1 and executed_at is not None, (tid, reason, attempts)
            completed[key] = (tid, wallet, amount)
        else:
            assert st == "FAILED" and reason == "insufficient_funds" and attempts == 0, (tid, st, reason, attempts)
    assert status["COMPLETED"] > 0 and status["FAILED"] > 0, f"funding did not split the outcomes: {status}"
    assert sum(status.values()) == WITHDRAWALS

    # The bank's payouts are the COMPLETED withdrawals, one to one.
    payouts = stack.bank_ledger()
    keys = [p.idempotency_key for p in payouts]
    doubled = [k for k, n in collections.Counter(keys).items() if n > 1]
    assert not doubled, f"paid twice: {doubled[:5]}"
    assert set(keys) == set(completed), (
        f"payouts without a COMPLETED withdrawal: {sorted(set(keys) - set(completed))[:5]}; "
        f"COMPLETED without payout: {sorted(set(completed) - set(keys))[:5]}")
    for p in payouts:
        _, wallet, amount = completed[p.idempotency_key]
        assert (p.wallet, p.amount) == (wallet, str(amount)), p
    # Each key reached the bank once: no withdrawal was worked on by two processors.
    calls = collections.Counter((c.idempotency_key, c.answer) for c in stack.bank_calls())
    assert calls == collections.Counter({(k, "paid"): 1 for k in completed}), \
        f"unexpected calls: {[c for c, n in calls.items() if n != 1 or c[1] != 'paid' or c[0] not in completed][:5]}"

    # The processors' own summaries add up to one claim per withdrawal.
    summaries = [d for d in h.json_log_lines(stack.logs("processor.log")) if d.get("event") == "pass"]
    assert len(summaries) == PROCESSORS * rounds
    assert sum(d["claimed"] for d in summaries) == WITHDRAWALS
    assert sum(d["completed"] for d in summaries) == status["COMPLETED"]
    assert sum(d["failed"] for d in summaries) == status["FAILED"]
    assert sum(d.get("lease_lost", 0) for d in summaries) == 0

    # Books: ledger = balance >= 0, nothing held, and each balance is exactly what came in
    # minus what was paid out.
    sums = h.ledger_sums(stack)
    held = dict(stack.sqlite("SELECT uuid, held FROM wallets"))
    paid_by_wallet = collections.Counter()
    for _, wallet, amount in completed.values():
        paid_by_wallet[wallet] += amount
    deposited = collections.Counter()
    for wallet, amount, _ in deposits:
        deposited[wallet] += amount
    for w in wallets:
        balance, ledger_sum = sums[w]
        assert balance == ledger_sum, f"{w}: balance {balance} != ledger sum {ledger_sum}"
        assert balance >= 0
        assert held[w] == 0, f"{w}: held {held[w]}"
        assert balance == INITIAL_FUNDS + deposited[w] - paid_by_wallet[w], w
        assert h.get_wallet(stack, w)["balance"] == balance
    column = h.ledger_amount_column(stack)
    per_tx = collections.defaultdict(list)
    for tid, kind, delta in stack.sqlite(f"SELECT transaction_id, kind, {column} FROM ledger"):
        per_tx[tid].append((kind, delta))
    for tid, wallet, amount in completed.values():
        assert per_tx[tid] == [("DEBIT", -amount)], (tid, per_tx[tid])
    for tid in set(withdrawals) - {v[0] for v in completed.values()}:
        assert tid not in per_tx, (tid, per_tx[tid])

    audit = stack.walletctl("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert stack.integrity_check() == "ok"
    print(f"\n{WITHDRAWALS} withdrawals scheduled in {scheduled_in:.1f} s; {PROCESSORS} processors x {rounds} "
          f"round(s) in {processed_in:.1f} s: {dict(status)}; {len(deposits)} deposits meanwhile; "
          f"claims per pass {[d['claimed'] for d in summaries]}")
