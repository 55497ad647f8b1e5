import WalletDomain
import WalletJSON
import WalletPlatform

/// A `ledger` row as stored, every column, for the auditor. Kinds stay text: an audit
/// reports what is there, even a value no code would write.
public struct StoredLedgerRow: Sendable, Equatable {
    public var id: Int64
    public var walletRowID: Int64
    public var transactionID: Int64
    public var kind: String
    public var delta: Int64
    public var balanceAfter: Int64
    public var createdAt: Int64
    public var hash: String
    /// 1 when the row chains from its wallet's previous row, 0 when from the ledger's
    /// previous row (rows written before schema version 7).
    public var walletChain: Int64
}

/// A wallet's stored balance and held funds, with the exact total of its `PROCESSING`
/// withdrawals.
public struct StoredWalletTotals: Sendable, Equatable {
    public var rowID: Int64
    public var uuid: String
    public var balance: Int64
    public var held: Int128
    public var processing: Int128
}

/// A transaction's columns that decide its ledger rows, as stored.
public struct StoredTransactionShape: Sendable, Equatable {
    public var id: Int64
    public var walletRowID: Int64
    public var type: String
    public var status: String
    public var amount: Int64
    public var failureReason: String?
}

/// A withdrawal as the bank should know it, for reconciliation.
public struct StoredPayout: Sendable, Equatable {
    public var withdrawalID: Int64
    public var wallet: String
    public var amount: Int64
    public var status: String
    public var bankKey: String
}

extension Store {
    /// Every ledger row in id order.
    public func ledgerRows() throws -> [StoredLedgerRow] {
        try database.query("SELECT \(Store.ledgerColumns) FROM ledger ORDER BY id", [], Store.ledgerRow)
    }

    /// Every wallet with the exact total of its `PROCESSING` withdrawals, in id order.
    public func walletTotals() throws -> [StoredWalletTotals] {
        try database.query(
            """
            SELECT w.id, w.uuid, w.balance, w.held, \(Store.exactSum("t.amount"))
            FROM wallets w LEFT JOIN transactions t ON t.wallet_id = w.id AND t.status = ?1
            GROUP BY w.id ORDER BY w.id
            """, [SQLValue(TransactionStatus.processing)]
        ) { row in
            StoredWalletTotals(
                rowID: row.integer("id"), uuid: row.text("uuid"), balance: row.integer("balance"),
                held: Int128(row.integer("held")), processing: Store.exactSum(row, from: 4))
        }
    }

    /// Every transaction's type, status, amount and failure reason, in id order.
    public func transactionShapes() throws -> [StoredTransactionShape] {
        try database.query("SELECT id, wallet_id, type, status, amount, failure_reason FROM transactions ORDER BY id") { row in
            StoredTransactionShape(
                id: row.integer("id"), walletRowID: row.integer("wallet_id"), type: row.text("type"),
                status: row.text("status"), amount: row.integer("amount"),
                failureReason: row.optionalText("failure_reason"))
        }
    }

    /// Every withdrawal with its bank key, for `walletctl reconcile`.
    public func payouts() throws -> [StoredPayout] {
        try database.query(
            """
            SELECT t.id, w.uuid, t.amount, t.status, t.bank_key FROM transactions t JOIN wallets w ON w.id = t.wallet_id
            WHERE t.type = ?1 ORDER BY t.id
            """, [SQLValue(TransactionType.withdrawal)]
        ) { row in
            StoredPayout(
                withdrawalID: row.integer("id"), wallet: row.text("uuid"), amount: row.integer("amount"),
                status: row.text("status"), bankKey: row.text("bank_key"))
        }
    }
}
