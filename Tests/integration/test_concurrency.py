"""Many clients at once on a few wallets, through nginx: no 5xx, no lost or doubled
money, balances equal to the ledger, a sound database file."""

import collections
import concurrent.futures
import random
import threading

from . import helpers as h

CLIENTS = 32
REQUESTS_PER_CLIENT = 50
WALLETS = 4


def test_concurrent_deposits_and_withdrawals(stack):
    wallets = [h.create_wallet(stack)["uuid"] for _ in range(WALLETS)]
    lock = threading.Lock()
    deposited = collections.Counter()            # wallet -> sum of 2xx deposits
    deposit_ids = collections.defaultdict(set)   # wallet -> transaction ids
    withdrawal_ids = collections.defaultdict(dict)  # wallet -> id -> amount
    canceled_ids = collections.defaultdict(set)
    statuses = collections.Counter()
    unexpected = []

    def client_run(seed):
        rng = random.Random(seed)
        client = h.Client(stack.url)
        mine_pending = []
        try:
            for i in range(REQUESTS_PER_CLIENT):
                wallet = rng.choice(wallets)
                roll = rng.random()
                if roll < 0.6:
                    amount = rng.randint(1, 10 ** 9)
                    headers = {"Idempotency-Key": f"c{seed}-{i}"} if rng.random() < 0.3 else None
                    r = client.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount}, headers=headers)
                    with lock:
                        statuses[r.status] += 1
                        if r.status == 200:
                            doc = r.json()
                            deposited[wallet] += amount
                            deposit_ids[wallet].add(doc["transaction"]["id"])
                            if doc["transaction"]["amount"] != amount or doc["wallet"]["uuid"] != wallet:
                                unexpected.append(("deposit echoed wrong", amount, doc))
                        else:
                            unexpected.append(("deposit", r.status, r.body[:200]))
                elif roll < 0.85:
                    amount = rng.randint(1, 10 ** 9)
                    r = client.request("POST", f"/wallets/{wallet}/withdraw",
                                       body={"amount": amount, "scheduled_for": h.future(86400)})
                    with lock:
                        statuses[r.status] += 1
                        if r.status == 201:
                            tx = r.json()
                            withdrawal_ids[wallet][tx["id"]] = amount
                            mine_pending.append((wallet, tx["id"]))
                        else:
                            unexpected.append(("withdraw", r.status, r.body[:200]))
                elif roll < 0.92 and mine_pending:
                    wallet, tid = mine_pending.pop(rng.randrange(len(mine_pending)))
                    r = client.request("POST", f"/wallets/{wallet}/transactions/{tid}/cancel")
                    with lock:
                        statuses[r.status] += 1
                        if r.status == 200 and r.json()["status"] == "CANCELED":
                            canceled_ids[wallet].add(tid)
                        else:
                            unexpected.append(("cancel", r.status, r.body[:200]))
                else:
                    r = client.request("GET", rng.choice([f"/wallets/{wallet}/",
                                                          f"/wallets/{wallet}/transactions/?limit=20"]))
                    with lock:
                        statuses[r.status] += 1
                        if r.status != 200:
                            unexpected.append(("read", r.status, r.body[:200]))
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        for f in [pool.submit(client_run, seed) for seed in range(CLIENTS)]:
            f.result()

    assert not [s for s in statuses if s >= 500], f"5xx answers: {statuses}"
    assert not unexpected, f"{len(unexpected)} unexpected answers, first: {unexpected[:5]}; statuses {statuses}"
    assert sum(statuses.values()) == CLIENTS * REQUESTS_PER_CLIENT

    sums = h.ledger_sums(stack)
    for wallet in wallets:
        api_balance = h.get_wallet(stack, wallet)["balance"]
        db_balance, ledger_sum = sums[wallet]
        assert api_balance == deposited[wallet], f"{wallet}: balance {api_balance} != 2xx deposits {deposited[wallet]}"
        assert db_balance == api_balance
        assert ledger_sum == api_balance, f"{wallet}: ledger sum {ledger_sum} != balance {api_balance}"

        rows, _ = h.list_all_transactions(stack, wallet, limit=500)
        ids = [t["id"] for t in rows]
        assert len(ids) == len(set(ids)), "a transaction is listed twice"
        assert ids == sorted(ids, reverse=True), "list not newest first"
        got_deposits = {t["id"] for t in rows if t["type"] == "DEPOSIT"}
        assert got_deposits == deposit_ids[wallet], f"{wallet}: deposits listed != deposits answered 200"
        assert sum(t["amount"] for t in rows if t["type"] == "DEPOSIT") == deposited[wallet]
        got_withdrawals = {t["id"]: t for t in rows if t["type"] == "WITHDRAWAL"}
        assert set(got_withdrawals) == set(withdrawal_ids[wallet])
        for tid, tx in got_withdrawals.items():
            assert tx["amount"] == withdrawal_ids[wallet][tid]
            want = "CANCELED" if tid in canceled_ids[wallet] else "PENDING"
            assert tx["status"] == want, f"withdrawal {tid} is {tx['status']}, expected {want}"

    # Ids are unique across wallets too, and the file is sound.
    all_ids = [i for w in wallets for i in deposit_ids[w] | set(withdrawal_ids[w])]
    assert len(all_ids) == len(set(all_ids))
    assert stack.integrity_check() == "ok"
    assert stack.foreign_key_violations() == []


def test_concurrent_deposits_to_one_wallet_exact_sum(stack):
    """The hottest case: every client on one wallet, deposits only, new connection per request."""
    wallet = h.create_wallet(stack)["uuid"]
    amounts = [[(c * 1000 + i) % 9973 + 1 for i in range(40)] for c in range(CLIENTS)]

    def run(c):
        ok, bad = 0, []
        for amount in amounts[c]:
            r = stack.request("POST", f"/wallets/{wallet}/deposit", body={"amount": amount})
            if r.status == 200:
                ok += amount
            else:
                bad.append((r.status, r.body[:200]))
        return ok, bad

    with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(run, range(CLIENTS)))
    bad = [b for _, bs in results for b in bs]
    assert not bad, f"{len(bad)} failed deposits: {bad[:5]}"
    total = sum(ok for ok, _ in results)
    assert total == sum(map(sum, amounts))
    assert h.get_wallet(stack, wallet)["balance"] == total
    assert h.ledger_sums(stack)[wallet] == (total, total)
    assert stack.sqlite("SELECT COUNT(*) FROM ledger")[0][0] == CLIENTS * 40
    assert stack.integrity_check() == "ok"
