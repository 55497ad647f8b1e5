import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// One row of the withdrawal state machine: a bank script, how many passes run, and where
/// the withdrawal and the money end up.
struct MachineScenario: Sendable, CustomTestStringConvertible {
    var name: String
    var answers: [BankTransport]
    var amount: Int64 = 300
    var passes: Int
    var status: TransactionStatus
    var reason: FailureReason?
    var attempts: Int64
    var balance: Int64
    var held: Int64
    var kinds: [LedgerEntry.Kind]

    var testDescription: String { name }
}

private let http500 = BankTransport.answered(status: 500, body: Array(#"{"error": "internal"}"#.utf8))
private let http400 = BankTransport.answered(status: 400, body: Array(#"{"data": "bad_request", "status": 400}"#.utf8))
private let http429 = BankTransport.answered(status: 429, body: [])

/// Each wallet starts with 1,000; the policy allows 1 + 3 attempts with no wait between them.
private let machineScenarios: [MachineScenario] = [
    MachineScenario(
        name: "paid at once", answers: [.paid], passes: 2, status: .completed, reason: nil, attempts: 1,
        balance: 700, held: 0, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "insufficient funds: failed, bank never called", answers: [.paid], amount: 1_001, passes: 2, status: .failed,
        reason: .insufficientFunds, attempts: 0, balance: 1_000, held: 0, kinds: [.deposit]),
    MachineScenario(
        name: "failed body on every attempt: bank_rejected, refunded", answers: [.failed], passes: 5, status: .failed,
        reason: .bankRejected, attempts: 4, balance: 1_000, held: 0, kinds: [.deposit, .debit, .refund]),
    MachineScenario(
        name: "HTTP 400 on every attempt: bank_rejected, refunded", answers: [http400], passes: 5, status: .failed,
        reason: .bankRejected, attempts: 4, balance: 1_000, held: 0, kinds: [.deposit, .debit, .refund]),
    MachineScenario(
        name: "failed twice, then paid", answers: [.failed, .failed, .paid], passes: 4, status: .completed, reason: nil,
        attempts: 3, balance: 700, held: 0, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "429, then paid", answers: [http429, .paid], passes: 3, status: .completed, reason: nil,
        attempts: 2, balance: 700, held: 0, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "refused on every attempt: bank_unreachable, refunded", answers: [.refused], passes: 5, status: .failed,
        reason: .bankUnreachable, attempts: 4, balance: 1_000, held: 0, kinds: [.deposit, .debit, .refund]),
    MachineScenario(
        name: "unknown on every attempt: held with bank_outcome_unknown", answers: [.timedOut], passes: 4, status: .processing,
        reason: .bankOutcomeUnknown, attempts: 4, balance: 700, held: 300, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "unknown on every attempt, paid on a recheck", answers: [.timedOut, .timedOut, .timedOut, .timedOut, .paid],
        passes: 6, status: .completed, reason: nil, attempts: 5, balance: 700, held: 0, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "HTTP 500 on every attempt, failed body on a recheck: refunded", answers: [http500, http500, http500, http500, .failed],
        passes: 6, status: .failed, reason: .bankRejected, attempts: 5, balance: 1_000, held: 0, kinds: [.deposit, .debit, .refund]),
    MachineScenario(
        name: "unknown, then refused up to and after the last attempt: never refunded", answers: [.timedOut, .refused],
        passes: 7, status: .processing, reason: .bankOutcomeUnknown, attempts: 7, balance: 700, held: 300, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "unknown, then a failed body before the last attempt, then refused: still held, never refunded",
        answers: [.timedOut, .failed, .refused], passes: 5, status: .processing, reason: .bankOutcomeUnknown, attempts: 5,
        balance: 700, held: 300, kinds: [.deposit, .debit]),
    MachineScenario(
        name: "unknown, then a failed body on the last attempt: bank_rejected, refunded",
        answers: [.timedOut, .timedOut, .timedOut, .failed], passes: 5, status: .failed, reason: .bankRejected, attempts: 4,
        balance: 1_000, held: 0, kinds: [.deposit, .debit, .refund]),
]

/// A wallet holding 1,000 on a fresh database, and the processor's own connection.
private final class ProcessorFixture {
    let t: TestAPI
    let store: Store
    let wallet: WalletID

    init(balance: Int64 = 1_000) throws {
        t = try TestAPI()
        store = try t.database.connection()
        wallet = try t.createWallet()
        if balance > 0 { #expect(t.deposit(wallet, balance).status == 200) }
    }

    func ledgerKinds() throws -> [String] {
        try ledgerRows(store).map(\.kind)
    }

    func column(_ name: String, of withdrawal: Int64) throws -> Int64? {
        try store.database.scalarInteger("SELECT \(name) FROM transactions WHERE id = ?", [.integer(withdrawal)])
    }
}

@Suite("ProcessorPass")
struct ProcessorPassTests {
    @Test("the withdrawal state machine", arguments: machineScenarios)
    func stateMachine(scenario: MachineScenario) throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, scenario.amount)
        let bank = ScriptedBank(byAttempt: scenario.answers)
        let store = fixture.store
        bank.onStart = { _ in #expect(store.database.isAutocommit, "the bank is called inside a transaction") }
        for pass in 1...scenario.passes {
            let before = bank.calls.count
            try runPass(fixture.store, bank)
            #expect(bank.calls.count - before <= 1, "pass \(pass) called the bank more than once")
        }
        let transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.status == scenario.status)
        #expect(transaction.failureReason == scenario.reason)
        #expect(transaction.attempts == scenario.attempts)
        #expect((transaction.executedAt != nil) == (scenario.status == .completed))
        #expect(bank.calls.count == Int(scenario.attempts))
        #expect(bank.calls.map(\.attempt) == Array(1...max(1, scenario.attempts)).prefix(bank.calls.count).map { $0 })
        #expect(Set(bank.calls.map(\.bankKey)).count <= 1)
        let wallet = try fixture.t.wallet(fixture.wallet)
        #expect(wallet.balance.minorUnits == scenario.balance)
        #expect(wallet.held.minorUnits == scenario.held)
        #expect(try fixture.ledgerKinds() == scenario.kinds.map(\.rawValue))
        try expectLedgerConsistent(fixture.store)
        #expect(try fixture.column("lease_owner", of: withdrawal) == nil)
        #expect(try fixture.column("bank_call_open", of: withdrawal) == 0)
        #expect(try fixture.store.database.scalarInteger("SELECT count(*) FROM processor_passes") == Int64(scenario.passes))
    }

    @Test("a paid withdrawal: one call with a stable key, summary and timestamps")
    func paidDetails() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 250)
        let bank = ScriptedBank(always: .paid)
        let summary = try runPass(fixture.store, bank)
        #expect(summary == PassSummary(claimed: 1, completed: 1, failed: 0, retried: 0, leaseLost: 0))
        let call = try #require(bank.calls.first)
        let key = try #require(
            try fixture.store.database.queryFirst("SELECT bank_key FROM transactions WHERE id = ?", [.integer(withdrawal)]) { $0.text(0) })
        #expect(
            call
                == Payout(
                    withdrawalID: withdrawal, wallet: fixture.wallet, amount: Amount(minorUnits: 250)!, bankKey: key, attempt: 1,
                    bankMayHavePaid: false, leaseUntil: call.leaseUntil, leaseDeadline: call.leaseDeadline))
        #expect(call.leaseDeadline != nil, "an attempt without its local deadline is never sent")
        #expect(key.hasPrefix(BankKey.prefix))
        let transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.executedAt.map { $0 >= transaction.createdAt } == true)
        let debit = try #require(try ledgerRows(fixture.store).last)
        #expect(debit.kind == "DEBIT" && debit.delta == -250 && debit.transactionID == withdrawal && debit.balanceAfter == 750)
        #expect(try runPass(fixture.store, bank) == PassSummary())
    }

    @Test("while retries remain the withdrawal stays PROCESSING with the funds held")
    func heldBetweenRetries() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let bank = ScriptedBank(always: .failed)
        let summary = try runPass(fixture.store, bank, processorSettings(retryBaseSeconds: 60))
        #expect(summary == PassSummary(claimed: 1, completed: 0, failed: 0, retried: 1, leaseLost: 0))
        let transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.status == .processing)
        #expect(transaction.failureReason == nil)
        #expect(transaction.attempts == 1)
        let wallet = try fixture.t.wallet(fixture.wallet)
        #expect(wallet.balance.minorUnits == 700 && wallet.held.minorUnits == 300)
        // The next attempt waits for the backoff: a pass now does not call the bank.
        let next = try #require(try fixture.column("next_attempt_at", of: withdrawal))
        #expect(next >= Timestamp.now().adding(seconds: 59).microseconds)
        try runPass(fixture.store, bank, processorSettings(retryBaseSeconds: 60))
        #expect(bank.calls.count == 1)
        // A PROCESSING withdrawal cannot be canceled.
        expectError(fixture.t.send("POST", "/wallets/\(fixture.wallet)/transactions/\(withdrawal)/cancel"), status: 409, code: "not_cancelable")
    }

    @Test("a withdrawal scheduled for later is left alone until due")
    func futureWithdrawalWaits() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try #require(fixture.t.withdraw(fixture.wallet, 100, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
        let bank = ScriptedBank(always: .paid)
        #expect(try runPass(fixture.store, bank) == PassSummary())
        #expect(try fixture.t.transaction(withdrawal).status == .pending)
        let summary = try runPass(fixture.store, bank, clock: { Timestamp(rfc3339: "2999-01-01T00:00:01Z")! })
        #expect(summary.completed == 1)
        #expect(bank.calls.map(\.withdrawalID) == [withdrawal])
    }

    @Test("a pass whose own clock runs an hour ahead claims nothing due later by the database's clock and takes over no live lease")
    func clockAheadOfTheDatabase() throws {
        // Due times and leases are the database's time (here this machine's: the tests'
        // server runs on it, and an SQLite file's clock is its host's); only the pass's own
        // wall clock is an hour ahead, as on a host whose clock drifted.
        let fixture = try ProcessorFixture(balance: 10_000)
        let dueLater = Timestamp.now().adding(seconds: 1_800).rfc3339
        let later = try #require(fixture.t.withdraw(fixture.wallet, 100, scheduledFor: dueLater).json["id"]?.integer)
        let held = try fixture.t.dueWithdrawal(fixture.wallet, 200)
        let now = Timestamp.now()
        _ = try fixture.store.write {
            try fixture.store.claimDue(owner: "other", dueBy: now, now: now, leaseUntil: now.adding(seconds: 60), limit: 10)
        }
        let bank = ScriptedBank(always: .paid)
        let pass = ProcessorPass(
            store: fixture.store, bank: bank, settings: processorSettings(), log: Log(component: "test"), owner: "ahead",
            random: { 0 }, clock: { Timestamp.now().adding(seconds: 3_600) })
        #expect(try pass.run() == PassSummary())
        #expect(bank.calls.isEmpty)
        #expect(try fixture.t.transaction(later).status == .pending)
        #expect(try fixture.t.transaction(held).attempts == 1)
        let owner = try fixture.store.database.queryFirst("SELECT lease_owner FROM transactions WHERE id = ?", [.integer(held)]) { $0.text(0) }
        #expect(owner == "other")
    }

    @Test("a pass whose own clock runs an hour behind the database's still pays what is due, and writes the database's time")
    func clockBehindTheDatabase() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 250)
        let bank = ScriptedBank(always: .paid)
        let pass = ProcessorPass(
            store: fixture.store, bank: bank, settings: processorSettings(), log: Log(component: "test"), owner: "behind",
            random: { 0 }, clock: { Timestamp.now().adding(seconds: -3_600) })
        let before = Timestamp.now()
        #expect(try pass.run().completed == 1)
        let executedAt = try #require(try fixture.t.transaction(withdrawal).executedAt)
        #expect(executedAt >= before && executedAt <= Timestamp.now())
    }

    @Test("the attempts a pass hands to the bank carry their lease as a deadline on the monotonic clock")
    func claimsCarryMonotonicDeadlines() throws {
        let fixture = try ProcessorFixture()
        _ = try fixture.t.dueWithdrawal(fixture.wallet, 250)
        let bank = ScriptedBank(always: .paid)
        let settings = processorSettings()
        let lease = settings.bankTimeoutMilliseconds * 1_000 + settings.leaseGraceSeconds * 1_000_000
        // A monotonic clock far from the wall clock, and a pass clock an hour ahead: the
        // deadline is the monotonic reading before the claim plus the whole lease.
        let pass = ProcessorPass(
            store: fixture.store, bank: bank, settings: settings, log: Log(component: "test"), owner: "deadline",
            random: { 0 }, clock: { Timestamp.now().adding(seconds: 3_600) },
            monotonicClock: { MonotonicInstant(microseconds: 42_000_000) })
        var claimed: [Payout] = []
        pass.afterClaim = { claimed += $0 }
        #expect(try pass.run().completed == 1)
        #expect(claimed.map(\.leaseDeadline) == [MonotonicInstant(microseconds: 42_000_000 + lease)])
    }

    @Test("a lease held by another processor is not claimed")
    func liveLeaseNotClaimed() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let now = Timestamp.now()
        let claimed = try fixture.store.database.immediateTransaction {
            try fixture.store.claimDue(owner: "other", dueBy: now, now: now, leaseUntil: now.adding(seconds: 60), limit: 10)
        }
        #expect(claimed.payouts.map(\.withdrawalID) == [withdrawal])
        let bank = ScriptedBank(always: .paid)
        #expect(try runPass(fixture.store, bank) == PassSummary())
        #expect(bank.calls.isEmpty)
        #expect(try fixture.t.transaction(withdrawal).attempts == 1)
        #expect(try fixture.column("bank_call_open", of: withdrawal) == 1)
    }

    @Test("an expired lease is retaken and the attempt after a crash counts as possibly paid")
    func crashedClaimRetaken() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let now = Timestamp.now()
        // A processor claims, debits and dies before recording anything.
        _ = try fixture.store.database.immediateTransaction {
            try fixture.store.claimDue(owner: "crashed", dueBy: now, now: now, leaseUntil: now.adding(seconds: 30), limit: 10)
        }
        #expect(try fixture.column("bank_call_open", of: withdrawal) == 1)
        let later = { Timestamp.now().adding(seconds: 60) }
        let bank = ScriptedBank(always: .refused)
        let settings = processorSettings(maxRetries: 1)
        try runPass(fixture.store, bank, settings, clock: later)
        let retaken = try #require(bank.calls.first)
        #expect(retaken.attempt == 2)
        #expect(retaken.bankMayHavePaid)
        // Refused on the last attempt, but the crashed call may have paid: held, never refunded.
        var transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.status == .processing)
        #expect(transaction.failureReason == .bankOutcomeUnknown)
        #expect(try fixture.t.wallet(fixture.wallet).held.minorUnits == 300)
        try runPass(fixture.store, bank, settings, clock: later)
        #expect(bank.calls.count == 2 && bank.calls.allSatisfy(\.bankMayHavePaid))
        #expect(try fixture.t.wallet(fixture.wallet).held.minorUnits == 300)
        // Only the bank's own answer settles it.
        try runPass(fixture.store, ScriptedBank(always: .paid), settings, clock: later)
        transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.status == .completed)
        #expect(transaction.attempts == 4)
        #expect(try fixture.t.wallet(fixture.wallet).held == .zero)
        #expect(try fixture.t.wallet(fixture.wallet).balance.minorUnits == 700)
    }

    @Test("an outcome is not recorded once the lease is lost; the next holder asks the bank again")
    func leaseLostBeforeRecording() throws {
        let fixture = try ProcessorFixture()
        let withdrawal = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let thief = try fixture.t.database.connection()
        let bank = ScriptedBank(always: .failed)
        let pass = ProcessorPass(
            store: fixture.store, bank: bank, settings: processorSettings(maxRetries: 0), log: Log(component: "test"),
            owner: "slow", random: { 0 })
        pass.beforeRecording = { _ in
            _ = try? thief.database.run("UPDATE transactions SET lease_owner = 'thief' WHERE id = ?", [.integer(withdrawal)])
        }
        let summary = try pass.run()
        #expect(summary.leaseLost == 1)
        #expect(summary.failed == 0)
        let transaction = try fixture.t.transaction(withdrawal)
        #expect(transaction.status == .processing)
        #expect(try fixture.t.wallet(fixture.wallet).held.minorUnits == 300)
        #expect(try fixture.column("bank_call_open", of: withdrawal) == 1)
    }

    @Test("two passes sharing one database never both call the bank for one withdrawal")
    func twoProcessors() throws {
        let fixture = try ProcessorFixture(balance: 100_000)
        let withdrawals = try (0..<30).map { _ in try fixture.t.dueWithdrawal(fixture.wallet, 7) }
        let path = fixture.t.database.path
        let recorder = CallRecorder()
        let summaries = Shared<[PassSummary]>([])
        let errors = Shared<[String]>([])
        let ready = Shared(0)
        runOnThreads(2) { index in
            do {
                let store = try Store.open(location: path)
                let bank = ScriptedBank(answersPerPoll: 1, pollDelayMilliseconds: 1, recorder: recorder) { _ in .paid }
                ready.update { $0 += 1 }
                while ready.current < 2 { sleepMilliseconds(1) }
                let summary = try runPass(store, bank, processorSettings(concurrency: 2), owner: "processor-\(index)")
                summaries.update { $0.append(summary) }
            } catch {
                errors.update { $0.append("\(error)") }
            }
        }
        #expect(errors.current.isEmpty)
        let calls = recorder.callsByWithdrawal
        #expect(Set(calls.keys) == Set(withdrawals))
        #expect(calls.values.allSatisfy { $0 == 1 })
        #expect(summaries.current.map(\.claimed).reduce(0, +) == 30)
        #expect(summaries.current.map(\.completed).reduce(0, +) == 30)
        #expect(summaries.current.allSatisfy { $0.leaseLost == 0 })
        for withdrawal in withdrawals { #expect(try fixture.t.transaction(withdrawal).status == .completed) }
        #expect(try fixture.t.wallet(fixture.wallet).balance.minorUnits == 100_000 - 30 * 7)
        try expectLedgerConsistent(fixture.store)
    }

    @Test("bank calls in flight never exceed the concurrency limit, and the limit is used", arguments: [1, 3] as [Int64])
    func concurrencyLimit(concurrency: Int64) throws {
        let fixture = try ProcessorFixture()
        let withdrawals = try (0..<10).map { _ in try fixture.t.dueWithdrawal(fixture.wallet, 10) }
        let bank = ScriptedBank(answersPerPoll: 1) { _ in .paid }
        let summary = try runPass(fixture.store, bank, processorSettings(concurrency: concurrency))
        #expect(bank.maxInFlight == Int(concurrency))
        #expect(summary.completed == 10)
        #expect(Set(bank.calls.map(\.withdrawalID)) == Set(withdrawals))
        #expect(bank.calls.count == 10)
    }

    @Test("refunds recorded and debits claimed in the same step keep the wallet and its ledger exact")
    func refundsAndDebitsShareSteps() throws {
        let fixture = try ProcessorFixture(balance: 1_000)
        let withdrawals = try (0..<12).map { _ in try fixture.t.dueWithdrawal(fixture.wallet, 100) }
        // One answer per poll at concurrency 2: each step records one answer (a refund for
        // the refused half) and debits the next withdrawal of the same wallet.
        let refused = Set(withdrawals.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
        let bank = ScriptedBank(answersPerPoll: 1) { refused.contains($0.withdrawalID) ? .failed : .paid }
        let summary = try runPass(fixture.store, bank, processorSettings(maxRetries: 0, concurrency: 2))
        #expect(summary == PassSummary(claimed: 12, completed: 6, failed: 6, retried: 0, leaseLost: 0))
        #expect(bank.calls.count == 12)
        for withdrawal in withdrawals {
            #expect(try fixture.t.transaction(withdrawal).status == (refused.contains(withdrawal) ? .failed : .completed))
        }
        let wallet = try fixture.t.wallet(fixture.wallet)
        #expect(wallet.balance.minorUnits == 1_000 - 6 * 100)
        #expect(wallet.held == .zero)
        try expectLedgerConsistent(fixture.store)
    }

    @Test("withdrawals due together are settled against the balance in due order, not in id order")
    func fundsRunOut() throws {
        let fixture = try ProcessorFixture(balance: 500)
        let now = Timestamp.now()
        func scheduled(_ amount: Int64, inSeconds seconds: Int64) throws -> Int64 {
            let response = fixture.t.withdraw(fixture.wallet, amount, scheduledFor: now.adding(seconds: seconds).rfc3339)
            return try #require(response.json["id"]?.integer)
        }
        // Ids in one order, due times in another: due second, first, third.
        let dueSecond = try scheduled(200, inSeconds: 30)
        let dueFirst = try scheduled(300, inSeconds: 10)
        let dueThird = try scheduled(300, inSeconds: 35)
        let bank = ScriptedBank(always: .paid)
        let summary = try runPass(fixture.store, bank, processorSettings(concurrency: 1), clock: { now.adding(seconds: 60) })
        #expect(summary == PassSummary(claimed: 3, completed: 2, failed: 1, retried: 0, leaseLost: 0))
        // 500: the first due takes 300, the second 200, the third finds nothing left.
        #expect(bank.calls.map(\.withdrawalID) == [dueFirst, dueSecond])
        #expect(try fixture.t.transaction(dueThird).failureReason == .insufficientFunds)
        #expect(try fixture.t.wallet(fixture.wallet).balance == .zero)
        try expectLedgerConsistent(fixture.store)
    }

    @Test("a pass forgets idempotency answers past the retention period and keeps recent ones")
    func passPurgesOldKeys() throws {
        let fixture = try ProcessorFixture()
        let old = Timestamp.now().adding(seconds: -Limits.idempotencyRetentionSeconds - 60)
        try fixture.store.database.immediateTransaction {
            try fixture.store.store(StoredResponse(fingerprint: "f", status: 200, body: "{}"), forKey: "ancient", now: old)
        }
        #expect(fixture.t.deposit(fixture.wallet, 1, key: "recent").status == 200)
        try runPass(fixture.store, ScriptedBank(always: .paid))
        #expect(try fixture.store.storedResponse(forKey: "ancient") == nil)
        #expect(try fixture.store.storedResponse(forKey: "recent", of: fixture.t.apiKeyID) != nil)
    }

    /// Depositors on another connection that never pause: each commit is followed at once by
    /// the next `BEGIN IMMEDIATE`, so a busy handler that sleeps and polls rarely finds the
    /// write lock free. They run until `stop` is set, and count their commits.
    private static func startDepositors(path: String, wallet: WalletID, stop: Shared<Bool>, commits: Shared<Int>) -> TestThread {
        TestThread {
            guard let store = try? Store.open(location: path) else { return }
            while !stop.current {
                let committed =
                    (try? store.database.immediateTransaction {
                        _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 1)!, idempotencyKey: nil, now: .now()).get()
                    }) != nil
                if committed { commits.update { $0 += 1 } }
            }
        }
    }

    /// Takes the write lock on another connection, holds it for `milliseconds` inside one
    /// deposit's transaction, then commits and sets `released`. Returns once the lock is held.
    fileprivate static func holdWriteLock(
        path: String, wallet: WalletID, milliseconds: Int,
        released: Shared<Bool> = Shared(false)
    ) -> TestThread {
        let held = Shared(false)
        let holder = TestThread {
            guard let store = try? Store.open(location: path) else { return }
            _ = try? store.database.immediateTransaction {
                _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 1)!, idempotencyKey: nil, now: .now()).get()
                held.update { $0 = true }
                sleepMilliseconds(milliseconds)
            }
            released.update { $0 = true }
        }
        #expect(waitUntil { held.current })
        return holder
    }

    @Test(
        "a step that meets a busy database keeps the answers it holds and records them once it gets the lock",
        arguments: ["a writer holding the lock", "depositors that never pause"])
    func busyStepKeepsItsAnswers(contender: String) throws {
        let fixture = try ProcessorFixture(balance: 10_000)
        let paid = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let declined = try fixture.t.dueWithdrawal(fixture.wallet, 200)
        // The processor gives up waiting for the lock after 20 ms (5 s in production); the
        // other writers keep it for most of 600 ms.
        let path = fixture.t.database.path
        let store = try Store.open(location: path, busyTimeoutMilliseconds: 20)
        let bank = ScriptedBank(byWithdrawal: [paid: [.paid], declined: [.failed]])
        let pass = ProcessorPass(
            store: store, bank: bank, settings: processorSettings(maxRetries: 0), log: Log(component: "test"),
            owner: "busy-test", random: { 0 })
        let stop = Shared(false)
        let commits = Shared(0)
        var contenders: [TestThread] = []
        pass.beforeRecording = { _ in
            guard contenders.isEmpty else { return }
            if contender == "a writer holding the lock" {
                contenders.append(Self.holdWriteLock(path: path, wallet: fixture.wallet, milliseconds: 600))
                commits.update { $0 = 1 }
            } else {
                contenders.append(Self.startDepositors(path: path, wallet: fixture.wallet, stop: stop, commits: commits))
                #expect(waitUntil { commits.current > 0 })
                contenders.append(
                    TestThread {
                        sleepMilliseconds(600)
                        stop.update { $0 = true }
                    })
            }
        }
        let summary = try pass.run()
        for thread in contenders { thread.join() }
        #expect(summary.completed == 1 && summary.failed == 1 && summary.leaseLost == 0)
        #expect(try fixture.t.transaction(paid).status == .completed)
        #expect(try fixture.t.transaction(declined).status == .failed)
        #expect(bank.calls.count == 2, "each withdrawal was called once: the answers were kept, not asked again")
        #expect(try fixture.t.wallet(fixture.wallet).balance.minorUnits == 10_000 - 300 + Int64(commits.current))
        try expectLedgerConsistent(fixture.store)
    }

    @Test("answers whose lease ran out while the database was busy are dropped, as after a lost lease")
    func busyPastTheLeaseDropsAnswers() throws {
        let fixture = try ProcessorFixture(balance: 10_000)
        let early = try fixture.t.dueWithdrawal(fixture.wallet, 300)
        let late = try fixture.t.dueWithdrawal(fixture.wallet, 200)
        let store = try Store.open(location: fixture.t.database.path, busyTimeoutMilliseconds: 20)
        // The early answer comes at once; the late one only once the lock is free again, so
        // the pass still has a call in flight while the database is busy.
        let released = Shared(false)
        let bank = GatedBank { payout in payout.withdrawalID == early || released.current }
        // Clocks that jump past every lease once the first answer is in hand (the leases are
        // checked on the monotonic one).
        let skew = Shared<Int64>(0)
        let clock = { Timestamp.now().adding(microseconds: skew.current) }
        let pass = ProcessorPass(
            store: store, bank: bank, settings: processorSettings(), log: Log(component: "test"),
            owner: "busy-test", random: { 0 }, clock: clock,
            monotonicClock: { MonotonicInstant.now().adding(microseconds: skew.current) })
        var holder: TestThread?
        pass.beforeRecording = { _ in
            guard holder == nil else { return }
            holder = Self.holdWriteLock(path: fixture.t.database.path, wallet: fixture.wallet, milliseconds: 200, released: released)
            skew.update { $0 = 3_600 * 1_000_000 }
        }
        let summary = try pass.run()
        holder?.join()
        #expect(summary.leaseLost == 1 && summary.completed == 1)
        // The early withdrawal is still PROCESSING with its call open: the next holder of its
        // lease asks the bank again, in doubt. The late one was recorded.
        #expect(try fixture.t.transaction(early).status == .processing)
        #expect(try fixture.column("bank_call_open", of: early) == 1)
        #expect(try fixture.t.transaction(late).status == .completed)
    }
}

extension ProcessorPassTests {
    @Test("while the database stays busy, the pass still collects its answers, and gives up once their leases are gone")
    func busyWithCallsInFlightDoesNotSpin() throws {
        let fixture = try ProcessorFixture(balance: 10_000)
        for _ in 0..<2 { _ = try fixture.t.dueWithdrawal(fixture.wallet, 100) }
        let path = fixture.t.database.path
        let store = try Store.open(location: path, busyTimeoutMilliseconds: 20)
        // The leases run out as soon as the calls are out (the clock jumps an hour), and
        // another writer then holds the lock for 2 s. With free slots the pass wants to claim
        // more; it must still take the answers that came back, drop them (their leases are
        // gone) and give up, long before the lock is free again.
        let skew = Shared<Int64>(0)
        let released = Shared(false)
        let pass = ProcessorPass(
            store: store, bank: ScriptedBank(always: .paid), settings: processorSettings(concurrency: 8), log: Log(component: "test"),
            owner: "busy-test", random: { 0 }, clock: { Timestamp.now().adding(microseconds: skew.current) },
            monotonicClock: { MonotonicInstant.now().adding(microseconds: skew.current) })
        var holder: TestThread?
        pass.afterClaim = { _ in
            guard holder == nil else { return }
            holder = Self.holdWriteLock(path: path, wallet: fixture.wallet, milliseconds: 2_000, released: released)
            skew.update { $0 = 3_600 * 1_000_000 }
        }
        #expect(throws: DatabaseError.self) { try pass.run() }
        #expect(!released.current, "the pass waited for the lock to be free instead of giving up")
        holder?.join()
    }
}

/// A bank that pays every call, but hands an answer back only once `isReleased` says so.
private final class GatedBank: BankClient {
    private let isReleased: (Payout) -> Bool
    private var started: [Payout] = []

    init(isReleased: @escaping (Payout) -> Bool) {
        self.isReleased = isReleased
    }

    func start(_ payout: Payout) { started.append(payout) }

    func poll(timeoutMilliseconds: Int) -> [(Payout, BankTransport)] {
        let ready = started.filter(isReleased)
        started.removeAll(where: isReleased)
        if ready.isEmpty { sleepMilliseconds(min(timeoutMilliseconds, 5)) }
        return ready.map { ($0, .paid) }
    }

    var inFlightCount: Int { started.count }
}

@Suite("Backoff jitter")
struct JitterTests {
    @Test("jitter is in [0, 1), spread out, and each source is seeded on its own")
    func jitterSpread() {
        let first = ProcessorPass.jitterSource()
        let second = ProcessorPass.jitterSource()
        let values = (0..<1000).map { _ in first() }
        #expect(values.allSatisfy { $0 >= 0 && $0 < 1 })
        #expect(values.filter { $0 < 0.5 }.count > 400 && values.filter { $0 < 0.5 }.count < 600)
        #expect(Set(values).count == values.count)
        #expect((0..<8).map { _ in second() } != Array(values.prefix(8)))
    }
}
