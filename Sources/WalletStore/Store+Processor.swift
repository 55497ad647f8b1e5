import WalletDomain
import WalletJSON
import WalletPlatform

/// A change of a withdrawal's state, for the processor's audit log.
public struct WithdrawalEvent: Sendable, Equatable {
    public var withdrawalID: Int64
    public var wallet: WalletID
    public var amount: Amount
    public var status: TransactionStatus
    public var attempt: Int64
    public var failureReason: FailureReason?
    public var outcome: String?
    public var detail: String?
    public var nextAttemptAt: Timestamp?

    public init(
        withdrawalID: Int64, wallet: WalletID, amount: Amount, status: TransactionStatus, attempt: Int64, failureReason: FailureReason? = nil,
        outcome: String? = nil, detail: String? = nil, nextAttemptAt: Timestamp? = nil
    ) {
        self.withdrawalID = withdrawalID
        self.wallet = wallet
        self.amount = amount
        self.status = status
        self.attempt = attempt
        self.failureReason = failureReason
        self.outcome = outcome
        self.detail = detail
        self.nextAttemptAt = nextAttemptAt
    }
}

/// What a claim or a recording wrote, for the audit log and the pass summary.
public struct ProcessorChanges: Sendable {
    public var payouts: [Payout] = []
    public var events: [WithdrawalEvent] = []
    public var ledgerEntries: [LedgerEntry] = []

    public init(payouts: [Payout] = [], events: [WithdrawalEvent] = [], ledgerEntries: [LedgerEntry] = []) {
        self.payouts = payouts
        self.events = events
        self.ledgerEntries = ledgerEntries
    }
}

/// The withdrawals a claim took and locked, not yet changed (`Store.lockDue`).
public struct DueClaim {
    let rows: [DueWithdrawal]
    /// Their wallets, to be locked with the others the transaction changes.
    public var wallets: [WalletID] { rows.map(\.wallet) }
}

/// A withdrawal the processor found due, as its row says.
struct DueWithdrawal {
    var id: Int64
    var wallet: WalletID
    var amount: Amount
    var status: TransactionStatus
    var attempts: Int64
    /// A call was still open: the processor that made it died mid-call.
    var callOpen: Bool
    var mayHavePaid: Bool
    var walletRowID: Int64
    var bankKey: String
    var reference: String?
}

extension Store {
    /// Claims up to `limit` withdrawals due by `dueBy` that no live processor holds, in the
    /// caller's transaction. A due `PENDING` one is settled against the balance now: with
    /// funds it is debited and becomes `PROCESSING`; without, it is `FAILED` /
    /// `insufficient_funds` and the bank is never called. Every claimed `PROCESSING` one
    /// is leased to `owner` until `leaseUntil` and counted as an attempt before the call,
    /// so a crash after this commit still counts the attempt and marks the call as open.
    ///
    /// On PostgreSQL, where processors on several hosts claim at once, a row another
    /// transaction holds (another processor's claim, a cancellation) is skipped (`FOR UPDATE
    /// SKIP LOCKED`), and a row it released is checked again, lease included, before it is
    /// taken: one withdrawal is never claimed by two processors at once.
    public func claimDue(owner: String, dueBy: Timestamp, now: Timestamp, leaseUntil: Timestamp, limit: Int) throws -> ProcessorChanges {
        let due = try lockDue(dueBy: dueBy, now: now, limit: limit)
        try lockWallets(due.wallets)
        return try claim(due, owner: owner, now: now, leaseUntil: leaseUntil)
    }

    /// The first half of `claimDue`: selects and locks (skipping locked rows) the withdrawals
    /// it would take, and changes nothing. A step that also records outcomes locks the
    /// wallets of both together (`lockWallets`) before changing any, then `claim`s these.
    public func lockDue(dueBy: Timestamp, now: Timestamp, limit: Int) throws -> DueClaim {
        requireTransaction()
        guard limit > 0 else { return DueClaim(rows: []) }
        let rows = try database.query(
            """
            SELECT t.id, w.uuid, t.amount, t.status, t.attempts, t.bank_call_open, t.bank_may_have_paid, t.wallet_id, t.bank_key,
                   t.reference
            FROM transactions t JOIN wallets w ON w.id = t.wallet_id
            WHERE t.next_attempt_at IS NOT NULL AND t.next_attempt_at <= ?1 AND (t.lease_until IS NULL OR t.lease_until <= ?2)
            ORDER BY t.next_attempt_at LIMIT ?3\(database.lockClause(.update, of: "t", skipLocked: true))
            """,
            [.integer(dueBy.microseconds), .integer(now.microseconds), .integer(Int64(limit))]
        ) { row -> DueWithdrawal in
            guard let wallet = WalletID(row.text("uuid")), let amount = Amount(minorUnits: row.integer("amount")),
                let status = TransactionStatus(rawValue: row.text("status")), status == .pending || status == .processing,
                let bankKey = row.optionalText("bank_key")
            else {
                throw DatabaseError(code: 0, message: "corrupt due withdrawal \(row.integer("id"))")
            }
            return DueWithdrawal(
                id: row.integer("id"), wallet: wallet, amount: amount, status: status, attempts: row.integer("attempts"),
                callOpen: row.integer("bank_call_open") != 0, mayHavePaid: row.integer("bank_may_have_paid") != 0,
                walletRowID: row.integer("wallet_id"), bankKey: bankKey, reference: row.optionalText("reference"))
        }
        return DueClaim(rows: rows)
    }

    /// Locks these wallets' rows in one order (by UUID) until the transaction ends, before
    /// any of them is changed (on PostgreSQL; SQLite's one writer holds every row already).
    /// Every transaction that changes several wallets takes them this way first, so none
    /// holds a wallet another waits for while it waits for one the other holds. A
    /// transaction that changes one wallet holds nothing else while it waits for it.
    public func lockWallets(_ wallets: [WalletID]) throws {
        requireTransaction()
        guard database.isPostgres, !wallets.isEmpty else { return }
        let list = Set(wallets.map(\.text)).sorted().joined(separator: ",")
        // Rows are locked as the sort returns them: in UUID order.
        _ = try database.query(
            "SELECT id FROM wallets WHERE uuid = ANY(string_to_array(?1, ',')) ORDER BY uuid\(database.lockClause(.update))",
            [.text(list)]
        ) { _ in () }
    }

    /// The second half of `claimDue`: settles and leases the withdrawals `lockDue` took.
    public func claim(_ due: DueClaim, owner: String, now: Timestamp, leaseUntil: Timestamp) throws -> ProcessorChanges {
        requireTransaction()
        var changes = ProcessorChanges()
        for due in due.rows {
            if due.status == .pending {
                try settlePending(
                    id: due.id, wallet: due.wallet, walletRowID: due.walletRowID, amount: due.amount, bankKey: due.bankKey,
                    reference: due.reference, owner: owner,
                    now: now, leaseUntil: leaseUntil, into: &changes)
            } else {
                // A call found still open belongs to a processor that died mid-call: the bank
                // may have paid it.
                let doubt = due.mayHavePaid || due.callOpen
                try updateStatus(
                    """
                    UPDATE transactions SET attempts = attempts + 1, bank_call_open = 1, bank_may_have_paid = ?1,
                        lease_owner = ?2, lease_until = ?3, next_attempt_at = ?3, updated_at = ?4
                    WHERE id = ?5 AND status = ?6
                    """, from: .processing, to: .processing,
                    [
                        .integer(doubt ? 1 : 0), .text(owner), .integer(leaseUntil.microseconds), .integer(now.microseconds), .integer(due.id),
                        SQLValue(TransactionStatus.processing),
                    ])
                changes.payouts.append(
                    Payout(
                        withdrawalID: due.id, wallet: due.wallet, amount: due.amount, bankKey: due.bankKey, attempt: due.attempts + 1,
                        bankMayHavePaid: doubt, leaseUntil: leaseUntil, reference: due.reference))
            }
        }
        return changes
    }

    private func settlePending(
        id: Int64, wallet: WalletID, walletRowID: Int64, amount: Amount, bankKey: String, reference: String?, owner: String,
        now: Timestamp, leaseUntil: Timestamp, into changes: inout ProcessorChanges
    ) throws {
        // The conditional debit: one statement whose change count says whether there were
        // funds. (Not RETURNING: it builds a temporary table per statement, which costs more
        // than the lookup below, in the same transaction.)
        let debited =
            try database.run(
                """
                UPDATE wallets SET balance = balance - ?1, held = held + ?1, updated_at = ?2
                WHERE id = ?3 AND balance >= ?1
                """,
                [.integer(amount.minorUnits), .integer(now.microseconds), .integer(walletRowID)]) == 1
        guard debited else {
            try updateStatus(
                """
                UPDATE transactions SET status = ?1, failure_reason = ?2, next_attempt_at = NULL, updated_at = ?3
                WHERE id = ?4 AND status = ?5
                """, from: .pending, to: .failed,
                [
                    SQLValue(TransactionStatus.failed), SQLValue(FailureReason.insufficientFunds), .integer(now.microseconds), .integer(id),
                    SQLValue(TransactionStatus.pending),
                ])
            changes.events.append(
                WithdrawalEvent(
                    withdrawalID: id, wallet: wallet, amount: amount, status: .failed, attempt: 0,
                    failureReason: .insufficientFunds, outcome: nil, detail: "balance below the amount when due"))
            try appendWithdrawalEvent(.withdrawalFailed, transactionID: id, now: now, attempt: nil, outcome: nil, refund: nil)
            return
        }
        // Debited in this transaction: the row is there and its balance non-negative (CHECK).
        guard let balance = try database.queryFirst("SELECT balance FROM wallets WHERE id = ?1", [.integer(walletRowID)], { $0.integer("balance") }),
            let balanceAfter = Money(minorUnits: balance)
        else { preconditionFailure("wallet \(walletRowID) was debited but its balance cannot be read back") }
        let changed = try updateStatus(
            """
            UPDATE transactions SET status = ?5, attempts = 1, bank_call_open = 1, lease_owner = ?1, lease_until = ?2,
                next_attempt_at = ?2, updated_at = ?3
            WHERE id = ?4 AND status = ?6
            """, from: .pending, to: .processing,
            [
                .text(owner), .integer(leaseUntil.microseconds), .integer(now.microseconds), .integer(id),
                SQLValue(TransactionStatus.processing), SQLValue(TransactionStatus.pending),
            ])
        precondition(changed == 1, "a due PENDING withdrawal changed while this transaction held it")
        changes.ledgerEntries.append(
            try appendLedger(
                walletRowID: walletRowID, wallet: wallet, transactionID: id, kind: .debit,
                delta: -amount.minorUnits, balanceAfter: balanceAfter, now: now))
        changes.events.append(
            WithdrawalEvent(
                withdrawalID: id, wallet: wallet, amount: amount, status: .processing, attempt: 1,
                failureReason: nil, outcome: nil, detail: "debited; calling the bank"))
        try appendWithdrawalEvent(.withdrawalProcessing, transactionID: id, now: now, attempt: 1, outcome: nil)
        changes.payouts.append(
            Payout(
                withdrawalID: id, wallet: wallet, amount: amount, bankKey: bankKey, attempt: 1,
                bankMayHavePaid: false, leaseUntil: leaseUntil, reference: reference))
    }

    /// Records the outcome of one attempt, if `owner` still holds the withdrawal's lease (a
    /// processor that lost its lease records nothing: the new holder asks the bank again
    /// with the same key). Returns false when nothing was recorded.
    @discardableResult
    public func record(
        _ payout: Payout, outcome: PayoutOutcome, decision: PayoutDecision, owner: String, now: Timestamp,
        into changes: inout ProcessorChanges
    ) throws -> Bool {
        requireTransaction()
        // ?1 the withdrawal, ?2 its lease holder, ?3 the status it must still have.
        let holder: [SQLValue] = [.integer(payout.withdrawalID), .text(owner), SQLValue(TransactionStatus.processing)]
        var event = WithdrawalEvent(
            withdrawalID: payout.withdrawalID, wallet: payout.wallet, amount: payout.amount, status: .processing,
            attempt: payout.attempt, failureReason: nil, outcome: outcome.name, detail: outcome.detail)
        switch decision {
        case .complete:
            guard
                try updateStatus(
                    """
                    UPDATE transactions SET status = ?5, executed_at = ?4, failure_reason = NULL, next_attempt_at = NULL,
                        lease_owner = NULL, lease_until = NULL, bank_call_open = 0, updated_at = ?4
                    WHERE id = ?1 AND lease_owner = ?2 AND status = ?3
                    """, from: .processing, to: .completed,
                    holder + [.integer(now.microseconds), SQLValue(TransactionStatus.completed)]) == 1
            else { return false }
            try releaseHeld(payout, refund: false, now: now, into: &changes)
            event.status = .completed
            try appendWithdrawalEvent(
                .withdrawalCompleted, transactionID: payout.withdrawalID, now: now, attempt: payout.attempt, outcome: outcome.name)
        case .fail(let reason):
            precondition(reason != .bankOutcomeUnknown, "an unknown outcome is never a failure")
            guard
                try updateStatus(
                    """
                    UPDATE transactions SET status = ?7, failure_reason = ?4, next_attempt_at = NULL,
                        lease_owner = NULL, lease_until = NULL, bank_call_open = 0, bank_may_have_paid = 0, updated_at = ?5
                    WHERE id = ?1 AND lease_owner = ?2 AND status = ?3 AND (bank_may_have_paid = 0 OR ?6 = 1)
                    """, from: .processing, to: .failed,
                    holder + [
                        SQLValue(reason), .integer(now.microseconds), .integer(outcome.isBanksWord ? 1 : 0),
                        SQLValue(TransactionStatus.failed),
                    ]) == 1
            else { return false }
            try releaseHeld(payout, refund: true, now: now, into: &changes)
            event.status = .failed
            event.failureReason = reason
            try appendWithdrawalEvent(
                .withdrawalFailed, transactionID: payout.withdrawalID, now: now, attempt: payout.attempt, outcome: outcome.name,
                refund: changes.ledgerEntries.last)
        case .retry(let delay, let doubt, let reason):
            let next = now.adding(microseconds: max(delay, 1))
            guard
                try updateStatus(
                    """
                    UPDATE transactions SET next_attempt_at = ?4, bank_may_have_paid = ?5, failure_reason = ?6,
                        lease_owner = NULL, lease_until = NULL, bank_call_open = 0, updated_at = ?7
                    WHERE id = ?1 AND lease_owner = ?2 AND status = ?3
                    """, from: .processing, to: .processing,
                    holder + [.integer(next.microseconds), .integer(doubt ? 1 : 0), SQLValue(reason), .integer(now.microseconds)]) == 1
            else { return false }
            event.failureReason = reason
            event.nextAttemptAt = next
            try appendWithdrawalEvent(
                reason == .bankOutcomeUnknown ? .withdrawalOutcomeUnknown : .withdrawalRetrying, transactionID: payout.withdrawalID,
                now: now, attempt: payout.attempt, outcome: outcome.name, nextAttemptAt: next)
        }
        changes.events.append(event)
        return true
    }

    /// Releases a settled withdrawal's held funds: gone for good when paid, back into the
    /// balance (with its ledger row) when refunded.
    private func releaseHeld(_ payout: Payout, refund: Bool, now: Timestamp, into changes: inout ProcessorChanges) throws {
        let amount = payout.amount.minorUnits
        let released = try database.run(
            """
            UPDATE wallets SET held = held - ?1, balance = balance + ?2, updated_at = ?3
            WHERE uuid = ?4 AND held >= ?1
            """,
            [.integer(amount), .integer(refund ? amount : 0), .integer(now.microseconds), .text(payout.wallet.text)])
        precondition(released == 1, "withdrawal \(payout.withdrawalID) was PROCESSING without its held funds")
        guard refund else { return }
        let refunded = try database.queryFirst("SELECT id, balance FROM wallets WHERE uuid = ?1", [.text(payout.wallet.text)]) {
            ($0.integer(0), $0.integer(1))
        }
        guard let (walletRowID, balance) = refunded, let balanceAfter = Money(minorUnits: balance) else {
            preconditionFailure("wallet \(payout.wallet.text) vanished inside our own write transaction")
        }
        changes.ledgerEntries.append(
            try appendLedger(
                walletRowID: walletRowID, wallet: payout.wallet, transactionID: payout.withdrawalID,
                kind: .refund, delta: amount, balanceAfter: balanceAfter, now: now))
    }

    /// Notes a finished pass for `walletctl stats`.
    public func recordPass(startedAt: Timestamp, finishedAt: Timestamp, claimed: Int, completed: Int, failed: Int, retried: Int) throws {
        requireTransaction()
        try database.run(
            "INSERT INTO processor_passes (started_at, finished_at, claimed, completed, failed, retried) VALUES (?, ?, ?, ?, ?, ?)",
            [
                .integer(startedAt.microseconds), .integer(finishedAt.microseconds), .integer(Int64(claimed)),
                .integer(Int64(completed)), .integer(Int64(failed)), .integer(Int64(retried)),
            ])
    }
}
