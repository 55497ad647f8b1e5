import WalletDomain
import WalletJSON
import WalletPlatform

/// The effect of a deposit, for the response and the audit log.
public struct DepositResult: Sendable, Equatable {
    public var wallet: Wallet
    public var transaction: Transaction
    public var ledgerEntry: LedgerEntry
    /// `transaction.json`, serialized once for its event and kept for the response.
    public var transactionJSON: String
}

extension Store {
    static let transactionColumns = """
        t.id, w.uuid, t.type, t.amount, t.status, t.scheduled_for, t.executed_at, t.created_at, \
        t.attempts, t.failure_reason, t.idempotency_key, t.reference
        """

    static func transaction(from row: Row) throws -> Transaction {
        guard let wallet = WalletID(row.text("uuid")),
            let type = TransactionType(rawValue: row.text("type")),
            let amount = Amount(minorUnits: row.integer("amount")),
            let status = TransactionStatus(rawValue: row.text("status"))
        else {
            throw DatabaseError(code: 0, message: "corrupt transaction row \(row.integer("id"))")
        }
        let reason = try row.optionalText("failure_reason").map { text in
            guard let reason = FailureReason(rawValue: text) else {
                throw DatabaseError(code: 0, message: "corrupt failure reason in transaction \(row.integer("id"))")
            }
            return reason
        }
        return Transaction(
            id: row.integer("id"), wallet: wallet, type: type, amount: amount, status: status,
            scheduledFor: row.optionalInteger("scheduled_for").map(Timestamp.init(microseconds:)),
            executedAt: row.optionalInteger("executed_at").map(Timestamp.init(microseconds:)),
            createdAt: Timestamp(microseconds: row.integer("created_at")),
            attempts: row.integer("attempts"), failureReason: reason, idempotencyKey: row.optionalText("idempotency_key"),
            reference: row.optionalText("reference"))
    }

    /// The transaction with this id, if it belongs to this wallet and `caller` may see the wallet.
    public func transaction(_ id: Int64, of wallet: WalletID, visibleTo caller: Caller) throws -> Transaction? {
        try transaction(id, of: wallet, visibleTo: caller, locked: false)
    }

    /// The same; `locked`, held until the transaction ends for a write that changes it (a
    /// processor claiming it meanwhile waits, or skips the row), and its wallet against a
    /// change of owner (`Database.RowLock`).
    func transaction(_ id: Int64, of wallet: WalletID, visibleTo caller: Caller, locked: Bool) throws -> Transaction? {
        let lock = locked ? database.lockClause(.update, of: "t") + database.lockClause(.keyShare, of: "w") : ""
        return try database.queryFirst(
            """
            SELECT \(Store.transactionColumns) FROM transactions t JOIN wallets w ON w.id = t.wallet_id
            WHERE t.id = ?1 AND w.uuid = ?2 AND (w.api_key_id = ?3 OR ?3 IS NULL)\(lock)
            """,
            [.integer(id), .text(wallet.text), SQLValue(caller.keyFilter?.rawValue)], Store.transaction)
    }

    /// The transaction with this id, whatever its wallet (the admin CLI's view).
    public func transaction(_ id: Int64) throws -> Transaction? {
        try database.queryFirst(
            "SELECT \(Store.transactionColumns) FROM transactions t JOIN wallets w ON w.id = t.wallet_id WHERE t.id = ?",
            [.integer(id)], Store.transaction)
    }

    /// A page of the wallet's transactions with ids below `before`, newest first.
    public func transactions(of wallet: Wallet, filter: TransactionFilter, before: Int64?, limit: Int) throws -> TransactionPage {
        var rows = try database.query(
            """
            SELECT \(Store.transactionColumns) FROM transactions t JOIN wallets w ON w.id = t.wallet_id
            WHERE t.wallet_id = ?1 AND t.id < ?2 AND (t.status = ?3 OR ?3 IS NULL) AND (t.type = ?4 OR ?4 IS NULL)
              AND (t.reference = ?6 OR ?6 IS NULL)
            ORDER BY t.id DESC LIMIT ?5
            """,
            [
                .integer(wallet.rowID), .integer(before ?? Int64.max), SQLValue(filter.status?.rawValue),
                SQLValue(filter.type?.rawValue), .integer(Int64(limit) + 1), SQLValue(filter.reference),
            ],
            Store.transaction)
        var next: Int64?
        if rows.count > limit {
            rows.removeLast()
            next = rows.last?.id
        }
        return TransactionPage(transactions: rows, nextCursor: next)
    }

    /// Credits the wallet at once: the balance, a `COMPLETED` deposit and its ledger row,
    /// all in the caller's transaction. Nothing changes when the sum would overflow, nor
    /// when `caller` may not see the wallet.
    public func deposit(
        to walletID: WalletID, by caller: Caller, amount: Amount, idempotencyKey: String?, reference: String? = nil, now: Timestamp
    ) throws
        -> Result<DepositResult, DomainError>
    {
        requireTransaction()
        guard let wallet = try wallet(walletID, visibleTo: caller, lock: .update) else { return .failure(.walletNotFound) }
        guard let newBalance = wallet.balance.adding(amount.money),
            newBalance.adding(wallet.held) != nil
        else { return .failure(.balanceOverflow) }
        let changed = try database.run(
            "UPDATE wallets SET balance = ?1, updated_at = ?2 WHERE id = ?3 AND balance = ?4",
            [.integer(newBalance.minorUnits), .integer(now.microseconds), .integer(wallet.rowID), .integer(wallet.balance.minorUnits)])
        precondition(changed == 1, "the wallet changed while this transaction held it")
        let transactionID = try insertTransaction(
            walletRowID: wallet.rowID, type: .deposit, status: .completed, amount: amount,
            scheduledFor: nil, executedAt: now, nextAttemptAt: nil, idempotencyKey: idempotencyKey, reference: reference, now: now)
        let entry = try appendLedger(
            walletRowID: wallet.rowID, wallet: walletID, transactionID: transactionID,
            kind: .deposit, delta: amount.minorUnits, balanceAfter: newBalance, now: now)
        var updated = wallet
        updated.balance = newBalance
        updated.updatedAt = now
        let transaction = Transaction(
            id: transactionID, wallet: walletID, type: .deposit, amount: amount, status: .completed,
            scheduledFor: nil, executedAt: now, createdAt: now, attempts: 0, failureReason: nil, idempotencyKey: idempotencyKey,
            reference: reference)
        let json = transaction.json
        try appendEvent(.depositCompleted, walletRowID: wallet.rowID, transactionID: transactionID, data: json, now: now)
        return .success(DepositResult(wallet: updated, transaction: transaction, ledgerEntry: entry, transactionJSON: json))
    }

    /// Records a `PENDING` withdrawal, due at `scheduledFor`. The balance is not checked
    /// here: the processor checks it when the withdrawal is due.
    public func scheduleWithdrawal(
        from walletID: WalletID, by caller: Caller, amount: Amount, scheduledFor: Timestamp, idempotencyKey: String?,
        reference: String? = nil, now: Timestamp
    ) throws -> Result<Transaction, DomainError> {
        requireTransaction()
        guard let wallet = try wallet(walletID, visibleTo: caller, lock: .keyShare) else { return .failure(.walletNotFound) }
        let id = try insertTransaction(
            walletRowID: wallet.rowID, type: .withdrawal, status: .pending, amount: amount,
            scheduledFor: scheduledFor, executedAt: nil, nextAttemptAt: scheduledFor, idempotencyKey: idempotencyKey,
            reference: reference, bankKey: BankKey.random(), now: now)
        let transaction = Transaction(
            id: id, wallet: walletID, type: .withdrawal, amount: amount, status: .pending, scheduledFor: scheduledFor,
            executedAt: nil, createdAt: now, attempts: 0, failureReason: nil, idempotencyKey: idempotencyKey, reference: reference)
        try appendEvent(.withdrawalScheduled, walletRowID: wallet.rowID, transactionID: id, data: transaction.json, now: now)
        return .success(transaction)
    }

    /// Cancels a withdrawal that is still `PENDING`. The processor debits and leaves
    /// `PENDING` in one transaction, so a withdrawal found `PENDING` here holds no funds.
    public func cancelWithdrawal(_ id: Int64, of walletID: WalletID, by caller: Caller, now: Timestamp) throws -> Result<Transaction, DomainError> {
        requireTransaction()
        guard let transaction = try transaction(id, of: walletID, visibleTo: caller, locked: true) else { return .failure(.transactionNotFound) }
        guard transaction.type == .withdrawal, transaction.status == .pending else {
            return .failure(.notCancelable(transaction.status))
        }
        let changed = try updateStatus(
            """
            UPDATE transactions SET status = ?1, failure_reason = ?2, next_attempt_at = NULL, updated_at = ?3
            WHERE id = ?4 AND status = ?5
            """, from: .pending, to: .canceled,
            [
                SQLValue(TransactionStatus.canceled), SQLValue(FailureReason.canceled), .integer(now.microseconds), .integer(id),
                SQLValue(TransactionStatus.pending),
            ])
        precondition(changed == 1, "the withdrawal changed while this transaction held it")
        var canceled = transaction
        canceled.status = .canceled
        canceled.failureReason = .canceled
        try appendEvent(.withdrawalCanceled, transactionID: id, data: canceled.json, now: now)
        return .success(canceled)
    }

    /// Runs an update that moves transactions from `from` to `to`, after checking the move
    /// against the state machine's table (a move the table lacks is a bug in this program).
    /// Returns the number of rows changed.
    @discardableResult
    func updateStatus(_ sql: String, from: TransactionStatus, to: TransactionStatus, _ values: [SQLValue]) throws -> Int {
        precondition(from.canBecome(to), "\(from.rawValue) → \(to.rawValue) is not a transition of the state machine")
        return try database.run(sql, values)
    }

    /// Counts and exact sums of transactions by type and status, for `/metrics` and
    /// `walletctl stats`.
    public func transactionCounts() throws -> [TransactionGroup] {
        try database.query(
            "SELECT type, status, count(*) AS count, \(Store.exactSum("amount")) FROM transactions GROUP BY type, status"
        ) { row in
            guard let type = TransactionType(rawValue: row.text("type")), let status = TransactionStatus(rawValue: row.text("status")) else {
                throw DatabaseError(code: 0, message: "corrupt transaction type or status")
            }
            return TransactionGroup(type: type, status: status, count: row.integer("count"), amount: Store.exactSum(row, from: 3))
        }
    }

    /// SQL for an exact sum of a non-negative integer column, in two parts. SQLite's
    /// `total()` is a floating-point sum, inexact past 2^53, and `sum()` fails once the
    /// total passes 2^63; the two partial sums fit until a billion rows.
    static func exactSum(_ column: String) -> String {
        "coalesce(sum(\(column) / 1000000000), 0), coalesce(sum(\(column) % 1000000000), 0)"
    }

    /// Reads the two parts written by `exactSum(_:)` from `column` and `column + 1`.
    static func exactSum(_ row: Row, from column: Int32) -> Int128 {
        Int128(row.integer(column)) * 1_000_000_000 + Int128(row.integer(column + 1))
    }

    func insertTransaction(
        walletRowID: Int64, type: TransactionType, status: TransactionStatus, amount: Amount,
        scheduledFor: Timestamp?, executedAt: Timestamp?, nextAttemptAt: Timestamp?,
        idempotencyKey: String?, reference: String? = nil, bankKey: String? = nil, now: Timestamp
    ) throws -> Int64 {
        try database.insert(
            """
            INSERT INTO transactions (wallet_id, type, status, amount, scheduled_for, executed_at, created_at, updated_at,
                                      next_attempt_at, idempotency_key, bank_key, reference)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)
            """,
            [
                .integer(walletRowID), .text(type.rawValue), .text(status.rawValue), .integer(amount.minorUnits),
                SQLValue(scheduledFor?.microseconds), SQLValue(executedAt?.microseconds), .integer(now.microseconds),
                SQLValue(nextAttemptAt?.microseconds), SQLValue(idempotencyKey), SQLValue(bankKey), SQLValue(reference),
            ])
    }
}
