import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private func parse(_ text: String) throws(JSONParseError) -> JSONValue {
    try JSONParser.parse(Array(text.utf8))
}

private func nested(_ depth: Int, around inner: String) -> String {
    String(repeating: "[", count: depth) + inner + String(repeating: "]", count: depth)
}

@Suite("JSON parser and writer")
struct JSONParserTests {
    @Test(
        "valid documents parse to the expected value",
        arguments: [
            ("{}", JSONValue.object([:])),
            ("[]", .array([])),
            ("null", .null),
            ("true", .bool(true)),
            ("false", .bool(false)),
            (#""text""#, .string("text")),
            (" \t\r\n{ \"a\" : [ 1 , -2 , 3.5 , null ] } \n", .object(["a": .array([.number("1"), .number("-2"), .number("3.5"), .null])])),
            (
                #"{"amount": 100, "scheduled_for": "2026-02-15T15:00:00Z"}"#,
                .object(["amount": .number("100"), "scheduled_for": .string("2026-02-15T15:00:00Z")])
            ),
            (#"{"a": {"b": {"c": [true, false]}}}"#, .object(["a": .object(["b": .object(["c": .array([.bool(true), .bool(false)])])])])),
        ])
    func validDocumentsParse(text: String, expected: JSONValue) throws {
        #expect(try parse(text) == expected)
    }

    @Test("numbers keep their source text", arguments: ["1", "1.0", "1e3", "1E3", "1e+3", "1e-3", "-0", "0", "0.5", "-12.25e10"])
    func numbersKeepTheirText(text: String) throws {
        #expect(try parse(text) == .number(text))
    }

    @Test("1, 1.0 and 1e0 stay distinguishable")
    func integerAndFloatSpellingsDiffer() throws {
        #expect(try parse("1") != parse("1.0"))
        #expect(try parse("1") != parse("1e0"))
    }

    @Test(
        "invalid number grammar is refused", arguments: ["01", "-", "+1", "1.", ".5", "1e", "1e+", "-01", "0x10", "1.2.3", "NaN", "Infinity", "--1"])
    func invalidNumbersRefused(text: String) {
        #expect(throws: JSONParseError.self) { try parse(text) }
    }

    @Test(
        "integer accepts plain integers that fit in Int64",
        arguments: [
            ("0", Int64(0)), ("-0", 0), ("1", 1), ("-1", -1), ("1000000000000000", 1_000_000_000_000_000),
            ("9223372036854775807", Int64.max), ("-9223372036854775808", Int64.min),
        ])
    func integerAccepted(text: String, expected: Int64) throws {
        #expect(try parse(text).integer == expected)
    }

    @Test(
        "integer refuses fractions, exponents and overflow",
        arguments: [
            "1.0", "1.5", "1e3", "1E3", "10e-1", "9223372036854775808", "-9223372036854775809", "99999999999999999999",
        ])
    func integerRefused(text: String) throws {
        #expect(try parse(text).integer == nil)
    }

    @Test("integer is nil for values that are not numbers", arguments: [JSONValue.string("1"), .bool(true), .null, .array([.number("1")])])
    func integerOfNonNumbers(value: JSONValue) {
        #expect(value.integer == nil)
        #expect(!value.isNumber)
    }

    @Test(
        "string escapes decode",
        arguments: [
            (#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{08}\u{0C}\n\r\t"),
            (#""\u0041\u00e9\u20AC""#, "Aé€"),
            (#""\u0000""#, "\u{0}"),
            (#""a\u0062c""#, "abc"),
            (#""\ud83d\ude00""#, "😀"),
            (#""\uD834\uDD1E""#, "𝄞"),
            ("\"é 😀 raw UTF-8\"", "é 😀 raw UTF-8"),
        ])
    func stringEscapesDecode(text: String, expected: String) throws {
        #expect(try parse(text) == .string(expected))
    }

    @Test(
        "bad escapes and lone surrogates are refused",
        arguments: [
            #""\ud83d""#, #""\ud83dx""#, #""\ud83d\u0041""#, #""\ude00""#, #""\ude00\ud83d""#, #""\ud83d\ud83d""#,
            #""\x41""#, #""\u12""#, #""\u12G4""#, #""\'""#, #""\"#, #""abc"#,
        ])
    func badEscapesRefused(text: String) {
        #expect(throws: JSONParseError.self) { try parse(text) }
    }

    @Test(
        "invalid UTF-8 is refused",
        arguments: [
            [0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x22, 0xE2, 0x82, 0x22], [0x7B, 0x22, 0xFE, 0x22, 0x3A, 0x31, 0x7D],
        ] as [[UInt8]])
    func invalidUTF8Refused(bytes: [UInt8]) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(bytes) }
    }

    @Test("valid multi-byte UTF-8 is accepted")
    func validUTF8Accepted() throws {
        #expect(try JSONParser.parse([0x22, 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0x22]) == .string("é😀"))
    }

    @Test("raw control characters inside strings are refused", arguments: [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F] as [UInt8])
    func controlCharactersRefused(byte: UInt8) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x61, byte, 0x62, 0x22]) }
    }

    @Test("DEL (0x7F) is not a control character for JSON and is accepted")
    func deleteAccepted() throws {
        #expect(try JSONParser.parse([0x22, 0x7F, 0x22]) == .string("\u{7F}"))
    }

    @Test("duplicate member names are refused, distinct ones accepted")
    func duplicateKeys() throws {
        #expect(throws: JSONParseError.self) { try parse(#"{"amount": 1, "amount": 2}"#) }
        #expect(throws: JSONParseError.self) { try parse(#"{"amount": 1, "amount": 1}"#) }
        #expect(throws: JSONParseError.self) { try parse(#"{"a": 1, "\u0061": 2}"#) }
        #expect(throws: JSONParseError.self) { try parse(#"{"x": {"a": 1, "a": 1}}"#) }
        #expect(try parse(#"{"amount": 1, "Amount": 2}"#) == .object(["amount": .number("1"), "Amount": .number("2")]))
        #expect(try parse(#"[{"a": 1}, {"a": 1}]"#).array?.count == 2)
    }

    @Test(
        "trailing garbage and incomplete documents are refused",
        arguments: [
            "{} x", "{}{}", "1 2", "[1],", "{\"a\": 1}}", "", "   ", "[", "{", "{\"a\"", "{\"a\":", "{\"a\": 1", "[1,]", "{\"a\": 1,}",
            "{a: 1}", "{'a': 1}", "[1 2]", "tru", "nul", "falsey", "True", "// c\n{}", "{\"a\" 1}", "\u{FEFF}{}",
        ])
    func malformedRefused(text: String) {
        #expect(throws: JSONParseError.self) { try parse(text) }
    }

    @Test("a value nested within jsonDepthMax containers is accepted, one level deeper is refused")
    func depthLimit() throws {
        let limit = Limits.jsonDepthMax
        #expect(try parse(nested(limit, around: "1")).array != nil)
        #expect(throws: JSONParseError.self) { try parse(nested(limit + 1, around: "1")) }
        let objects = String(repeating: #"{"a":"#, count: limit) + "1" + String(repeating: "}", count: limit)
        #expect(try parse(objects).members != nil)
        let deeperObjects = String(repeating: #"{"a":"#, count: limit + 1) + "1" + String(repeating: "}", count: limit + 1)
        #expect(throws: JSONParseError.self) { try parse(deeperObjects) }
    }

    @Test("a very deep document is refused without exhausting the stack")
    func hugeDepthRefused() {
        #expect(throws: JSONParseError.self) { try parse(String(repeating: "[", count: 100_000)) }
        #expect(throws: JSONParseError.self) { try parse(nested(50_000, around: "")) }
    }

    @Test(
        "JSONWriter.quoted escapes quotes, backslashes and control characters",
        arguments: [
            ("plain", #""plain""#),
            ("a\"b", #""a\"b""#),
            ("a\\b", #""a\\b""#),
            ("line\nbreak\r\ttab", #""line\nbreak\r\ttab""#),
            ("\u{0}\u{1}\u{08}\u{0C}\u{1F}", #""\u0000\u0001\u0008\u000c\u001f""#),
            ("é😀/", "\"é😀/\""),
            ("", #""""#),
        ])
    func writerEscapes(input: String, expected: String) {
        #expect(JSONWriter.quoted(input) == expected)
    }

    @Test("quoted strings parse back to the original", arguments: ["a\"b\\c", "\u{0}\u{1F}\n", "é😀\u{7F}", "</script>", "\u{2028}"])
    func writerRoundTrip(input: String) throws {
        #expect(try parse(JSONWriter.quoted(input)) == .string(input))
    }

    @Test("JSONObject writes members in order with null for nil")
    func objectBuilder() throws {
        var object = JSONObject()
        object.add("b", "x\"y")
        object.add("a", Int64(-5))
        object.add("n", nil as String?)
        object.add("m", nil as Int64?)
        object.add("raw", json: "[1, 2]")
        #expect(object.result == #"{"b": "x\"y", "a": -5, "n": null, "m": null, "raw": [1, 2]}"#)
        #expect(try parse(object.result).members?.count == 5)
        #expect(JSONObject().result == "{}")
    }

    @Test(
        "JSONObject writes whole numbers exactly, at both ends of Int64",
        arguments: [
            (Int64.min, "-9223372036854775808"), (Int64.max, "9223372036854775807"), (0, "0"), (-1, "-1"), (10, "10"),
        ])
    func objectIntegers(value: Int64, text: String) {
        var object = JSONObject()
        object.add("v", value)
        #expect(object.result == "{\"v\": \(text)}")
        #expect(object.utf8(terminator: UInt8(ascii: "\n")) == Array("{\"v\": \(text)}\n".utf8))
    }
}
