import WalletJSON

/// One call to the bank for a withdrawal: an *attempt* of its *payout*.
public struct Payout: Sendable, Equatable {
    /// The withdrawal's transaction id.
    public var withdrawalID: Int64
    public var wallet: WalletID
    public var amount: Amount
    /// The withdrawal's bank key, sent as `Idempotency-Key` on every attempt so that the
    /// bank pays it at most once. Random and stored with the withdrawal when it is created
    /// (`BankKey`), so a database restored from a backup never reuses a key the bank has seen.
    public var bankKey: String
    /// Attempts made so far, this one included.
    public var attempt: Int64
    /// Whether an earlier attempt may have been paid without our knowing.
    public var bankMayHavePaid: Bool
    /// Until when this attempt's processor holds the withdrawal, in the database's time. An
    /// answer recorded later could race another processor's attempt, so it is dropped
    /// instead.
    public var leaseUntil: Timestamp
    /// The same lease's end on the claiming processor's monotonic clock
    /// (`MonotonicInstant.deadline`), set by the processor right after its claim: what it
    /// compares with before it calls the bank or keeps an answer, since its own wall clock
    /// may be ahead of or behind the database's. nil until then, and an attempt without it
    /// is never sent.
    public var leaseDeadline: MonotonicInstant?
    /// The client's reference for the withdrawal, if it gave one.
    public var reference: String?

    public init(
        withdrawalID: Int64, wallet: WalletID, amount: Amount, bankKey: String, attempt: Int64, bankMayHavePaid: Bool,
        leaseUntil: Timestamp, reference: String? = nil, leaseDeadline: MonotonicInstant? = nil
    ) {
        self.withdrawalID = withdrawalID
        self.wallet = wallet
        self.amount = amount
        self.bankKey = bankKey
        self.attempt = attempt
        self.bankMayHavePaid = bankMayHavePaid
        self.leaseUntil = leaseUntil
        self.leaseDeadline = leaseDeadline
        self.reference = reference
    }

    /// The JSON body of the bank call. `reference` is the client's own reference when it
    /// gave one (what the bank shows on its statement, for the client's reconciliation), else
    /// `withdrawal-<id>` as before. It need not be unique: the bank tells payouts apart by
    /// the `Idempotency-Key` (the withdrawal's random bank key), never by the reference.
    public var requestBody: String {
        var object = JSONObject()
        object.add("reference", reference ?? "withdrawal-\(withdrawalID)")
        object.add("wallet", wallet.text)
        object.add("amount", amount.minorUnits)
        return object.result
    }
}

/// The bank key of a new withdrawal: `wd_` and 128 random bits in hex, from the system's
/// cryptographic generator (the kernel's, on Linux). Unique without coordination, and
/// meaningless outside this service.
public enum BankKey {
    public static let prefix = "wd_"

    public static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return prefix + hex(high) + hex(low)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// What happened on the wire during one attempt, before any interpretation.
public enum BankTransport: Sendable, Equatable {
    /// The bank answered with this status and body.
    case answered(status: Int, body: [UInt8])
    /// The answer to libcurl's resend of the request on a new connection, after a reused
    /// connection closed without a byte of answer: the first request may have reached the
    /// bank, so only the bank's own word about the key says anything.
    case answeredAfterResend(status: Int, body: [UInt8])
    /// No connection was ever established for the request, so no byte of it left: refused,
    /// unresolvable, or a timeout while connecting, on the first connection and on any
    /// connection opened to resend it.
    case notSent(String)
    /// The request may have reached the bank but no complete answer came back: a timeout
    /// after a connection was made, a reset connection, or a resend that failed after the
    /// first connection carried the request.
    case noAnswer(String)
}

/// What one attempt means for the money. The bank's own word is only its two bodies: the
/// success body with HTTP 200, and the failed body with any status. Everything else says
/// something about the path to the bank, not about the key.
public enum PayoutOutcome: Sendable, Equatable {
    /// The bank paid: HTTP 200 with exactly `{"data": "success", "status": 200}`.
    case paid
    /// The bank said it did not pay: exactly `{"data": "failed", "status": 503}`, whatever
    /// the HTTP status. The bank serializes calls with one key, so this is final for the key
    /// at that moment.
    case declined(String)
    /// A bare 4xx other than 409, 425 and 429 (a wrong path, a proxy, a refused credential):
    /// this request was not paid, but it says nothing about an earlier one.
    case refused(String)
    /// No byte of the request left: not paid, but again nothing about an earlier attempt.
    case unreachable(String)
    /// The bank may or may not have paid.
    case unknown(String)

    /// The outcome without its detail: the vocabulary of the payout rules table.
    public enum Kind: String, Sendable, CaseIterable {
        case paid, declined, refused, unreachable, unknown
    }

    public init(_ transport: BankTransport) {
        switch transport {
        case .notSent(let detail):
            self = .unreachable(detail)
        case .noAnswer(let detail):
            self = .unknown(detail)
        case .answeredAfterResend(let status, let body):
            let outcome = PayoutOutcome(.answered(status: status, body: body))
            self = outcome.isBanksWord ? outcome : .unknown("HTTP \(status) to a resent request, without the bank's word")
        case .answered(let status, let body):
            switch PayoutOutcome.bankBody(body) {
            case .success? where status == 200:
                self = .paid
            case .failed?:
                self = .declined("the bank answered failed (HTTP \(status))")
            case .success?:
                // The body says paid, the status does not: neither can be taken alone.
                self = .unknown("the success body with HTTP \(status)")
            case nil:
                if (400...499).contains(status), ![409, 425, 429].contains(status) {
                    self = .refused("HTTP \(status) without a bank answer")
                } else {
                    self = .unknown("HTTP \(status) without a definite answer")
                }
            }
        }
    }

    private enum BankBody { case success, failed }

    /// One of the bank's two bodies, to the letter: an object with exactly the members
    /// `data` and `status`. Anything else (another member, a status as a string, a
    /// duplicated member) is not the bank's word.
    private static func bankBody(_ body: [UInt8]) -> BankBody? {
        guard case .object(let members)? = try? JSONParser.parse(body, depthMax: Limits.jsonDepthMax), members.count == 2,
            case .string(let data)? = members["data"], let status = members["status"]?.integer
        else { return nil }
        switch (data, status) {
        case ("success", 200): return .success
        case ("failed", 503): return .failed
        default: return nil
        }
    }

    public var kind: Kind {
        switch self {
        case .paid: .paid
        case .declined: .declined
        case .refused: .refused
        case .unreachable: .unreachable
        case .unknown: .unknown
        }
    }

    public var name: String { kind.rawValue }

    public var detail: String {
        switch self {
        case .paid: "the bank paid"
        case .declined(let detail), .refused(let detail), .unreachable(let detail), .unknown(let detail): detail
        }
    }

    /// The bank itself said paid or not paid: the only outcomes that settle a withdrawal
    /// once an earlier attempt may have been paid.
    public var isBanksWord: Bool {
        switch self {
        case .paid, .declined: true
        case .refused, .unreachable, .unknown: false
        }
    }
}
