import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// Structured logs: one JSON object per line on standard error, which journald keeps under
/// systemd. Each line carries a timestamp, a level and an event name; the request id or the
/// withdrawal id ties related lines together.
public struct Log: Sendable {
    public enum Level: String, Sendable {
        case info, warning, error
    }

    /// The program that writes, e.g. `wallet-fcgi`.
    public let component: String

    public init(component: String) {
        self.component = component
    }

    /// One value of a log line.
    public enum Value: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
        case string(String?)
        case integer(Int64?)
        case number(Double)

        public init(stringLiteral value: String) { self = .string(value) }
        public init(integerLiteral value: Int64) { self = .integer(value) }
    }

    public func write(_ level: Level = .info, _ event: String, _ fields: KeyValuePairs<String, Value>) {
        Log.write(lines: line(level, event, fields))
    }

    /// One log line, newline included, to write now or together with others (`Lines`).
    public func line(_ level: Level = .info, _ event: String, _ fields: KeyValuePairs<String, Value>) -> [UInt8] {
        var object = JSONObject()
        object.add("ts", Timestamp.now().rfc3339)
        object.add("level", level.rawValue)
        object.add("component", component)
        object.add("event", event)
        for (name, value) in fields {
            switch value {
            case .string(let text): object.add(name, text)
            case .integer(let number): object.add(name, number)
            case .number(let number): object.add(name, json: Log.format(number))
            }
        }
        return object.utf8(terminator: UInt8(ascii: "\n"))
    }

    /// Lines gathered to be written in one `write`: the audit lines of one transaction, or a
    /// request's audit and request lines. Fewer system calls, and the lines of one change
    /// stay together.
    public struct Lines {
        public private(set) var bytes: [UInt8] = []

        public init() {}

        public mutating func append(_ line: [UInt8]) { bytes += line }

        /// Writes the lines gathered so far and starts again.
        public mutating func flush() {
            Log.write(lines: bytes)
            bytes.removeAll(keepingCapacity: true)
        }
    }

    /// Writes one line to fd 2 in a single `write`, so lines from threads never interleave.
    public static func writeLine(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        write(lines: bytes)
    }

    /// Writes whole lines (each ending with a newline) to fd 2 in a single `write`.
    private static func write(lines bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// A duration in milliseconds with three decimals, written without Foundation.
    static func format(_ number: Double) -> String {
        guard number.isFinite else { return "null" }
        let thousandths = Int64((number * 1000).rounded())
        let sign = thousandths < 0 ? "-" : ""
        let magnitude = abs(thousandths)
        let fraction = String(magnitude % 1000)
        return sign + String(magnitude / 1000) + "." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// The audit line of one balance change.
    public func audit(_ entry: LedgerEntry, requestID: String? = nil) {
        Log.write(lines: auditLine(entry, requestID: requestID))
    }

    /// The audit line of one balance change, to write with others.
    public func auditLine(_ entry: LedgerEntry, requestID: String? = nil) -> [UInt8] {
        line(
            .info, "ledger",
            [
                "wallet": .string(entry.wallet.text),
                "transaction": .integer(entry.transactionID),
                "kind": .string(entry.kind.rawValue),
                "amount": .integer(entry.delta),
                "balance_after": .integer(entry.balanceAfter.minorUnits),
                "request_id": .string(requestID),
            ])
    }
}
