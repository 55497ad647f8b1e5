import WalletJSON

/// What an event says happened (README, "Events and webhooks"). Each change of a wallet or
/// a transaction writes exactly one event, in the transaction of the change.
public enum EventType: String, Sendable, CaseIterable {
    case walletCreated = "wallet.created"
    case depositCompleted = "deposit.completed"
    case withdrawalScheduled = "withdrawal.scheduled"
    /// Debited and held; the bank is being called.
    case withdrawalProcessing = "withdrawal.processing"
    /// An attempt was not paid, or its outcome is unknown, and retries are left.
    case withdrawalRetrying = "withdrawal.retrying"
    /// The retries are spent and the last answer was unknown: held until the bank's word
    /// (written again after each recheck that stays unknown).
    case withdrawalOutcomeUnknown = "withdrawal.outcome_unknown"
    case withdrawalCompleted = "withdrawal.completed"
    /// Failed: for want of funds when due (nothing was debited, `refund` null), or after
    /// the bank's last "not paid" (refunded).
    case withdrawalFailed = "withdrawal.failed"
    case withdrawalCanceled = "withdrawal.canceled"
}

/// One event as the feed and the webhooks show it.
public struct Event: Sendable, Equatable {
    public var id: Int64
    public var type: EventType
    public var createdAt: Timestamp
    public var wallet: WalletID
    /// The `data` member, serialized when the event was written.
    public var data: String

    public init(id: Int64, type: EventType, createdAt: Timestamp, wallet: WalletID, data: String) {
        self.id = id
        self.type = type
        self.createdAt = createdAt
        self.wallet = wallet
        self.data = data
    }

    /// `{"id", "type", "created_at", "wallet", "data"}`: the feed's element and the body of
    /// a webhook delivery, byte for byte.
    public var json: String {
        var object = JSONObject()
        object.add("id", id)
        object.add("type", type.rawValue)
        object.add("created_at", createdAt.rfc3339)
        object.add("wallet", wallet.text)
        object.add("data", json: data)
        return object.result
    }
}

/// What a webhook endpoint subscribes to: an exact type (`deposit.completed`), every type
/// of a prefix (`withdrawal.*`), or everything (`*`). A name that matches no type is refused.
public struct EventPattern: Sendable, Equatable, Hashable {
    public let text: String

    public init?(_ text: String) {
        if text == "*" || EventType(rawValue: text) != nil {
            self.text = text
            return
        }
        guard text.hasSuffix(".*") else { return nil }
        let prefix = text.dropLast(1)
        guard EventType.allCases.contains(where: { $0.rawValue.hasPrefix(prefix) }) else { return nil }
        self.text = text
    }

    public func matches(_ type: EventType) -> Bool {
        if text == "*" { return true }
        if text.hasSuffix(".*") { return type.rawValue.hasPrefix(text.dropLast(1)) }
        return type.rawValue == text
    }

    public static func anyMatches(_ patterns: [EventPattern], _ type: EventType) -> Bool {
        patterns.contains { $0.matches(type) }
    }
}

/// The client's own id for a deposit or withdrawal: 1 to 128 printable ASCII characters
/// (0x20 to 0x7E). Sent to the bank as the payout's `reference`.
public enum Reference {
    public static let bytesMax = 128

    public static func isValid(_ text: String) -> Bool {
        let bytes = text.utf8
        return (1...bytesMax).contains(bytes.count) && bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }
}

/// The rules for a webhook endpoint's URL (README, "Events and webhooks"): at most
/// `bytesMax` bytes, `https://` with a host and no user information; `http://`, loopback,
/// link-local and private literal addresses and `localhost` only when development allows
/// them (`WALLET_WEBHOOK_ALLOW_HTTP=1`). A name that resolves to a private address is not
/// caught here (the notifier does not resolve names itself; README, "Limits").
public enum WebhookURL {
    public static let bytesMax = 2048

    /// nil when acceptable, else why not.
    public static func problem(_ url: String, allowHTTP: Bool) -> String? {
        guard url.utf8.count <= bytesMax else { return "url must be at most \(bytesMax) bytes" }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return "url must be printable ASCII without spaces" }
        let lowered = url.lowercased()
        let rest: Substring
        if lowered.hasPrefix("https://") {
            rest = url.dropFirst(8)
        } else if lowered.hasPrefix("http://") {
            guard allowHTTP else { return "url must be https://" }
            rest = url.dropFirst(7)
        } else {
            return "url must be an https:// URL"
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.contains("@") else { return "url must not carry user information" }
        var host: Substring
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return "url has a malformed IPv6 address" }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            guard after.isEmpty || isPort(after) else { return "url has a malformed port" }
        } else {
            host = authority.prefix { $0 != ":" }
            let after = authority.dropFirst(host.count)
            guard after.isEmpty || isPort(after) else { return "url has a malformed port" }
        }
        guard !host.isEmpty else { return "url must have a host" }
        if host.hasSuffix(".") { host = host.dropLast() }
        if !allowHTTP && isPrivate(host.lowercased()) {
            return "url must not point at a loopback, link-local or private address"
        }
        return nil
    }

    private static func isPort(_ text: Substring) -> Bool {
        guard text.first == ":" else { return false }
        let digits = text.dropFirst()
        return !digits.isEmpty && digits.count <= 5 && digits.allSatisfy { $0.isASCII && $0.isNumber } && Int(digits)! <= 65535
    }

    /// `localhost` (and its subdomains), and literal addresses in 127/8, 10/8, 172.16/12,
    /// 192.168/16, 169.254/16, 0/8, 100.64/10 (carrier-grade NAT), 192.0.0/24, 198.18/15
    /// (benchmarking), 224/4 and above (multicast, reserved, broadcast), ::1, ::, fc00::/7,
    /// fe80::/10, ff00::/8, and IPv4 addresses inside IPv6 ones (mapped `::ffff:a.b.c.d`,
    /// compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) that are any of those.
    public static func isPrivate(_ host: String) -> Bool {
        if host == "localhost" || host.hasSuffix(".localhost") { return true }
        if let v4 = ipv4(host) { return isPrivateV4(v4) }
        if host.contains(":"), let v6 = ipv6(host) {
            if v6.allSatisfy({ $0 == 0 }) { return true }
            if v6[0..<15].allSatisfy({ $0 == 0 }) && v6[15] == 1 { return true }
            if v6[0] & 0xFE == 0xFC { return true }
            if v6[0] == 0xFE && v6[1] & 0xC0 == 0x80 { return true }
            if v6[0] == 0xFF { return true }
            let embedsV4 =
                (v6[0..<10].allSatisfy({ $0 == 0 }) && v6[10] == 0xFF && v6[11] == 0xFF)
                || v6[0..<12].allSatisfy({ $0 == 0 })
                || (v6[0] == 0x00 && v6[1] == 0x64 && v6[2] == 0xFF && v6[3] == 0x9B && v6[4..<12].allSatisfy({ $0 == 0 }))
            if embedsV4 { return isPrivateV4(Array(v6[12..<16])) }
            return false
        }
        // A name that is not a literal address: anything with only digits and dots that did
        // not parse (such as `2130706433` or `0x7f.1`) is refused too, since resolvers read
        // those as addresses.
        return host.allSatisfy { $0.isNumber || $0 == "." || $0 == "x" || ("a"..."f").contains($0) } && host.first?.isNumber == true
    }

    private static func isPrivateV4(_ b: [UInt8]) -> Bool {
        b[0] == 127 || b[0] == 10 || b[0] == 0 || (b[0] == 172 && b[1] & 0xF0 == 16) || (b[0] == 192 && b[1] == 168)
            || (b[0] == 169 && b[1] == 254) || (b[0] == 100 && b[1] & 0xC0 == 64) || (b[0] == 192 && b[1] == 0 && b[2] == 0)
            || (b[0] == 198 && b[1] & 0xFE == 18) || b[0] >= 224
    }

    static func ipv4(_ host: String) -> [UInt8]? {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            // No leading zeros: libc and libcurl read `012` as octal (10), not as 12.
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }), part == "0" || part.first != "0",
                let value = UInt8(part)
            else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    static func ipv6(_ host: String) -> [UInt8]? {
        var text = Substring(host)
        if let percent = text.firstIndex(of: "%") { text = text[..<percent] }
        var tail: [UInt8] = []
        // An embedded IPv4 address at the end.
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = ipv4(String(text[text.index(after: lastColon)...])) else { return nil }
            tail = v4
            text = text[...lastColon]
            if text.hasSuffix(":") && !text.hasSuffix("::") { text = text.dropLast() }
        }
        var halves: [String] = []
        var rest = text
        while let range = rest.firstRange(of: "::") {
            halves.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        halves.append(String(rest))
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt8]? {
            guard !part.isEmpty else { return [] }
            var out: [UInt8] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !group.isEmpty, group.count <= 4, let value = UInt16(group, radix: 16) else { return nil }
                out += [UInt8(value >> 8), UInt8(value & 0xFF)]
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        if halves.count == 2 {
            guard let back = groups(halves[1]) else { return nil }
            let fill = 16 - head.count - back.count - tail.count
            guard fill >= 0 else { return nil }
            return head + [UInt8](repeating: 0, count: fill) + back + tail
        }
        let all = head + tail
        return all.count == 16 ? all : nil
    }
}

/// A page of the event feed: events after the requested id, in id order.
public struct EventPage: Sendable, Equatable {
    public var events: [Event]
    /// The last id of this page when more events matched beyond it; nil when the page holds
    /// every matching event there was (the client is caught up).
    public var nextAfter: Int64?

    public init(events: [Event], nextAfter: Int64?) {
        self.events = events
        self.nextAfter = nextAfter
    }

    public var json: String {
        var object = JSONObject()
        object.add("results", json: "[" + events.map(\.json).joined(separator: ", ") + "]")
        object.add("next_after", nextAfter)
        return object.result
    }
}

/// A webhook endpoint as the API shows it (never with its secret, but at creation).
public struct WebhookEndpoint: Sendable, Equatable {
    public var id: Int64
    public var apiKeyID: Int64
    public var url: String
    public var patterns: [String]
    public var nonce: String
    public var createdAt: Timestamp

    public init(id: Int64, apiKeyID: Int64, url: String, patterns: [String], nonce: String, createdAt: Timestamp) {
        self.id = id
        self.apiKeyID = apiKeyID
        self.url = url
        self.patterns = patterns
        self.nonce = nonce
        self.createdAt = createdAt
    }

    /// `{"id", "url", "events", "created_at"}`, and `secret` after `url`... at creation only.
    public func json(secret: String? = nil) -> String {
        var object = JSONObject()
        object.add("id", id)
        object.add("url", url)
        object.add("events", json: "[" + patterns.map { JSONWriter.quoted($0) }.joined(separator: ", ") + "]")
        if let secret { object.add("secret", secret) }
        object.add("created_at", createdAt.rfc3339)
        return object.result
    }
}

/// Where a webhook delivery stands.
public enum DeliveryState: String, Sendable, CaseIterable {
    /// Waiting for its turn or its next attempt.
    case pending
    /// A 2xx answer came within the time limit.
    case delivered
    /// Given up after the give-up age, or its endpoint was deleted.
    case failed
}

/// One delivery as `walletctl webhooks deliveries` shows it.
public struct DeliveryRecord: Sendable, Equatable {
    public var id: Int64
    public var endpointID: Int64
    public var url: String
    public var eventID: Int64
    public var eventType: EventType
    public var state: DeliveryState
    public var attempts: Int64
    public var nextAttemptAt: Timestamp?
    public var lastStatus: Int64?
    public var lastError: String?
    public var createdAt: Timestamp

    public init(
        id: Int64, endpointID: Int64, url: String, eventID: Int64, eventType: EventType, state: DeliveryState, attempts: Int64,
        nextAttemptAt: Timestamp?, lastStatus: Int64?, lastError: String?, createdAt: Timestamp
    ) {
        self.id = id
        self.endpointID = endpointID
        self.url = url
        self.eventID = eventID
        self.eventType = eventType
        self.state = state
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastStatus = lastStatus
        self.lastError = lastError
        self.createdAt = createdAt
    }

    public var json: String {
        var object = JSONObject()
        object.add("id", id)
        object.add("endpoint", endpointID)
        object.add("url", url)
        object.add("event", eventID)
        object.add("event_type", eventType.rawValue)
        object.add("state", state.rawValue)
        object.add("attempts", attempts)
        object.add("next_attempt_at", nextAttemptAt?.rfc3339)
        object.add("last_status", lastStatus)
        object.add("last_error", lastError)
        object.add("created_at", createdAt.rfc3339)
        return object.result
    }
}

/// A delivery a notifier has claimed: everything it needs to send it.
public struct ClaimedDelivery: Sendable, Equatable {
    public var id: Int64
    public var endpointID: Int64
    public var url: String
    public var endpointNonce: String
    public var eventID: Int64
    /// The event's JSON, the body sent.
    public var body: String
    public var attempts: Int64
    public var createdAt: Timestamp
    public var leaseUntil: Timestamp

    public init(
        id: Int64, endpointID: Int64, url: String, endpointNonce: String, eventID: Int64, body: String, attempts: Int64,
        createdAt: Timestamp, leaseUntil: Timestamp
    ) {
        self.id = id
        self.endpointID = endpointID
        self.url = url
        self.endpointNonce = endpointNonce
        self.eventID = eventID
        self.body = body
        self.attempts = attempts
        self.createdAt = createdAt
        self.leaseUntil = leaseUntil
    }
}

/// What became of one claimed delivery in a pass.
public enum DeliveryResult: Sendable, Equatable {
    /// A 2xx answer in time.
    case delivered(status: Int64)
    /// Tried and not delivered: the HTTP status if an answer came, and what went wrong.
    case notDelivered(status: Int64?, error: String)
    /// Not tried in this pass (an earlier delivery of its endpoint was not delivered, or
    /// the lease would not outlast the call): released for a later pass, nothing counted.
    case notTried
}
