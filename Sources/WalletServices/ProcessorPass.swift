import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP

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
/// Due times and leases are the database's time (`Store.databaseNow`), read once when the
/// pass starts and once in each claim's and recording's transaction: with processors on
/// several hosts, a host whose clock runs ahead must neither claim a withdrawal before it is
/// due nor take over a lease another processor still holds. Before it calls the bank, the
/// pass compares on its own monotonic clock (`Payout.leaseDeadline`), never its wall clock
/// with the database's. The pass's own timing (its duration, the pass record, the key
/// purge) keeps the local clock.
///
/// It keeps up to `concurrency` bank calls in flight. It claims in batches (one transaction
/// per claim, with debits for newly due withdrawals) and records finished attempts in
/// batches (one transaction each), so the database cost of a withdrawal is a small share of
/// a commit. The bank is never called inside a database transaction.
public final class ProcessorPass {
    /// The longest a bank answer waits in memory for others to share its transaction. Its
    /// slot stays empty meanwhile (the next claim comes with the recording), so against a
    /// slow bank this bound is what keeps the slots busy: 5 ms is a small part of a bank
    /// call, and a commit at most every 5 ms is cheap.
    static let recordDelayMicroseconds: Int64 = 5_000

    /// How many deadlocks or serialization failures in a row a pass retries before it gives
    /// up. Each one means another transaction went through, so a run of them is rare.
    static let conflictRetries = 5

    private let store: Store
    private let bank: any BankClient
    private let policy: RetryPolicy
    private let concurrency: Int
    private let leaseMicroseconds: Int64
    private let log: Log
    private let owner: String
    private let random: () -> Double
    /// The local wall clock: the pass's own timing.
    private let clock: () -> Timestamp
    /// The database's clock: due times, leases, and the times written into withdrawals.
    private let databaseClock: () throws -> Timestamp
    /// This machine's monotonic clock: what leases are checked against before a call.
    private let monotonicClock: () -> MonotonicInstant
    /// Called with each set of finished attempts before they are recorded: the place where
    /// a crash hurts most, where test runs can inject one.
    public var beforeRecording: ([(Payout, BankTransport)]) -> Void = { _ in }
    /// Called with each claim's attempts after the claim committed and before any of them
    /// is handed to the bank: where a stalled processor would lose its leases.
    public var afterClaim: ([Payout]) -> Void = { _ in }

    public init(
        store: Store, bank: any BankClient, settings: Settings, log: Log, owner: String,
        random: @escaping () -> Double = ProcessorPass.jitterSource(), clock: @escaping () -> Timestamp = Timestamp.now,
        databaseClock: (() throws -> Timestamp)? = nil, monotonicClock: @escaping () -> MonotonicInstant = MonotonicInstant.now
    ) {
        self.store = store
        self.bank = bank
        self.policy = RetryPolicy(settings)
        self.concurrency = Int(settings.bankConcurrency)
        self.leaseMicroseconds = (settings.bankTimeoutMilliseconds * 1_000) + settings.leaseGraceSeconds * 1_000_000
        self.log = log
        self.owner = owner
        self.random = random
        self.clock = clock
        self.databaseClock = databaseClock ?? { try store.databaseNow() }
        self.monotonicClock = monotonicClock
    }

    /// Backoff jitter needs spread, not secrecy: one seed from the system's generator, then
    /// SplitMix64, instead of a system call for every answer.
    public static func jitterSource() -> () -> Double {
        var generator = SplitMix64(seed: UInt64.random(in: .min ... .max))
        return { Double.random(in: 0..<1, using: &generator) }
    }

    public func run() throws -> PassSummary {
        let started = clock()
        // What is due by the database's clock when the pass starts: a withdrawal that falls
        // due during the pass waits for the next.
        let dueBy = try databaseClock()
        var summary = PassSummary()
        var exhausted = false
        var answered: [(Payout, BankTransport)] = []
        var oldestAnswer = started
        var conflicts = 0
        while true {
            let free = concurrency - bank.inFlightCount
            // Claim when half the slots are free (or none are busy): fewer, larger claims.
            let claimDue = !exhausted && free > 0 && (free * 2 >= concurrency || bank.inFlightCount == 0)
            // Record answers in batches too: when half the slots' worth have come back, when
            // nothing else is in flight, or when the oldest has waited long enough. Until then
            // they are only in memory; a crash loses them, and the next pass asks the bank
            // again with the same keys.
            let recordDue =
                !answered.isEmpty
                && (answered.count * 2 >= concurrency || bank.inFlightCount == 0
                    || clock().microseconds - oldestAnswer.microseconds >= ProcessorPass.recordDelayMicroseconds)
            if claimDue || recordDue {
                // One transaction (one sync) records every answer in hand and claims for
                // every free slot.
                let claimLimit = exhausted ? 0 : min(free, Limits.processorBatchMax)
                let claimed: ProcessorChanges
                do {
                    claimed = try step(record: answered, claim: claimLimit, dueBy: dueBy, into: &summary)
                    conflicts = 0
                } catch let error as DatabaseError where error.isBusy {
                    // Another process kept the write lock past the busy timeout (a responder
                    // under sustained deposits retakes it right after each commit). The answers
                    // in hand are the bank's word: keep them and try again, rather than exit
                    // and turn a definite "not paid" into a held unknown. Answers that came
                    // back meanwhile are taken too, so that the calls in flight run down and
                    // a lock held for good ends the pass once every lease is gone.
                    let finished = bank.poll(timeoutMilliseconds: 0)
                    if answered.isEmpty && !finished.isEmpty { oldestAnswer = clock() }
                    answered += finished
                    // A deadlock or serialization failure (PostgreSQL, where writers run at
                    // once) rolled the step back and let the other transaction through: the
                    // step is tried again, a few times, even with nothing in hand.
                    conflicts = error.isConflict ? conflicts + 1 : 0
                    let retryConflict = error.isConflict && conflicts <= ProcessorPass.conflictRetries
                    guard keepAnswers(&answered, after: error, retryAnyway: retryConflict, into: &summary) else { throw error }
                    continue
                }
                answered.removeAll(keepingCapacity: true)
                if !claimed.payouts.isEmpty { afterClaim(claimed.payouts) }
                for payout in claimed.payouts { bank.start(payout) }
                // A claim that only failed withdrawals for want of funds used no slot: claim
                // again. One that found nothing due ends the claiming.
                if claimLimit > 0 && claimed.payouts.isEmpty && claimed.events.isEmpty { exhausted = true }
                continue
            }
            if exhausted && bank.inFlightCount == 0 { break }
            let finished = bank.poll(timeoutMilliseconds: answered.isEmpty ? 100 : 10)
            if answered.isEmpty && !finished.isEmpty { oldestAnswer = clock() }
            answered += finished
        }
        let checkpoint = ledgerCheckpoint()
        do {
            try store.write {
                try store.purgeIdempotencyKeys(olderThan: clock().adding(seconds: -Limits.idempotencyRetentionSeconds))
                try store.recordPass(
                    startedAt: started, finishedAt: clock(), claimed: summary.claimed, completed: summary.completed,
                    failed: summary.failed, retried: summary.retried)
                if let checkpoint { try store.storeCheckpoint(checkpoint, now: clock()) }
            }
        } catch let error as DatabaseError where error.isBusy {
            // Every outcome is recorded; only the bookkeeping waits for the next pass.
            log.write(
                .warning, "database_busy", ["message": .string("\(error)"), "skipped": .string("pass record, checkpoint and key purge")])
        }
        if let checkpoint {
            log.write(.info, "ledger_checkpoint", ["ledger_id": .integer(checkpoint.ledgerID), "hash": .string(checkpoint.hash)])
        }
        log.write(
            .info, "pass",
            [
                "claimed": .integer(Int64(summary.claimed)), "completed": .integer(Int64(summary.completed)),
                "failed": .integer(Int64(summary.failed)), "retried": .integer(Int64(summary.retried)),
                "lease_lost": .integer(Int64(summary.leaseLost)),
                "duration_ms": .number(Double(clock().microseconds - started.microseconds) / 1000),
            ])
        return summary
    }

    /// The checkpoint of the ledger's last settled row (docs/CHECKPOINTS.md), for the journal
    /// to keep as an anchor. Computed in a read transaction, from the last stored checkpoint
    /// over the rows since: no write lock, and the cost of the rows since the last pass.
    /// nil when the ledger is empty or the checkpoint cannot be computed (logged: rows
    /// removed from the ledger's end make it so).
    private func ledgerCheckpoint() -> LedgerCheckpoint? {
        do {
            let settled = try store.settledLedgerID()
            return try store.read { try store.latestCheckpoint(settled: settled) }
        } catch {
            log.write(.error, "ledger_checkpoint_failed", ["message": .string("\(error)")])
            return nil
        }
    }

    /// After a step found the database busy: drops the answers whose lease has run out (the
    /// withdrawal may be claimed by another processor by now, exactly as after a lost lease;
    /// the next holder asks the bank again with the same key) and logs the wait. Returns
    /// whether the pass should try again: while answers are kept or calls are in flight.
    private func keepAnswers(
        _ answered: inout [(Payout, BankTransport)], after error: DatabaseError, retryAnyway: Bool,
        into summary: inout PassSummary
    ) -> Bool {
        let now = monotonicClock()
        var lines = Log.Lines()
        answered.removeAll { payout, transport in
            if let deadline = payout.leaseDeadline, now < deadline { return false }
            lines.append(
                log.line(
                    .warning, "lease_lost",
                    [
                        "withdrawal": .integer(payout.withdrawalID), "outcome": .string(PayoutOutcome(transport).name),
                        "detail": .string("the database stayed busy until the lease ran out"),
                    ]))
            summary.leaseLost += 1
            return true
        }
        let retrying = retryAnyway || !answered.isEmpty || bank.inFlightCount > 0
        lines.append(
            log.line(
                .warning, "database_busy",
                [
                    "message": .string("\(error)"), "answers_kept": .integer(Int64(answered.count)),
                    "calls_in_flight": .integer(Int64(bank.inFlightCount)), "retrying": .string(retrying ? "yes" : "no"),
                ]))
        lines.flush()
        return retrying
    }

    /// One transaction: records the finished attempts, then claims up to `claim` due
    /// withdrawals. Returns what the claim took, each lease also as a deadline on this
    /// machine's monotonic clock; the audit lines of both are written after the commit.
    private func step(
        record finished: [(Payout, BankTransport)], claim limit: Int, dueBy: Timestamp,
        into summary: inout PassSummary
    ) throws -> ProcessorChanges {
        if !finished.isEmpty { beforeRecording(finished) }
        // Read before the transaction begins: time spent waiting for the write lock and
        // reading the database's clock then only shortens the leases' local deadlines.
        let claimStarted = monotonicClock()
        let (recorded, leaseLost, claimedInDatabaseTime, now) = try store.write {
            // One read of the database's clock for the whole step, inside its transaction
            // and after the monotonic reading above: the leases start no earlier than it says.
            let now = try databaseClock()
            var recorded = ProcessorChanges()
            var leaseLost: [(Payout, PayoutOutcome)] = []
            // The withdrawals to claim are taken first (skipping those another processor
            // holds), then every wallet the step will change is locked in one order, before
            // any change: two steps at once (or a step and a responder's write) never each
            // hold a wallet the other waits for.
            let due = try store.lockDue(dueBy: dueBy, now: now, limit: limit)
            try store.lockWallets(finished.map(\.0.wallet) + due.wallets)
            for (payout, transport) in finished {
                let outcome = PayoutOutcome(transport)
                let decision = policy.decide(attempt: payout.attempt, bankMayHavePaid: payout.bankMayHavePaid, outcome: outcome, jitter: random())
                if try !store.record(payout, outcome: outcome, decision: decision, owner: owner, now: now, into: &recorded) {
                    leaseLost.append((payout, outcome))
                }
            }
            let claimed = try store.claim(due, owner: owner, now: now, leaseUntil: now.adding(microseconds: leaseMicroseconds))
            return (recorded, leaseLost, claimed, now)
        }
        var claimed = claimedInDatabaseTime
        for index in claimed.payouts.indices {
            claimed.payouts[index].leaseDeadline = MonotonicInstant.deadline(
                leaseUntil: claimed.payouts[index].leaseUntil, databaseNow: now, claimStarted: claimStarted)
        }
        var lines = Log.Lines()
        for (payout, outcome) in leaseLost {
            lines.append(log.line(.warning, "lease_lost", ["withdrawal": .integer(payout.withdrawalID), "outcome": .string(outcome.name)]))
        }
        report(recorded, to: &lines)
        report(claimed, to: &lines)
        lines.flush()
        summary.leaseLost += leaseLost.count
        for event in recorded.events {
            switch event.status {
            case .completed: summary.completed += 1
            case .failed: summary.failed += 1
            default: summary.retried += 1
            }
        }
        summary.claimed += claimed.payouts.count + claimed.events.count { $0.status == .failed }
        summary.failed += claimed.events.count { $0.status == .failed }
        return claimed
    }

    /// The audit lines of committed changes: ledger rows, then withdrawal state changes.
    private func report(_ changes: ProcessorChanges, to lines: inout Log.Lines) {
        for entry in changes.ledgerEntries { lines.append(log.auditLine(entry)) }
        for event in changes.events {
            lines.append(
                log.line(
                    event.status == .failed ? .warning : .info, "withdrawal",
                    [
                        "withdrawal": .integer(event.withdrawalID), "wallet": .string(event.wallet.text),
                        "amount": .integer(event.amount.minorUnits), "status": .string(event.status.rawValue),
                        "attempt": .integer(event.attempt), "failure_reason": .string(event.failureReason?.rawValue),
                        "outcome": .string(event.outcome), "detail": .string(event.detail),
                        "next_attempt_at": .string(event.nextAttemptAt?.rfc3339),
                    ]))
        }
    }
}

/// Steele, Lea and Flood's SplitMix64: fast, statistically sound, not for secrets.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
