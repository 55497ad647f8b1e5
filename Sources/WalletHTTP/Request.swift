import WalletDomain
import WalletJSON
import WalletPlatform

/// An HTTP request as the core sees it: plain values copied out of FastCGI.
public struct Request: Sendable {
    public var method: String
    /// The path without the query string, as nginx decoded and normalised it.
    public var path: String
    public var query: String
    public var contentType: String?
    /// The `Idempotency-Key` header: nil when absent, possibly empty when sent empty.
    public var idempotencyKey: String?
    public var body: [UInt8]
    /// nginx's `$request_id`, which ties the access log, our log lines and the client together.
    public var requestID: String

    public init(
        method: String, path: String, query: String = "", contentType: String? = nil,
        idempotencyKey: String? = nil, body: [UInt8] = [], requestID: String = "-"
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.idempotencyKey = idempotencyKey
        self.body = body
        self.requestID = requestID
    }

    /// The query string's parameters, percent-decoded. A name given twice keeps its first value.
    public var queryItems: [String: String] {
        var items: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Request.percentDecoded(parts[0])
            let value = parts.count > 1 ? Request.percentDecoded(parts[1]) : ""
            if items[name] == nil { items[name] = value }
        }
        return items
    }

    /// Decodes `%XX` escapes and `+` (a space, in a query). A `%` not followed by two
    /// hexadecimal digits is kept as written, with what follows it.
    static func percentDecoded(_ text: Substring) -> String {
        let input = Array(text.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(input.count)
        var index = 0
        while index < input.count {
            let byte = input[index]
            if byte == UInt8(ascii: "%"), index + 2 < input.count,
                let high = hexValue(input[index + 1]), let low = hexValue(input[index + 2])
            {
                bytes.append(high << 4 | low)
                index += 3
                continue
            }
            bytes.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            index += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// An HTTP response: status, extra headers and a body (JSON unless said otherwise).
public struct Response: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var headers: [(name: String, value: String)]
    public var body: String
    /// True for the answer to a HEAD: the headers, `Content-Length` included, are those of
    /// the body, but the body itself is not sent.
    public var omitsBody: Bool

    public init(
        status: Int, body: String, contentType: String = "application/json", headers: [(name: String, value: String)] = [],
        omitsBody: Bool = false
    ) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.headers = headers
        self.omitsBody = omitsBody
    }

    public static func == (lhs: Response, rhs: Response) -> Bool {
        lhs.status == rhs.status && lhs.contentType == rhs.contentType && lhs.body == rhs.body && lhs.omitsBody == rhs.omitsBody
            && lhs.headers.map { "\($0.name): \($0.value)" } == rhs.headers.map { "\($0.name): \($0.value)" }
    }

    /// The reason phrase for the status line.
    public static func reason(for status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 204: "No Content"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 422: "Unprocessable Content"
        case 500: "Internal Server Error"
        case 503: "Service Unavailable"
        default: "Status"
        }
    }
}
