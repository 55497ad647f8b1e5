import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// One step of a ledger scenario, run through the store as the services would.
enum LedgerStep: Sendable {
    case deposit(Int64)
    /// A withdrawal due now, claimed, and given these bank outcomes attempt by attempt.
    case withdraw(Int64, [PayoutOutcome])
    /// A withdrawal scheduled for later and canceled.
    case cancel(Int64)
}

struct LedgerScenario: Sendable, CustomTestStringConvertible {
    var name: String
    var steps: [LedgerStep]
    var balance: Int64
    var held: Int64
    var kinds: [LedgerEntry.Kind]
    var withdrawals: [(TransactionStatus, FailureReason?)]

    var testDescription: String { name }
}

private let ledgerScenarios: [LedgerScenario] = [
    LedgerScenario(
        name: "deposits only", steps: [.deposit(100), .deposit(250)], balance: 350, held: 0,
        kinds: [.deposit, .deposit], withdrawals: []),
    LedgerScenario(
        name: "paid withdrawal", steps: [.deposit(100), .withdraw(30, [.paid])], balance: 70, held: 0,
        kinds: [.deposit, .debit], withdrawals: [(.completed, nil)]),
    LedgerScenario(
        name: "declined on every attempt, refunded", steps: [.deposit(100), .withdraw(30, [.declined("x"), .declined("x")])],
        balance: 100, held: 0, kinds: [.deposit, .debit, .refund], withdrawals: [(.failed, .bankRejected)]),
    LedgerScenario(
        name: "unreachable on every attempt, refunded", steps: [.deposit(100), .withdraw(30, [.unreachable("x"), .unreachable("x")])],
        balance: 100, held: 0, kinds: [.deposit, .debit, .refund], withdrawals: [(.failed, .bankUnreachable)]),
    LedgerScenario(
        name: "insufficient funds", steps: [.deposit(10), .withdraw(30, [])], balance: 10, held: 0,
        kinds: [.deposit], withdrawals: [(.failed, .insufficientFunds)]),
    LedgerScenario(
        name: "unknown on every attempt, held", steps: [.deposit(100), .withdraw(40, [.unknown("x"), .unknown("x")])],
        balance: 60, held: 40, kinds: [.deposit, .debit], withdrawals: [(.processing, .bankOutcomeUnknown)]),
    LedgerScenario(
        name: "canceled before it was due", steps: [.deposit(100), .cancel(60)], balance: 100, held: 0,
        kinds: [.deposit], withdrawals: [(.canceled, .canceled)]),
    LedgerScenario(
        name: "mixed",
        steps: [
            .deposit(500), .withdraw(100, [.paid]), .withdraw(50, [.declined("x"), .unreachable("y")]), .cancel(70),
            .withdraw(1_000, []), .deposit(5), .withdraw(200, [.unknown("x"), .paid]), .withdraw(205, [.unknown("x"), .declined("y")]),
            .withdraw(205, [.paid]),
        ],
        balance: 0, held: 0,
        kinds: [.deposit, .debit, .debit, .refund, .deposit, .debit, .debit, .refund, .debit],
        withdrawals: [
            (.completed, nil), (.failed, .bankUnreachable), (.canceled, .canceled), (.failed, .insufficientFunds),
            (.completed, nil), (.failed, .bankRejected), (.completed, nil),
        ]),
]

/// Runs ledger steps through the store, checking after every transaction that a balance
/// change came with exactly one ledger row carrying that change.
private final class LedgerDriver {
    let store: Store
    let wallet: WalletID
    let policy = RetryPolicy(maxRetries: 1, baseSeconds: 0, unknownRecheckSeconds: 3_600)
    let owner = "store-test"

    init(store: Store) throws {
        self.store = store
        let id = WalletID.random()
        wallet = id
        try store.database.immediateTransaction { _ = try store.createWallet(id: id, now: .now()) }
    }

    /// Runs `body` in a transaction and checks the one-row-per-balance-change rule around it.
    func transaction<T>(sourceLocation: SourceLocation = #_sourceLocation, _ body: (Timestamp) throws -> T) throws -> T {
        let before = try #require(try store.wallet(wallet)).balance.minorUnits
        let rowsBefore = try ledgerRows(store).count
        let result = try store.database.immediateTransaction { try body(.now()) }
        let after = try #require(try store.wallet(wallet)).balance.minorUnits
        let newRows = try ledgerRows(store).dropFirst(rowsBefore)
        if after == before {
            #expect(newRows.isEmpty, sourceLocation: sourceLocation)
        } else {
            #expect(newRows.count == 1, sourceLocation: sourceLocation)
            #expect(newRows.first?.delta == after - before, sourceLocation: sourceLocation)
            #expect(newRows.first?.balanceAfter == after, sourceLocation: sourceLocation)
        }
        return result
    }

    func run(_ step: LedgerStep) throws -> Int64? {
        switch step {
        case .deposit(let amount):
            _ = try transaction { now in
                try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: amount)!, idempotencyKey: nil, now: now).get()
            }
            return nil
        case .cancel(let amount):
            let id = try transaction { now in
                try store.scheduleWithdrawal(
                    from: wallet, by: .operator, amount: Amount(minorUnits: amount)!, scheduledFor: now.adding(seconds: 3_600),
                    idempotencyKey: nil, now: now
                ).get().id
            }
            _ = try transaction { now in try store.cancelWithdrawal(id, of: wallet, by: .operator, now: now).get() }
            return id
        case .withdraw(let amount, let outcomes):
            let id = try transaction { now in
                try store.scheduleWithdrawal(
                    from: wallet, by: .operator, amount: Amount(minorUnits: amount)!, scheduledFor: now, idempotencyKey: nil, now: now
                )
                .get().id
            }
            var remaining = outcomes[...]
            while true {
                let changes = try transaction { now in
                    try store.claimDue(owner: owner, dueBy: now.adding(seconds: 1), now: now, leaseUntil: now.adding(seconds: 60), limit: 10)
                }
                guard let payout = changes.payouts.first(where: { $0.withdrawalID == id }), let outcome = remaining.popFirst() else { break }
                let decision = policy.decide(attempt: payout.attempt, bankMayHavePaid: payout.bankMayHavePaid, outcome: outcome, jitter: 0)
                let recorded = try transaction { now in
                    var changes = ProcessorChanges()
                    return try store.record(payout, outcome: outcome, decision: decision, owner: owner, now: now, into: &changes)
                }
                #expect(recorded)
            }
            return id
        }
    }
}

@Suite("Store")
struct StoreTests {
    @Test("ledger scenarios: one row per balance change, deltas sum to the balance, the chain recomputes", arguments: ledgerScenarios)
    func ledgerScenario(scenario: LedgerScenario) throws {
        let database = try TestDatabase()
        let driver = try LedgerDriver(store: database.store)
        var withdrawals: [Int64] = []
        for step in scenario.steps {
            if let id = try driver.run(step) { withdrawals.append(id) }
        }
        let wallet = try #require(try database.store.wallet(driver.wallet))
        #expect(wallet.balance.minorUnits == scenario.balance)
        #expect(wallet.held.minorUnits == scenario.held)
        let rows = try ledgerRows(database.store)
        #expect(rows.map(\.kind) == scenario.kinds.map(\.rawValue))
        #expect(rows.map(\.delta).reduce(0, +) == scenario.balance)
        try expectLedgerConsistent(database.store)
        let statuses = try withdrawals.map { id in
            let transaction = try #require(try database.store.transaction(id))
            return "\(transaction.status.rawValue) \(transaction.failureReason?.rawValue ?? "-")"
        }
        #expect(statuses == scenario.withdrawals.map { "\($0.0.rawValue) \($0.1?.rawValue ?? "-")" })
    }

    @Test("the database's clock: PostgreSQL's clock_timestamp() to the microsecond, moving inside a transaction; on SQLite the local clock")
    func databaseClock() throws {
        // The tests' server runs on this machine, so its clock is this machine's: the
        // reading falls between two local ones. (On SQLite the local clock is the
        // database's clock: the file has one host.)
        let database = try TestDatabase()
        let before = Timestamp.now()
        let readings = try (0..<5).map { _ in try database.store.databaseNow() }
        let after = Timestamp.now()
        for reading in readings {
            #expect(reading >= before.adding(microseconds: -1_000) && reading <= after.adding(microseconds: 1_000))
        }
        #expect(readings.contains { $0.microseconds % 1_000 != 0 }, "the clock is read to the microsecond, not the millisecond")
        // Inside one transaction it still moves: the time of the reading, not of BEGIN
        // (`now()` would be), so a claim that waited for the write lock leases from when it
        // got it.
        let (first, second) = try database.store.read {
            let first = try database.store.databaseNow()
            sleepMilliseconds(5)
            return (first, try database.store.databaseNow())
        }
        #expect(second.microseconds - first.microseconds >= 5_000)
    }

    @Test("a balance change and its ledger row roll back together")
    func rollbackTakesBoth() throws {
        struct Abort: Error {}
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.database.immediateTransaction { _ = try store.createWallet(id: wallet, now: .now()) }
        #expect(throws: Abort.self) {
            try store.database.immediateTransaction {
                _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 500)!, idempotencyKey: nil, now: .now()).get()
                #expect(try store.wallet(wallet)?.balance.minorUnits == 500)
                #expect(try ledgerRows(store).count == 1)
                throw Abort()
            }
        }
        #expect(try store.wallet(wallet)?.balance == .zero)
        #expect(try ledgerRows(store).isEmpty)
        #expect(try store.database.scalarInteger("SELECT count(*) FROM transactions") == 0)
    }

    @Test("the hash chain recomputes for every row across wallets, and a changed field breaks it")
    func hashChain() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallets = (0..<3).map { _ in WalletID.random() }
        try store.database.immediateTransaction {
            for wallet in wallets { _ = try store.createWallet(id: wallet, now: .now()) }
            for round in 1...4 {
                for wallet in wallets {
                    _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: Int64(round * 10))!, idempotencyKey: nil, now: .now())
                        .get()
                }
            }
        }
        let rows = try ledgerRows(store)
        #expect(rows.count == 12)
        #expect(rows.map(\.id) == Array(1...12))
        #expect(brokenHashLinks(rows).isEmpty)
        #expect(Set(rows.map(\.hash)).count == rows.count)
        var changed = rows
        changed[5].delta += 1
        #expect(brokenHashLinks(changed) == [6])
        // Each row chains from its own wallet's previous row: rows 1, 4, 7, 10 are the
        // first wallet's.
        #expect(rows.allSatisfy { $0.walletChain == 1 })
        #expect(Set(rows.filter { $0.id % 3 == 1 }.map(\.walletRowID)).count == 1)
        var reordered = rows
        reordered.swapAt(0, 3)
        #expect(!brokenHashLinks(reordered).isEmpty)
        #expect(brokenHashLinks(Array(rows.dropFirst())) == [4])
    }

    @Test("a wallet's ledger rows never go back in time, whatever the clock of the writer that appends one")
    func ledgerTimesNeverGoBack() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let now = Timestamp.now()
        try store.write {
            _ = try store.createWallet(id: wallet, now: now)
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 5)!, idempotencyKey: nil, now: now).get()
            // A writer whose clock is a minute behind.
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 7)!, idempotencyKey: nil, now: now.adding(seconds: -60))
                .get()
        }
        let rows = try ledgerRows(store)
        #expect(rows.map(\.createdAt) == [now.microseconds, now.microseconds])
        #expect(try store.balance(ofWalletRow: rows[0].walletRowID, through: now, inclusive: true) == 12)
        #expect(try Auditor(store: store).verify().passed)
    }

    @Test("a deposit fits up to Int64.max and one unit more is balance_overflow, counting held funds")
    func depositOverflow() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.database.immediateTransaction { _ = try store.createWallet(id: wallet, now: .now()) }
        try fillNearMaximum(store, wallet)
        // Hold 1,000 in a withdrawal with the bank: the balance drops, the room for deposits does not grow.
        let now = Timestamp.now()
        try store.database.immediateTransaction {
            _ = try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 1_000)!, scheduledFor: now, idempotencyKey: nil, now: now
            ).get()
            _ = try store.claimDue(owner: "o", dueBy: now, now: now, leaseUntil: now.adding(seconds: 60), limit: 1)
        }
        let rowsBefore = try ledgerRows(store).count
        let deposit = { (amount: Int64) in
            try store.database.immediateTransaction {
                try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: amount)!, idempotencyKey: nil, now: .now())
            }
        }
        #expect(try deposit(roomAfterFill + 1).map(\.wallet.balance) == .failure(.balanceOverflow))
        #expect(try deposit(roomAfterFill).map(\.wallet.balance.minorUnits) == .success(Int64.max - 1_000))
        #expect(try deposit(1).map(\.wallet.balance) == .failure(.balanceOverflow))
        let stored = try #require(try store.wallet(wallet))
        #expect(stored.balance.minorUnits == Int64.max - 1_000)
        #expect(stored.held.minorUnits == 1_000)
        #expect(try ledgerRows(store).count == rowsBefore + 1)
        try expectLedgerConsistent(store)
    }

    @Test("deposits, withdrawals and cancels of an unknown wallet or transaction are not found")
    func unknownTargets() throws {
        let database = try TestDatabase()
        let store = database.store
        let unknown = WalletID.random()
        let amount = Amount(minorUnits: 1)!
        let now = Timestamp.now()
        let deposit = try store.database.immediateTransaction {
            try store.deposit(to: unknown, by: .operator, amount: amount, idempotencyKey: nil, now: now).map(\.transaction.id)
        }
        let withdrawal = try store.database.immediateTransaction {
            try store.scheduleWithdrawal(from: unknown, by: .operator, amount: amount, scheduledFor: now, idempotencyKey: nil, now: now).map(\.id)
        }
        let cancel = try store.database.immediateTransaction { try store.cancelWithdrawal(1, of: unknown, by: .operator, now: now).map(\.id) }
        #expect(deposit == .failure(.walletNotFound))
        #expect(withdrawal == .failure(.walletNotFound))
        #expect(cancel == .failure(.transactionNotFound))
        #expect(try store.wallet(unknown) == nil)
        #expect(try store.transaction(1) == nil)
    }

    @Test(
        "only a PENDING withdrawal can be canceled",
        arguments: [
            (TransactionStatus.pending, true), (.processing, false), (.completed, false), (.failed, false), (.canceled, false),
        ])
    func cancelOnlyPending(status: TransactionStatus, cancelable: Bool) throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let now = Timestamp.now()
        let id = try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: now)
            let id = try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 5)!, scheduledFor: now.adding(seconds: 60),
                idempotencyKey: nil, now: now
            ).get().id
            if status != .pending {
                let next: SQLValue = status == .processing ? .integer(now.microseconds) : .null
                try store.database.run(
                    "UPDATE transactions SET status = ?, next_attempt_at = ? WHERE id = ?", [.text(status.rawValue), next, .integer(id)])
            }
            return id
        }
        let result = try store.database.immediateTransaction { try store.cancelWithdrawal(id, of: wallet, by: .operator, now: .now()) }
        if cancelable {
            #expect(result.map(\.status) == .success(.canceled))
            #expect(try store.transaction(id)?.failureReason == .canceled)
        } else {
            #expect(result.map(\.status) == .failure(.notCancelable(status)))
            #expect(try store.transaction(id)?.status == status)
        }
    }

    @Test("a deposit is not a cancelable withdrawal")
    func depositNotCancelable() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let id = try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: .now())
            return try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 5)!, idempotencyKey: nil, now: .now()).get().transaction.id
        }
        let result = try store.database.immediateTransaction { try store.cancelWithdrawal(id, of: wallet, by: .operator, now: .now()) }
        #expect(result.map(\.id) == .failure(.notCancelable(.completed)))
    }

    @Test("a transaction is found through its own wallet only")
    func transactionOfWallet() throws {
        let database = try TestDatabase()
        let store = database.store
        let (mine, other) = (WalletID.random(), WalletID.random())
        let id = try store.database.immediateTransaction {
            _ = try store.createWallet(id: mine, now: .now())
            _ = try store.createWallet(id: other, now: .now())
            return try store.deposit(to: mine, by: .operator, amount: Amount(minorUnits: 5)!, idempotencyKey: "k", now: .now()).get().transaction.id
        }
        #expect(try store.transaction(id, of: mine, visibleTo: .operator)?.idempotencyKey == "k")
        #expect(try store.transaction(id, of: other, visibleTo: .operator) == nil)
        #expect(try store.transaction(id)?.wallet == mine)
    }

    @Test("claims take due withdrawals in due order up to the limit, and skip leased and future ones")
    func claimOrderAndLimit() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let now = Timestamp.now()
        let ids = try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: now)
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 1_000)!, idempotencyKey: nil, now: now).get()
            return try [-3, -1, -2, 60].map { offset in
                try store.scheduleWithdrawal(
                    from: wallet, by: .operator, amount: Amount(minorUnits: 10)!, scheduledFor: now.adding(seconds: Int64(offset)),
                    idempotencyKey: nil, now: now
                ).get().id
            }
        }
        let first = try store.database.immediateTransaction {
            try store.claimDue(owner: "a", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 2)
        }
        #expect(first.payouts.map(\.withdrawalID) == [ids[0], ids[2]])
        #expect(first.payouts.allSatisfy { $0.attempt == 1 && !$0.bankMayHavePaid })
        let second = try store.database.immediateTransaction {
            try store.claimDue(owner: "b", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 10)
        }
        #expect(second.payouts.map(\.withdrawalID) == [ids[1]])
        let third = try store.database.immediateTransaction {
            try store.claimDue(owner: "c", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 10)
        }
        #expect(third.payouts.isEmpty && third.events.isEmpty)
        #expect(try store.transaction(ids[3])?.status == .pending)
        #expect(try store.wallet(wallet)?.held.minorUnits == 30)
    }

    @Test("a due withdrawal under a live lease is not claimed; once the lease expires it is")
    func liveLeaseSkipped() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let now = Timestamp.now()
        let id = try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: now)
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 100)!, idempotencyKey: nil, now: now).get()
            let id = try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 40)!, scheduledFor: now, idempotencyKey: nil, now: now
            )
            .get().id
            _ = try store.claimDue(owner: "holder", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 1)
            // Due again at once, but still leased.
            try store.database.run("UPDATE transactions SET next_attempt_at = ? WHERE id = ?", [.integer(now.microseconds), .integer(id)])
            return id
        }
        let claim = { (at: Timestamp) in
            try store.database.immediateTransaction {
                try store.claimDue(owner: "other", dueBy: at, now: at, leaseUntil: at.adding(seconds: 30), limit: 10)
            }
        }
        #expect(try claim(now.adding(seconds: 29)).payouts.isEmpty)
        let retaken = try claim(now.adding(seconds: 30)).payouts
        #expect(retaken.map(\.withdrawalID) == [id])
        #expect(retaken.first?.bankMayHavePaid == true)
    }

    @Test("an outcome is recorded only by the lease holder")
    func recordNeedsLease() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        let now = Timestamp.now()
        let payout = try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: now)
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 100)!, idempotencyKey: nil, now: now).get()
            _ = try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 40)!, scheduledFor: now, idempotencyKey: nil, now: now
            ).get()
            return try #require(
                try store.claimDue(owner: "holder", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 1).payouts.first)
        }
        var changes = ProcessorChanges()
        let stranger = try store.database.immediateTransaction {
            try store.record(payout, outcome: .paid, decision: .complete, owner: "stranger", now: .now(), into: &changes)
        }
        #expect(!stranger)
        #expect(changes.events.isEmpty)
        #expect(try store.transaction(payout.withdrawalID)?.status == .processing)
        let holder = try store.database.immediateTransaction {
            try store.record(payout, outcome: .paid, decision: .complete, owner: "holder", now: .now(), into: &changes)
        }
        #expect(holder)
        #expect(changes.events.map(\.status) == [.completed])
        #expect(try store.wallet(wallet)?.held == .zero)
        #expect(try store.wallet(wallet)?.balance.minorUnits == 60)
    }

    @Test("stored answers older than the cutoff are purged, newer ones kept")
    func purgeIdempotencyKeys() throws {
        let database = try TestDatabase()
        let store = database.store
        let response = StoredResponse(fingerprint: "f", status: 201, body: "{}")
        let purged = try store.database.immediateTransaction {
            try store.store(response, forKey: "old", now: Timestamp(seconds: 100))
            try store.store(response, forKey: "edge", now: Timestamp(seconds: 200))
            try store.store(response, forKey: "new", now: Timestamp(seconds: 300))
            return try store.purgeIdempotencyKeys(olderThan: Timestamp(seconds: 200))
        }
        #expect(purged == 1)
        #expect(try store.storedResponse(forKey: "old") == nil)
        #expect(try store.storedResponse(forKey: "edge") == response)
        #expect(try store.storedResponse(forKey: "new") == response)
    }

    @Test("transaction counts group by type and status")
    func transactionCounts() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.database.immediateTransaction {
            let now = Timestamp.now()
            _ = try store.createWallet(id: wallet, now: now)
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 5)!, idempotencyKey: nil, now: now).get()
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 7)!, idempotencyKey: nil, now: now).get()
            _ = try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 3)!, scheduledFor: now, idempotencyKey: nil, now: now
            ).get()
        }
        let counts = try store.transactionCounts().map { "\($0.type.rawValue) \($0.status.rawValue) \($0.count) \($0.amount)" }
        #expect(Set(counts) == ["DEPOSIT COMPLETED 2 12", "WITHDRAWAL PENDING 1 3"])
    }

    @Test("wallets are listed in creation order, page by page")
    func walletListing() throws {
        let database = try TestDatabase()
        let store = database.store
        let ids = (0..<5).map { _ in WalletID.random() }
        try store.database.immediateTransaction { for id in ids { _ = try store.createWallet(id: id, now: .now()) } }
        let first = try store.wallets(limit: 3)
        #expect(first.map(\.id) == Array(ids.prefix(3)))
        let rest = try store.wallets(afterRowID: try #require(first.last).rowID, limit: 3)
        #expect(rest.map(\.id) == Array(ids.suffix(2)))
    }

    @Test("store writes outside a transaction stop the program")
    func writesNeedATransaction() async {
        await #expect(processExitsWith: .failure) {
            guard let database = try? TestDatabase() else { return }
            TestDatabase.remove(database.path)
            _ = try? database.store.createWallet(id: .random(), now: .now())
        }
    }
}
