import WalletDomain
import WalletJSON
import WalletPlatform

/// A wallet's balance and held funds as they stood at a time.
public struct BalanceAt: Sendable, Equatable {
    public var balance: Int64
    public var held: Int64

    public init(balance: Int64, held: Int64) {
        self.balance = balance
        self.held = held
    }
}

extension Store {
    /// The balance and held funds of `wallet` at `time`, from the ledger (run it in a read
    /// transaction, so both come from one snapshot):
    /// - `balance`: the `balance_after` of the wallet's last ledger row at or before `time`
    ///   (rows in time order, then id order), 0 before its first;
    /// - `held`: its withdrawals debited at or before `time` and not yet settled then
    ///   (completed at or before `time`, or refunded at or before `time`).
    ///
    /// Both are index lookups (`ledger_by_wallet_time`, `transactions_by_wallet_status`): the
    /// cost of `held` grows with the withdrawals still `PROCESSING` or settled since `time`,
    /// not with the ledger.
    public func balance(of wallet: Wallet, at time: Timestamp) throws -> BalanceAt {
        BalanceAt(
            balance: try balance(ofWalletRow: wallet.rowID, through: time, inclusive: true),
            held: try held(ofWalletRow: wallet.rowID, at: time))
    }

    /// The `balance_after` of the wallet's last ledger row at or before `time` (before it
    /// when not `inclusive`), 0 if there is none.
    public func balance(ofWalletRow rowID: Int64, through time: Timestamp, inclusive: Bool) throws -> Int64 {
        try database.scalarInteger(
            """
            SELECT balance_after FROM ledger WHERE wallet_id = ?1 AND created_at \(inclusive ? "<=" : "<") ?2
            ORDER BY created_at DESC, id DESC LIMIT 1
            """, [.integer(rowID), .integer(time.microseconds)]) ?? 0
    }

    /// The withdrawals debited at or before `time` and not settled at `time`. A candidate is
    /// one still `PROCESSING`, or `COMPLETED` or `FAILED` with its last change after `time`
    /// (a final withdrawal is never changed again, so its last change is when it settled).
    func held(ofWalletRow rowID: Int64, at time: Timestamp) throws -> Int64 {
        let candidates = """
            SELECT t.id, t.amount, t.status, t.executed_at FROM transactions t
            WHERE t.wallet_id = ?1 AND t.type = ?3 AND t.status = ?4
            UNION ALL
            SELECT t.id, t.amount, t.status, t.executed_at FROM transactions t
            WHERE t.wallet_id = ?1 AND t.type = ?3 AND t.status = ?5 AND t.updated_at > ?2
            UNION ALL
            SELECT t.id, t.amount, t.status, t.executed_at FROM transactions t
            WHERE t.wallet_id = ?1 AND t.type = ?3 AND t.status = ?6 AND t.updated_at > ?2
            """
        return try database.scalarInteger(
            """
            SELECT coalesce(sum(c.amount), 0) FROM (\(candidates)) c
            WHERE EXISTS (SELECT 1 FROM ledger d WHERE d.transaction_id = c.id AND d.kind = ?7 AND d.created_at <= ?2)
              AND NOT (c.status = ?5 AND c.executed_at IS NOT NULL AND c.executed_at <= ?2)
              AND NOT EXISTS (SELECT 1 FROM ledger r WHERE r.transaction_id = c.id AND r.kind = ?8 AND r.created_at <= ?2)
            """,
            [
                .integer(rowID), .integer(time.microseconds), SQLValue(TransactionType.withdrawal), SQLValue(TransactionStatus.processing),
                SQLValue(TransactionStatus.completed), SQLValue(TransactionStatus.failed), SQLValue(LedgerEntry.Kind.debit),
                SQLValue(LedgerEntry.Kind.refund),
            ]) ?? 0
    }

    /// The wallet's ledger rows written in `[from, to)`, in time order, then id order.
    public func ledgerRows(ofWalletRow rowID: Int64, from: Timestamp, to: Timestamp) throws -> [StoredLedgerRow] {
        try database.query(
            """
            SELECT \(Store.ledgerColumns) FROM ledger WHERE wallet_id = ?1 AND created_at >= ?2 AND created_at < ?3
            ORDER BY created_at, id
            """, [.integer(rowID), .integer(from.microseconds), .integer(to.microseconds)], Store.ledgerRow)
    }
}
