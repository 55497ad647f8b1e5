/// The routes of API.md, matched from a path alone.
public enum Route: Equatable, Sendable {
    case wallets
    case wallet(WalletID)
    case deposit(WalletID)
    case withdraw(WalletID)
    case transactions(WalletID)
    case transaction(WalletID, Int64)
    case cancel(WalletID, Int64)
    case health
    case metrics

    /// The methods this route answers, for 405's `Allow`.
    public var allowedMethods: [String] {
        switch self {
        case .wallets, .deposit, .withdraw, .cancel: ["POST"]
        case .wallet, .transactions, .transaction, .health, .metrics: ["GET"]
        }
    }

    /// The route's template, the label of its metrics and log lines (never the raw path,
    /// whose ids would make every series unique).
    public var template: String {
        switch self {
        case .wallets: "/wallets/"
        case .wallet: "/wallets/{uuid}/"
        case .deposit: "/wallets/{uuid}/deposit"
        case .withdraw: "/wallets/{uuid}/withdraw"
        case .transactions: "/wallets/{uuid}/transactions/"
        case .transaction: "/wallets/{uuid}/transactions/{id}/"
        case .cancel: "/wallets/{uuid}/transactions/{id}/cancel"
        case .health: "/healthz"
        case .metrics: "/metrics"
        }
    }

    /// Every template, for metrics that list all routes.
    public static let unmatchedTemplate = "unmatched"

    /// Matches a path with or without its trailing slash. A malformed uuid or transaction
    /// id does not match, so it gets the same 404 as an unknown one.
    public init?(path: String) {
        var trimmed = Substring(path)
        if trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.first == "" else { return nil }
        switch parts.count {
        case 2:
            switch parts[1] {
            case "wallets": self = .wallets
            case "healthz": self = .health
            case "metrics": self = .metrics
            default: return nil
            }
        case 3...6:
            guard parts[1] == "wallets", let wallet = WalletID(parts[2]) else { return nil }
            self.init(wallet: wallet, rest: parts.dropFirst(3))
        default:
            return nil
        }
    }

    private init?(wallet: WalletID, rest: ArraySlice<Substring>) {
        let rest = Array(rest)
        switch rest.count {
        case 0: self = .wallet(wallet)
        case 1 where rest[0] == "deposit": self = .deposit(wallet)
        case 1 where rest[0] == "withdraw": self = .withdraw(wallet)
        case 1 where rest[0] == "transactions": self = .transactions(wallet)
        case 2 where rest[0] == "transactions":
            guard let id = Route.transactionID(rest[1]) else { return nil }
            self = .transaction(wallet, id)
        case 3 where rest[0] == "transactions" && rest[2] == "cancel":
            guard let id = Route.transactionID(rest[1]) else { return nil }
            self = .cancel(wallet, id)
        default: return nil
        }
    }

    /// A transaction id is a positive decimal integer without sign or leading zeros.
    static func transactionID(_ text: Substring) -> Int64? {
        guard let first = text.utf8.first, first != UInt8(ascii: "0"),
              text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int64(text)
    }
}
