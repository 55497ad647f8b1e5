import WalletDomain
import WalletJSON
import WalletPlatform

/// A validated `Idempotency-Key` header.
public struct IdempotencyKey: Sendable {
    public let text: String

    /// nil when the header is absent; throws when it is present but not 1 to 255
    /// printable ASCII characters.
    public init?(header: String?) throws(APIError) {
        guard let header else { return nil }
        let bytes = header.utf8
        guard (1...Limits.idempotencyKeyBytesMax).contains(bytes.count),
            bytes.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E })
        else { throw APIError.invalidIdempotencyKey }
        text = header
    }

    /// What makes two requests "the same" for a key: method, route and exact body bytes.
    public static func fingerprint(of request: Request) -> String {
        var input = Array("\(request.method) \(Route(path: request.path)?.canonicalPath ?? request.path)\n".utf8)
        input.append(contentsOf: request.body)
        return SHA256.hex(input)
    }
}

extension Route {
    /// The path in one spelling (trailing slash and uuid case folded), so that a retry
    /// spelled differently is still recognised as the same request.
    public var canonicalPath: String {
        switch self {
        case .wallets: "/wallets"
        case .wallet(let id): "/wallets/\(id)"
        case .balance(let id): "/wallets/\(id)/balance"
        case .deposit(let id): "/wallets/\(id)/deposit"
        case .withdraw(let id): "/wallets/\(id)/withdraw"
        case .transactions(let id): "/wallets/\(id)/transactions"
        case .transaction(let id, let number): "/wallets/\(id)/transactions/\(number)"
        case .cancel(let id, let number): "/wallets/\(id)/transactions/\(number)/cancel"
        case .events: "/events"
        case .webhookEndpoints: "/webhook-endpoints"
        case .webhookEndpoint(let id): "/webhook-endpoints/\(id)"
        case .health: "/healthz"
        case .metrics: "/metrics"
        }
    }
}

/// A JSON object body, checked for its content type and syntax.
public struct RequestBody {
    public let members: [String: JSONValue]

    public init(_ request: Request) throws(APIError) {
        if !request.body.isEmpty || request.contentType != nil {
            guard let type = request.contentType, RequestBody.isJSON(type) else { throw APIError.unsupportedMediaType }
        }
        guard request.body.count <= Limits.requestBodyBytesMax else { throw APIError.payloadTooLarge }
        guard !request.body.isEmpty else { throw APIError.invalidJSON("the body is empty") }
        let value: JSONValue
        do {
            value = try JSONParser.parse(request.body, depthMax: Limits.jsonDepthMax)
        } catch {
            throw APIError.invalidJSON(error.message)
        }
        guard case .object(let members) = value else { throw APIError.invalidJSON("it is not an object") }
        self.members = members
    }

    /// `application/json`, optionally with parameters such as `charset=utf-8`, in any case.
    public static func isJSON(_ contentType: String) -> Bool {
        let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return mediaType.trimmingSpaces.asciiUppercased == "APPLICATION/JSON"
    }

    /// The `amount` member: a JSON integer in `1...Limits.amountMinorUnitsMax`, nothing else.
    public func amount() throws(APIError) -> Amount {
        guard let value = members["amount"]?.integer, let amount = Amount(minorUnits: value) else {
            throw APIError.invalidAmount
        }
        return amount
    }

    /// The optional `reference` member: absent or null for none, else 1 to 128 printable
    /// ASCII characters.
    public func reference() throws(APIError) -> String? {
        switch members["reference"] {
        case nil, .null?:
            return nil
        case .string(let text)? where Reference.isValid(text):
            return text
        default:
            throw APIError.invalidReference
        }
    }

    /// The optional `scheduled_for` member: RFC 3339 with an explicit offset. Absent or null
    /// means "at once". Whether it lies in the future is checked later, against the clock.
    public func scheduledFor() throws(APIError) -> Timestamp? {
        switch members["scheduled_for"] {
        case nil, .null?:
            return nil
        case .string(let text)?:
            guard let timestamp = Timestamp(rfc3339: text) else {
                throw APIError.invalidScheduledFor("scheduled_for must be an RFC 3339 time with an offset, such as 2026-02-15T15:00:00Z")
            }
            return timestamp
        default:
            throw APIError.invalidScheduledFor("scheduled_for must be a string")
        }
    }
}

/// The balance route's query: `at`, an RFC 3339 time with an offset; absent means now.
public struct BalanceQuery {
    public var at: Timestamp?

    public init(_ items: [String: String]) throws(APIError) {
        guard let text = items["at"] else { return }
        guard let at = Timestamp(rfc3339: text) else { throw APIError.invalidAt }
        self.at = at
    }
}

/// The transaction list's query: filters, page size and cursor.
public struct TransactionQuery {
    public var filter = TransactionFilter()
    public var limit = Limits.pageSizeDefault
    public var cursor: Int64?

    public init(_ items: [String: String]) throws(APIError) {
        if let status = items["status"] {
            guard let parsed = TransactionStatus(rawValue: status.asciiUppercased) else {
                throw APIError.invalidQuery(
                    field: "status", "status must be one of \(TransactionStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.status = parsed
        }
        if let type = items["type"] {
            guard let parsed = TransactionType(rawValue: type.asciiUppercased) else {
                throw APIError.invalidQuery(field: "type", "type must be DEPOSIT or WITHDRAWAL")
            }
            filter.type = parsed
        }
        if let limit = items["limit"] {
            guard let parsed = Int(limit), (1...Limits.pageSizeMax).contains(parsed), limit.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw APIError.invalidQuery(field: "limit", "limit must be an integer from 1 to \(Limits.pageSizeMax)")
            }
            self.limit = parsed
        }
        if let reference = items["reference"] {
            guard Reference.isValid(reference) else {
                throw APIError.invalidQuery(field: "reference", "reference must be 1 to \(Reference.bytesMax) printable ASCII characters")
            }
            filter.reference = reference
        }
        if let cursor = items["cursor"] {
            guard let parsed = Route.transactionID(Substring(cursor)) else {
                throw APIError.invalidQuery(field: "cursor", "cursor must be a next_cursor value from an earlier page")
            }
            self.cursor = parsed
        }
    }
}

/// The event feed's query: `after`, `limit`, `type`, `wallet`.
public struct EventQuery {
    public var after: Int64 = 0
    public var limit = Limits.pageSizeDefault
    public var type: EventType?
    public var wallet: WalletID?

    public init(_ items: [String: String]) throws(APIError) {
        if let after = items["after"] {
            guard after == "0" || Route.transactionID(Substring(after)) != nil, let parsed = Int64(after) else {
                throw APIError.invalidQuery(field: "after", "after must be an event id (a whole number, 0 for the start)")
            }
            self.after = parsed
        }
        if let limit = items["limit"] {
            guard let parsed = Int(limit), (1...Limits.pageSizeMax).contains(parsed), limit.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw APIError.invalidQuery(field: "limit", "limit must be an integer from 1 to \(Limits.pageSizeMax)")
            }
            self.limit = parsed
        }
        if let type = items["type"] {
            guard let parsed = EventType(rawValue: type) else {
                throw APIError.invalidQuery(
                    field: "type", "type must be one of \(EventType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.type = parsed
        }
        if let wallet = items["wallet"] {
            guard let parsed = WalletID(wallet) else { throw APIError.invalidQuery(field: "wallet", "wallet must be a wallet's uuid") }
            self.wallet = parsed
        }
    }
}

/// The body of `POST /webhook-endpoints`: `url` and `events`.
public struct WebhookEndpointBody: Sendable {
    public var url: String
    public var patterns: [String]

    /// The most patterns one endpoint may list.
    public static let patternsMax = 32

    public init(_ body: RequestBody, allowHTTP: Bool) throws(APIError) {
        guard case .string(let url)? = body.members["url"] else { throw APIError.invalidURL("url must be a string") }
        if let problem = WebhookURL.problem(url, allowHTTP: allowHTTP) { throw APIError.invalidURL(problem) }
        guard case .array(let values)? = body.members["events"], !values.isEmpty, values.count <= WebhookEndpointBody.patternsMax else {
            throw APIError.invalidEvents("events must be a non-empty array of at most \(WebhookEndpointBody.patternsMax) event types or patterns")
        }
        var patterns: [String] = []
        for value in values {
            guard case .string(let text) = value, EventPattern(text) != nil else {
                throw APIError.invalidEvents(
                    "each of events must be an event type (\(EventType.allCases.map(\.rawValue).joined(separator: ", "))), "
                        + "a prefix such as withdrawal.*, or *")
            }
            if !patterns.contains(text) { patterns.append(text) }
        }
        self.url = url
        self.patterns = patterns
    }
}

extension StringProtocol {
    /// Upper case for ASCII letters only: `ı` must not pass for `I` in a filter value.
    public var asciiUppercased: String {
        String(decoding: utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
    }

    public var trimmingSpaces: Substring {
        let text = Substring(self)
        guard let start = text.firstIndex(where: { $0 != " " && $0 != "\t" }) else { return "" }
        guard let end = text.lastIndex(where: { $0 != " " && $0 != "\t" }) else { return "" }
        return text[start...end]
    }
}

extension Request {
    /// The API key in `Authorization: Bearer <key>` (RFC 6750: the scheme is
    /// case-insensitive, one or more spaces follow it), or why there is none. The key's
    /// shape is checked here, before any database lookup.
    public func bearerKey() -> Result<APIKeySecret, AuthenticationFailure> {
        guard let header = authorization, !header.isEmpty else { return .failure(.missing) }
        let scheme = "bearer"
        let bytes = Array(header.utf8)
        guard bytes.count > scheme.utf8.count,
            zip(bytes, scheme.utf8).allSatisfy({ $0 | 0x20 == $1 }),
            bytes[scheme.utf8.count] == UInt8(ascii: " ")
        else { return .failure(.malformed) }
        let token = bytes[scheme.utf8.count...].drop { $0 == UInt8(ascii: " ") }
        guard let key = APIKeySecret(String(decoding: token, as: UTF8.self)) else { return .failure(.malformed) }
        return .success(key)
    }
}
