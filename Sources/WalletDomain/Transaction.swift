/// What a transaction does to a wallet.
public enum TransactionType: String, Sendable, CaseIterable {
    case deposit = "DEPOSIT"
    case withdrawal = "WITHDRAWAL"
}

/// Where a transaction is in its life. Deposits are born `COMPLETED`; withdrawals move
/// through the state machine of `transitions`.
public enum TransactionStatus: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case processing = "PROCESSING"
    case completed = "COMPLETED"
    case failed = "FAILED"
    case canceled = "CANCELED"

    /// Every change of a withdrawal's status the service makes, and why. Nothing else ever
    /// changes a status: the store checks each update against this table, and a final
    /// status (one with no way out) never changes again.
    public static let transitions: [(from: TransactionStatus, to: TransactionStatus, why: String)] = [
        (.pending, .canceled, "the client canceled it before it was due"),
        (.pending, .failed, "due, and the balance was below the amount: insufficient_funds"),
        (.pending, .processing, "due, and the amount was debited and held for the bank"),
        (.processing, .processing, "an attempt not paid or unknown: retried or rechecked later, funds held"),
        (.processing, .completed, "the bank paid"),
        (.processing, .failed, "the last attempt was not paid: refunded"),
    ]

    /// Whether the table allows going from `self` to `next`.
    public func canBecome(_ next: TransactionStatus) -> Bool {
        TransactionStatus.transitions.contains { $0.from == self && $0.to == next }
    }

    /// No transition leaves a final status.
    public var isFinal: Bool {
        !TransactionStatus.transitions.contains { $0.from == self }
    }
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
    /// The API key that created the wallet (or was given it by the operator): the only
    /// client that can see it.
    public var owner: APIKeyID

    public init(rowID: Int64, id: WalletID, balance: Money, held: Money, createdAt: Timestamp, updatedAt: Timestamp, owner: APIKeyID) {
        self.rowID = rowID
        self.id = id
        self.balance = balance
        self.held = held
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.owner = owner
    }
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
    /// The client's own id for the operation (`Reference`), or nil.
    public var reference: String?

    public init(
        id: Int64, wallet: WalletID, type: TransactionType, amount: Amount, status: TransactionStatus, scheduledFor: Timestamp? = nil,
        executedAt: Timestamp? = nil, createdAt: Timestamp, attempts: Int64, failureReason: FailureReason? = nil, idempotencyKey: String? = nil,
        reference: String? = nil
    ) {
        self.id = id
        self.wallet = wallet
        self.type = type
        self.amount = amount
        self.status = status
        self.scheduledFor = scheduledFor
        self.executedAt = executedAt
        self.createdAt = createdAt
        self.attempts = attempts
        self.failureReason = failureReason
        self.idempotencyKey = idempotencyKey
        self.reference = reference
    }
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

    public init(wallet: WalletID, transactionID: Int64, kind: Kind, delta: Int64, balanceAfter: Money) {
        self.wallet = wallet
        self.transactionID = transactionID
        self.kind = kind
        self.delta = delta
        self.balanceAfter = balanceAfter
    }
}

/// The ledger rows a transaction has in each of its states, in order: what the auditor
/// checks every transaction against. Each row moves the transaction's amount.
public enum LedgerShape {
    /// The kinds of the rows a transaction of `type` in `status` has, or nil when no
    /// transaction can be in that state.
    public static func expected(type: TransactionType, status: TransactionStatus, failureReason: FailureReason?) -> [LedgerEntry.Kind]? {
        switch (type, status) {
        case (.deposit, .completed): [.deposit]
        case (.deposit, _): nil
        // Not yet due, or canceled before it was: the balance was never touched.
        case (.withdrawal, .pending), (.withdrawal, .canceled): []
        // Debited when it became PROCESSING; paid or still with the bank.
        case (.withdrawal, .processing), (.withdrawal, .completed): [.debit]
        // Failed when due for want of funds (never debited), or refunded after the bank.
        case (.withdrawal, .failed): failureReason == .insufficientFunds ? [] : [.debit, .refund]
        }
    }
}

/// What a client may filter the transaction list by.
public struct TransactionFilter: Sendable, Equatable {
    public var status: TransactionStatus?
    public var type: TransactionType?
    /// Only transactions carrying exactly this client reference.
    public var reference: String?

    public init(status: TransactionStatus? = nil, type: TransactionType? = nil, reference: String? = nil) {
        self.status = status
        self.type = type
        self.reference = reference
    }
}

/// How many transactions of one type are in one status, and their total amount.
public struct TransactionGroup: Sendable, Equatable {
    public var type: TransactionType
    public var status: TransactionStatus
    public var count: Int64
    /// Exact: totals may pass `Int64.max` on a large ledger.
    public var amount: Int128

    public init(type: TransactionType, status: TransactionStatus, count: Int64, amount: Int128) {
        self.type = type
        self.status = status
        self.count = count
        self.amount = amount
    }
}

/// One page of a wallet's transactions, newest first.
public struct TransactionPage: Sendable, Equatable {
    public var transactions: [Transaction]
    /// The id to continue below, or nil on the last page.
    public var nextCursor: Int64?

    public init(transactions: [Transaction], nextCursor: Int64? = nil) {
        self.transactions = transactions
        self.nextCursor = nextCursor
    }
}
