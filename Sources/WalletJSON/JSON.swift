/// A parsed JSON value. Numbers keep their source text, so that `1`, `1.0` and `1e0`
/// stay distinguishable: an amount must be written as a plain integer.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The value as an `Int64` when it is a number written as a plain integer
    /// (optional minus sign and digits) that fits; nil otherwise.
    public var integer: Int64? {
        guard case .number(let text) = self,
            !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" })
        else { return nil }
        return Int64(text)
    }

    public var isNumber: Bool {
        if case .number = self { return true }
        return false
    }
}

/// Why a body is not acceptable JSON.
public struct JSONParseError: Error, Equatable {
    public let message: String
}

/// A strict RFC 8259 parser over bytes: no comments, no trailing commas, no duplicate
/// object keys (a payments API should not guess which of two amounts was meant), valid
/// UTF-8 only, nesting bounded by `depthMax`.
public struct JSONParser {
    private let bytes: [UInt8]
    private let depthMax: Int
    private var index = 0

    /// Parses one JSON text. Nesting deeper than `depthMax` is refused: a recursive parser
    /// must not be driven into the stack guard by `[[[[...` (the service passes
    /// `Limits.jsonDepthMax`).
    public static func parse(_ bytes: [UInt8], depthMax: Int = 16) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, depthMax: depthMax)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw JSONParseError(message: "unexpected data after the JSON value") }
        return value
    }

    private init(bytes: [UInt8], depthMax: Int) {
        self.bytes = bytes
        self.depthMax = depthMax
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= depthMax else { throw JSONParseError(message: "JSON nested too deeply") }
        guard index < bytes.count else { throw JSONParseError(message: "unexpected end of JSON") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw JSONParseError(message: "unexpected character in JSON")
        }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if take(UInt8(ascii: "}")) { return .object(members) }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw JSONParseError(message: "expected a member name")
            }
            let name = try parseString()
            skipWhitespace()
            guard take(UInt8(ascii: ":")) else { throw JSONParseError(message: "expected ':' after a member name") }
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            guard members.updateValue(value, forKey: name) == nil else {
                throw JSONParseError(message: "duplicate member \"\(name)\"")
            }
            skipWhitespace()
            if take(UInt8(ascii: "}")) { return .object(members) }
            guard take(UInt8(ascii: ",")) else { throw JSONParseError(message: "expected ',' or '}' in an object") }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if take(UInt8(ascii: "]")) { return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            if take(UInt8(ascii: "]")) { return .array(elements) }
            guard take(UInt8(ascii: ",")) else { throw JSONParseError(message: "expected ',' or ']' in an array") }
        }
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        var runStart = index
        var plain: [UInt8] = []
        while true {
            guard index < bytes.count else { throw JSONParseError(message: "unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                plain.append(contentsOf: bytes[runStart..<index])
                index += 1
                break
            }
            if byte < 0x20 { throw JSONParseError(message: "control character in a string") }
            if byte == UInt8(ascii: "\\") {
                plain.append(contentsOf: bytes[runStart..<index])
                index += 1
                let scalar = try parseEscape()
                plain.append(contentsOf: Array(String(Character(scalar)).utf8))
                runStart = index
                continue
            }
            index += 1
        }
        guard let text = String(validating: plain, as: UTF8.self) else {
            throw JSONParseError(message: "string is not valid UTF-8")
        }
        return text
    }

    private mutating func parseEscape() throws(JSONParseError) -> Unicode.Scalar {
        guard index < bytes.count else { throw JSONParseError(message: "unterminated escape") }
        let byte = bytes[index]
        index += 1
        switch byte {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            let unit = try parseHex4()
            if (0xD800...0xDBFF).contains(unit) {
                guard take(UInt8(ascii: "\\")), take(UInt8(ascii: "u")) else {
                    throw JSONParseError(message: "unpaired surrogate in a string")
                }
                let low = try parseHex4()
                guard (0xDC00...0xDFFF).contains(low),
                    let scalar = Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                else {
                    throw JSONParseError(message: "unpaired surrogate in a string")
                }
                return scalar
            }
            guard let scalar = Unicode.Scalar(unit) else { throw JSONParseError(message: "unpaired surrogate in a string") }
            return scalar
        default:
            throw JSONParseError(message: "invalid escape in a string")
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw JSONParseError(message: "truncated \\u escape") }
        var value: UInt32 = 0
        for byte in bytes[index..<index + 4] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw JSONParseError(message: "invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        index += 4
        return value
    }

    /// Validates the number grammar and returns its text unchanged.
    private mutating func parseNumber() throws(JSONParseError) -> String {
        let start = index
        _ = take(UInt8(ascii: "-"))
        if take(UInt8(ascii: "0")) {
            // A leading zero stands alone: `01` is not JSON.
        } else {
            guard skipDigits() > 0 else { throw JSONParseError(message: "invalid number") }
        }
        if take(UInt8(ascii: ".")) {
            guard skipDigits() > 0 else { throw JSONParseError(message: "invalid number") }
        }
        if take(UInt8(ascii: "e")) || take(UInt8(ascii: "E")) {
            if !take(UInt8(ascii: "+")) { _ = take(UInt8(ascii: "-")) }
            guard skipDigits() > 0 else { throw JSONParseError(message: "invalid number") }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func skipDigits() -> Int {
        let start = index
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
        return index - start
    }

    private mutating func expectLiteral(_ literal: String) throws(JSONParseError) {
        let expected = Array(literal.utf8)
        guard index + expected.count <= bytes.count, bytes[index..<index + expected.count].elementsEqual(expected) else {
            throw JSONParseError(message: "invalid literal")
        }
        index += expected.count
    }

    private mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }
}

/// JSON text for strings.
public enum JSONWriter {
    /// The string as a JSON string literal, escaped as RFC 8259 requires.
    public static func quoted(_ value: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count + 2)
        appendQuoted(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the string as a JSON string literal. Works on UTF-8 bytes: every byte of a
    /// multi-byte character is 0x80 or more, so only ASCII bytes ever need escaping.
    public static func appendQuoted(_ value: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        // Most strings (ids, codes, timestamps) need no escaping: copy them whole, scanned
        // and copied as one buffer (through the string's UTF-8 view, byte by byte, this cost
        // more than the rest of an object's serialization).
        var text = value
        let copied = text.withUTF8 { utf8 in
            guard !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if copied {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case UInt8(ascii: "\\"):
                bytes.append(byte)
                bytes.append(byte)
            case UInt8(ascii: "\n"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                bytes.append(contentsOf: "\\u00".utf8)
                bytes.append(hexDigit(byte >> 4))
                bytes.append(hexDigit(byte & 0xF))
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// Appends a whole number in decimal.
    public static func appendDecimal(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        // The magnitude as UInt64: -Int64.min does not fit an Int64.
        var magnitude = value.magnitude
        // Counted first, then written from the last digit back into their places (reversing
        // a slice of the array afterwards cost a thousand instructions a number).
        var count = 1
        var rest = magnitude / 10
        while rest > 0 {
            count += 1
            rest /= 10
        }
        var index = bytes.count + count
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: count))
        repeat {
            index -= 1
            bytes[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
    }
}

/// A JSON object under construction, written as UTF-8 text at once (no intermediate tree).
/// Keys are written in the order they are added.
public struct JSONObject {
    private var bytes: [UInt8]
    private var empty = true

    public init() {
        bytes = []
        bytes.reserveCapacity(256)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ name: String) {
        if !empty {
            bytes.append(UInt8(ascii: ","))
            bytes.append(UInt8(ascii: " "))
        }
        empty = false
        JSONWriter.appendQuoted(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(UInt8(ascii: " "))
    }

    public mutating func add(_ name: String, _ value: String?) {
        key(name)
        if let value { JSONWriter.appendQuoted(value, to: &bytes) } else { bytes.append(contentsOf: "null".utf8) }
    }

    public mutating func add(_ name: String, _ value: Int64?) {
        key(name)
        if let value { JSONWriter.appendDecimal(value, to: &bytes) } else { bytes.append(contentsOf: "null".utf8) }
    }

    public mutating func add(_ name: String, _ value: Int128) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    /// Adds a member whose value is already JSON text.
    public mutating func add(_ name: String, json: String) {
        key(name)
        bytes.append(contentsOf: json.utf8)
    }

    /// The object's text.
    public var result: String { String(decoding: utf8(), as: UTF8.self) }

    /// The object's text as UTF-8, followed by `terminator` if there is one (a log line's
    /// newline).
    public func utf8(terminator: UInt8? = nil) -> [UInt8] {
        var text = bytes
        text.append(UInt8(ascii: "}"))
        if let terminator { text.append(terminator) }
        return text
    }
}
