/// One call to the bank for a withdrawal: an *attempt* of its *payout*.
public struct Payout: Sendable, Equatable {
    /// The withdrawal's transaction id.
    public var withdrawalID: Int64
    public var wallet: WalletID
    public var amount: Amount
    /// Attempts made so far, this one included.
    public var attempt: Int64
    /// Whether an earlier attempt may have been paid without our knowing.
    public var bankMayHavePaid: Bool

    /// The same for every attempt of one withdrawal, so the bank pays it at most once.
    /// The wallet's random uuid makes it unique across databases, not only within one.
    public var idempotencyKey: String { "\(wallet.text):\(withdrawalID)" }

    /// The JSON body of API.md's bank call.
    public var requestBody: String {
        var object = JSONObject()
        object.add("reference", "withdrawal-\(withdrawalID)")
        object.add("wallet", wallet.text)
        object.add("amount", amount.minorUnits)
        return object.result
    }
}

/// What happened on the wire during one attempt, before any interpretation.
public enum BankTransport: Sendable, Equatable {
    /// The bank answered with this status and body.
    case answered(status: Int, body: [UInt8])
    /// No connection could be made, so nothing was sent (refused, unresolvable, or a
    /// timeout before the request went out).
    case notSent(String)
    /// The request may have reached the bank but no complete answer came back (a timeout
    /// after sending, a reset connection).
    case noAnswer(String)
}

/// What one attempt means for the money (API.md, "Withdrawals").
public enum PayoutOutcome: Sendable, Equatable {
    /// The bank paid.
    case paid
    /// The bank said it did not pay: the failed body, or a 4xx other than 409, 425, 429.
    case rejected(String)
    /// Nothing reached the bank.
    case unreachable(String)
    /// The bank may or may not have paid.
    case unknown(String)

    public init(_ transport: BankTransport) {
        switch transport {
        case .notSent(let detail):
            self = .unreachable(detail)
        case .noAnswer(let detail):
            self = .unknown(detail)
        case .answered(let status, let body):
            let answer = try? JSONParser.parse(body)
            if case .object(let members)? = answer, case .string(let data)? = members["data"] {
                if data == "success", status == 200, members["status"]?.integer == 200 {
                    self = .paid
                    return
                }
                if data == "failed" {
                    self = .rejected("the bank answered failed (HTTP \(status))")
                    return
                }
            }
            if (400...499).contains(status), ![409, 425, 429].contains(status) {
                self = .rejected("the bank refused the request with HTTP \(status)")
            } else {
                self = .unknown("HTTP \(status) without a definite answer")
            }
        }
    }

    public var name: String {
        switch self {
        case .paid: "paid"
        case .rejected: "rejected"
        case .unreachable: "unreachable"
        case .unknown: "unknown"
        }
    }

    public var detail: String {
        switch self {
        case .paid: "the bank paid"
        case .rejected(let detail), .unreachable(let detail), .unknown(let detail): detail
        }
    }
}
