/// What a transaction does to a wallet.
public enum TransactionType: String, Sendable, CaseIterable {
    case deposit = "DEPOSIT"
    case withdrawal = "WITHDRAWAL"
}

/// Where a transaction is in its life. Deposits are born `COMPLETED`; withdrawals move
/// through the state machine of DESIGN.md.
public enum TransactionStatus: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case processing = "PROCESSING"
    case completed = "COMPLETED"
    case failed = "FAILED"
    case canceled = "CANCELED"
}

/// Why a withdrawal failed, or, for `bankOutcomeUnknown`, why it is still held.
public enum FailureReason: String, Sendable, CaseIterable {
    case insufficientFunds = "insufficient_funds"
    case bankRejected = "bank_rejected"
    case bankUnreachable = "bank_unreachable"
    case canceled = "canceled"
    case bankOutcomeUnknown = "bank_outcome_unknown"
}

/// A wallet as clients see it.
public struct Wallet: Sendable, Equatable {
    public var rowID: Int64
    public var id: WalletID
    public var balance: Money
    /// Debited for withdrawals still with the bank; not part of the balance.
    public var held: Money
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
}

/// A deposit or withdrawal as clients see it, mirroring a `transactions` row.
public struct Transaction: Sendable, Equatable {
    public var id: Int64
    public var wallet: WalletID
    public var type: TransactionType
    public var amount: Amount
    public var status: TransactionStatus
    public var scheduledFor: Timestamp?
    public var executedAt: Timestamp?
    public var createdAt: Timestamp
    public var attempts: Int64
    public var failureReason: FailureReason?
    public var idempotencyKey: String?
}

/// A change of balance, mirroring a `ledger` row. `delta` is signed: deposits and refunds
/// are positive, debits negative.
public struct LedgerEntry: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case deposit = "DEPOSIT"
        case debit = "DEBIT"
        case refund = "REFUND"
    }

    public var wallet: WalletID
    public var transactionID: Int64
    public var kind: Kind
    public var delta: Int64
    public var balanceAfter: Money
}
