/// Makes the bank calls of a pass: starts attempts and reports them as they finish. The
/// processor uses libcurl's multi interface; the tests use a scripted bank.
public protocol BankClient: AnyObject {
    /// Starts one attempt; it runs while the caller goes on.
    func start(_ payout: Payout)
    /// Waits up to `timeoutMilliseconds` for attempts to finish and returns those that did.
    func poll(timeoutMilliseconds: Int) -> [(Payout, BankTransport)]
    /// Attempts started and not yet returned by `poll`.
    var inFlightCount: Int { get }
}

/// A summary of one pass, logged as its last line.
public struct PassSummary: Sendable, Equatable {
    public var claimed = 0
    public var completed = 0
    public var failed = 0
    public var retried = 0
    /// Outcomes not recorded because the lease was lost to another processor.
    public var leaseLost = 0
}

/// One processor pass: everything due when it starts, then it returns.
///
/// It keeps up to `concurrency` bank calls in flight. It claims in batches (one transaction
/// per claim, with debits for newly due withdrawals) and records finished attempts in
/// batches (one transaction each), so the database cost of a withdrawal is a small share of
/// a commit. The bank is never called inside a database transaction.
public final class ProcessorPass {
    /// The longest a bank answer waits in memory for others to share its transaction.
    static let recordDelayMicroseconds: Int64 = 50_000

    private let store: Store
    private let bank: any BankClient
    private let policy: RetryPolicy
    private let concurrency: Int
    private let leaseMicroseconds: Int64
    private let log: Log
    private let owner: String
    private let random: () -> Double
    private let clock: () -> Timestamp
    /// Called with each set of finished attempts before they are recorded: the place where
    /// a crash hurts most, where test runs can inject one.
    public var beforeRecording: ([(Payout, BankTransport)]) -> Void = { _ in }

    public init(store: Store, bank: any BankClient, settings: Settings, log: Log, owner: String,
                random: @escaping () -> Double = { Double.random(in: 0..<1) }, clock: @escaping () -> Timestamp = Timestamp.now) {
        self.store = store
        self.bank = bank
        self.policy = RetryPolicy(settings)
        self.concurrency = Int(settings.bankConcurrency)
        self.leaseMicroseconds = (settings.bankTimeoutMilliseconds * 1_000) + settings.leaseGraceSeconds * 1_000_000
        self.log = log
        self.owner = owner
        self.random = random
        self.clock = clock
    }

    public func run() throws -> PassSummary {
        let started = clock()
        var summary = PassSummary()
        var exhausted = false
        var answered: [(Payout, BankTransport)] = []
        var oldestAnswer = started
        while true {
            let free = concurrency - bank.inFlightCount
            // Claim when half the slots are free (or none are busy): fewer, larger claims.
            if !exhausted, free > 0, free * 2 >= concurrency || bank.inFlightCount == 0 {
                let changes = try claim(dueBy: started, limit: min(free, Limits.processorBatchMax), into: &summary)
                for payout in changes.payouts { bank.start(payout) }
                // A claim that only failed withdrawals for want of funds used no slot: claim again.
                if changes.payouts.isEmpty && changes.events.isEmpty { exhausted = true } else { continue }
            }
            // Record answers in batches too: when half the slots' worth have come back, when
            // nothing else is in flight, or when the oldest has waited long enough. Until then
            // they are only in memory; a crash loses them, and the next pass asks the bank
            // again with the same keys.
            if !answered.isEmpty, answered.count * 2 >= concurrency || bank.inFlightCount == 0
                || clock().microseconds - oldestAnswer.microseconds >= ProcessorPass.recordDelayMicroseconds {
                beforeRecording(answered)
                try record(answered, into: &summary)
                answered.removeAll(keepingCapacity: true)
                continue
            }
            if exhausted && bank.inFlightCount == 0 { break }
            let finished = bank.poll(timeoutMilliseconds: answered.isEmpty ? 100 : 10)
            if answered.isEmpty && !finished.isEmpty { oldestAnswer = clock() }
            answered += finished
        }
        try store.database.immediateTransaction {
            try store.purgeIdempotencyKeys(olderThan: clock().adding(seconds: -Limits.idempotencyRetentionSeconds))
            try store.recordPass(startedAt: started, finishedAt: clock(), claimed: summary.claimed, completed: summary.completed,
                                 failed: summary.failed, retried: summary.retried)
        }
        log.write(.info, "pass", [
            "claimed": .integer(Int64(summary.claimed)), "completed": .integer(Int64(summary.completed)),
            "failed": .integer(Int64(summary.failed)), "retried": .integer(Int64(summary.retried)),
            "lease_lost": .integer(Int64(summary.leaseLost)),
            "duration_ms": .number(Double(clock().microseconds - started.microseconds) / 1000),
        ])
        return summary
    }

    private func claim(dueBy: Timestamp, limit: Int, into summary: inout PassSummary) throws -> ProcessorChanges {
        let changes = try store.database.immediateTransaction {
            let now = clock()
            return try store.claimDue(owner: owner, dueBy: dueBy, now: now, leaseUntil: now.adding(microseconds: leaseMicroseconds), limit: limit)
        }
        report(changes)
        summary.claimed += changes.payouts.count + changes.events.count { $0.status == .failed }
        summary.failed += changes.events.count { $0.status == .failed }
        return changes
    }

    private func record(_ finished: [(Payout, BankTransport)], into summary: inout PassSummary) throws {
        let changes = try store.database.immediateTransaction {
            let now = clock()
            var changes = ProcessorChanges()
            for (payout, transport) in finished {
                let outcome = PayoutOutcome(transport)
                let decision = policy.decide(attempt: payout.attempt, bankMayHavePaid: payout.bankMayHavePaid, outcome: outcome, jitter: random())
                if try !store.record(payout, outcome: outcome, decision: decision, owner: owner, now: now, into: &changes) {
                    summary.leaseLost += 1
                    log.write(.warning, "lease_lost", ["withdrawal": .integer(payout.withdrawalID), "outcome": .string(outcome.name)])
                }
            }
            return changes
        }
        report(changes)
        for event in changes.events {
            switch event.status {
            case .completed: summary.completed += 1
            case .failed: summary.failed += 1
            default: summary.retried += 1
            }
        }
    }

    /// Audit lines, written only after the transaction that made the changes committed.
    private func report(_ changes: ProcessorChanges) {
        for entry in changes.ledgerEntries { log.audit(entry) }
        for event in changes.events {
            log.write(event.status == .failed ? .warning : .info, "withdrawal", [
                "withdrawal": .integer(event.withdrawalID), "wallet": .string(event.wallet.text),
                "amount": .integer(event.amount.minorUnits), "status": .string(event.status.rawValue),
                "attempt": .integer(event.attempt), "failure_reason": .string(event.failureReason?.rawValue),
                "outcome": .string(event.outcome), "detail": .string(event.detail),
                "next_attempt_at": .string(event.nextAttemptAt?.rfc3339),
            ])
        }
    }
}
