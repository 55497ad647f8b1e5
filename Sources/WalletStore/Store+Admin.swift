import WalletDomain
import WalletJSON
import WalletPlatform

/// What the admin CLI may filter transactions by, across wallets.
public struct AdminTransactionFilter: Sendable {
    public var wallet: WalletID?
    public var status: TransactionStatus?
    public var type: TransactionType?
    public var createdFrom: Timestamp?
    public var createdBefore: Timestamp?
    public var limit: Int

    public init(
        wallet: WalletID? = nil, status: TransactionStatus? = nil, type: TransactionType? = nil,
        createdFrom: Timestamp? = nil, createdBefore: Timestamp? = nil, limit: Int = 100
    ) {
        self.wallet = wallet
        self.status = status
        self.type = type
        self.createdFrom = createdFrom
        self.createdBefore = createdBefore
        self.limit = limit
    }
}

/// Figures for `walletctl stats`.
public struct Statistics: Sendable {
    public typealias Pass = ProcessorPassRecord

    public var wallets: Int64
    public var totalBalance: Int128
    public var totalHeld: Int128
    public var groups: [TransactionGroup]
    /// The earliest due time among withdrawals waiting for the processor, if any is due.
    public var oldestDue: Timestamp?
    public var dueCount: Int64
    public var outcomeUnknownCount: Int64
    public var lastPass: Pass?
}

extension Store {
    /// Transactions across wallets, newest first.
    public func transactions(matching filter: AdminTransactionFilter) throws -> [Transaction] {
        try database.query(
            """
            SELECT \(Store.transactionColumns) FROM transactions t JOIN wallets w ON w.id = t.wallet_id
            WHERE (w.uuid = ?1 OR ?1 IS NULL) AND (t.status = ?2 OR ?2 IS NULL) AND (t.type = ?3 OR ?3 IS NULL)
              AND (t.created_at >= ?4 OR ?4 IS NULL) AND (t.created_at < ?5 OR ?5 IS NULL)
            ORDER BY t.id DESC LIMIT ?6
            """,
            [
                SQLValue(filter.wallet?.text), SQLValue(filter.status?.rawValue), SQLValue(filter.type?.rawValue),
                SQLValue(filter.createdFrom?.microseconds), SQLValue(filter.createdBefore?.microseconds), .integer(Int64(filter.limit)),
            ],
            Store.transaction)
    }

    /// Cancels a `PENDING` withdrawal by id alone (the operator's view).
    public func cancelWithdrawal(_ id: Int64, now: Timestamp) throws -> Result<Transaction, DomainError> {
        guard let transaction = try transaction(id) else { return .failure(.transactionNotFound) }
        return try cancelWithdrawal(id, of: transaction.wallet, by: .operator, now: now)
    }

    public func statistics(now: Timestamp) throws -> Statistics {
        let totals =
            try database.queryFirst("SELECT count(*), \(Store.exactSum("balance")), \(Store.exactSum("held")) FROM wallets") {
                ($0.integer(0), Store.exactSum($0, from: 1), Store.exactSum($0, from: 3))
            } ?? (0, 0, 0)
        let groups = try transactionCounts()
        let due =
            try database.queryFirst(
                "SELECT min(next_attempt_at), count(*) FROM transactions WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?",
                [.integer(now.microseconds)]
            ) { ($0.optionalInteger(0), $0.integer(1)) } ?? (nil, 0)
        return Statistics(
            wallets: totals.0, totalBalance: totals.1, totalHeld: totals.2, groups: groups,
            oldestDue: due.0.map(Timestamp.init(microseconds:)), dueCount: due.1,
            outcomeUnknownCount: try outcomeUnknownWithdrawals().count, lastPass: try lastProcessorPass())
    }
}
