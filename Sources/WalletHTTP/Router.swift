import WalletDomain
import WalletJSON
import WalletPlatform

/// The routes of the API (openapi.yaml), matched from a path alone.
public enum Route: Equatable, Sendable {
    case wallets
    case wallet(WalletID)
    case balance(WalletID)
    case deposit(WalletID)
    case withdraw(WalletID)
    case transactions(WalletID)
    case transaction(WalletID, Int64)
    case cancel(WalletID, Int64)
    case events
    case webhookEndpoints
    case webhookEndpoint(Int64)
    case health
    case metrics

    /// Every method the API serves on some route (DELETE: a webhook endpoint). nginx
    /// answers any other method itself with 405 (its twin is the method check in
    /// nginx/wallet-locations.conf), and the metrics label any other as `other`.
    public static let apiMethods: Set<String> = ["GET", "HEAD", "POST", "DELETE"]

    /// The methods this route answers, for 405's `Allow`. HEAD goes wherever GET does
    /// (RFC 9110 9.3.2): WalletAPI answers it as the GET without the body.
    /// The routes that answer without an API key: the health check, and the metrics that
    /// nginx serves to loopback clients only.
    public var isOpen: Bool {
        switch self {
        case .health, .metrics: true
        default: false
        }
    }

    public var allowedMethods: [String] {
        switch self {
        case .wallets, .deposit, .withdraw, .cancel: ["POST"]
        case .wallet, .balance, .transactions, .transaction, .events, .health, .metrics: ["GET", "HEAD"]
        case .webhookEndpoints: ["GET", "HEAD", "POST"]
        case .webhookEndpoint: ["DELETE"]
        }
    }

    /// The route's template, the label of its metrics and log lines (never the raw path,
    /// whose ids would make every series unique).
    public var template: String {
        switch self {
        case .wallets: "/wallets/"
        case .wallet: "/wallets/{uuid}/"
        case .balance: "/wallets/{uuid}/balance"
        case .deposit: "/wallets/{uuid}/deposit"
        case .withdraw: "/wallets/{uuid}/withdraw"
        case .transactions: "/wallets/{uuid}/transactions/"
        case .transaction: "/wallets/{uuid}/transactions/{id}/"
        case .cancel: "/wallets/{uuid}/transactions/{id}/cancel"
        case .events: "/events"
        case .webhookEndpoints: "/webhook-endpoints"
        case .webhookEndpoint: "/webhook-endpoints/{id}"
        case .health: "/healthz"
        case .metrics: "/metrics"
        }
    }

    /// Every template, for metrics that list all routes.
    public static let unmatchedTemplate = "unmatched"

    /// Matches a path with or without its trailing slash. A malformed uuid or transaction
    /// id does not match, so it gets the same 404 as an unknown one. Segments are compared
    /// byte for byte: every route is ASCII.
    public init?(path: String) {
        var segments = PathSegments(path)
        guard let first = segments.next() else { return nil }
        guard let second = segments.next() else {
            switch first {
            case _ where first.is("wallets"): self = .wallets
            case _ where first.is("healthz"): self = .health
            case _ where first.is("metrics"): self = .metrics
            case _ where first.is("events"): self = .events
            case _ where first.is("webhook-endpoints"): self = .webhookEndpoints
            default: return nil
            }
            return
        }
        if first.is("webhook-endpoints") {
            guard segments.next() == nil, let id = Route.transactionID(second) else { return nil }
            self = .webhookEndpoint(id)
            return
        }
        guard first.is("wallets"), let wallet = WalletID(second) else { return nil }
        guard let third = segments.next() else {
            self = .wallet(wallet)
            return
        }
        let fourth = segments.next()
        let fifth = fourth == nil ? nil : segments.next()
        guard segments.next() == nil else { return nil }
        switch (fourth, fifth) {
        case (nil, nil) where third.is("deposit"): self = .deposit(wallet)
        case (nil, nil) where third.is("withdraw"): self = .withdraw(wallet)
        case (nil, nil) where third.is("balance"): self = .balance(wallet)
        case (nil, nil) where third.is("transactions"): self = .transactions(wallet)
        case (let id?, nil) where third.is("transactions"):
            guard let id = Route.transactionID(id) else { return nil }
            self = .transaction(wallet, id)
        case (let id?, let action?) where third.is("transactions") && action.is("cancel"):
            guard let id = Route.transactionID(id) else { return nil }
            self = .cancel(wallet, id)
        default: return nil
        }
    }

    /// A transaction id is a positive decimal integer without sign or leading zeros.
    static func transactionID(_ text: Substring) -> Int64? {
        guard let first = text.utf8.first, first != UInt8(ascii: "0"),
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int64(text)
    }
}

/// The `/`-separated segments of an absolute path, after the leading `/` and without one
/// trailing `/`: `/wallets/` gives `wallets`, `/a//b` gives `a`, ``, `b`, and `/` gives one
/// empty segment. A path that does not start with `/` has none.
struct PathSegments {
    private let path: String
    private var position: String.Index?
    private let end: String.Index

    init(_ path: String) {
        let utf8 = path.utf8
        self.path = path
        guard utf8.first == UInt8(ascii: "/") else {
            position = nil
            end = utf8.endIndex
            return
        }
        position = utf8.index(after: utf8.startIndex)
        end = position! < utf8.endIndex && utf8.last == UInt8(ascii: "/") ? utf8.index(before: utf8.endIndex) : utf8.endIndex
    }

    mutating func next() -> Substring? {
        guard let start = position else { return nil }
        let utf8 = path.utf8
        var cursor = start
        while cursor < end, utf8[cursor] != UInt8(ascii: "/") { cursor = utf8.index(after: cursor) }
        position = cursor < end ? utf8.index(after: cursor) : nil
        return path[start..<cursor]
    }
}

extension Substring {
    /// Byte equality with an ASCII literal.
    fileprivate func `is`(_ literal: StaticString) -> Bool {
        let bytes = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        return utf8.elementsEqual(bytes)
    }
}
