import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private func request(body: String, contentType: String? = "application/json") -> Request {
    Request(method: "POST", path: "/wallets/", contentType: contentType, body: Array(body.utf8))
}

private func members(_ body: String) throws(APIError) -> RequestBody {
    try RequestBody(request(body: body))
}

private func query(_ text: String) throws(APIError) -> TransactionQuery {
    try TransactionQuery(Request(method: "GET", path: "/", query: text).queryItems)
}

@Suite("Request parsing")
struct RequestParsingTests {
    // MARK: Idempotency-Key

    @Test(
        "keys of 1 to 255 printable ASCII characters are accepted",
        arguments: [
            "a", "abc-123", "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", " ", "with space", String(repeating: "k", count: 255),
            "550e8400-e29b-41d4-a716-446655440000",
        ])
    func keyAccepted(key: String) throws {
        #expect(try IdempotencyKey(header: key)?.text == key)
    }

    @Test("an absent key is no key")
    func keyAbsent() throws {
        #expect(try IdempotencyKey(header: nil) == nil)
    }

    @Test(
        "empty, too long, non-printable and non-ASCII keys are refused",
        arguments: [
            "", String(repeating: "k", count: 256), String(repeating: "k", count: 10_000), "tab\there", "new\nline", "nul\u{0}",
            "del\u{7F}", "café", "emoji😀", "\u{A0}",
        ])
    func keyRefused(key: String) {
        #expect(throws: APIError.invalidIdempotencyKey) { try IdempotencyKey(header: key) }
    }

    @Test("the fingerprint covers method, canonical path and exact body bytes")
    func fingerprint() {
        let uuid = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
        func print(_ method: String, _ path: String, _ body: String) -> String {
            IdempotencyKey.fingerprint(of: Request(method: method, path: path, body: Array(body.utf8)))
        }
        let base = print("POST", "/wallets/\(uuid)/deposit", #"{"amount": 1}"#)
        #expect(print("POST", "/wallets/\(uuid)/deposit/", #"{"amount": 1}"#) == base)
        #expect(print("POST", "/wallets/\(uuid.uppercased())/deposit", #"{"amount": 1}"#) == base)
        #expect(print("POST", "/wallets/\(uuid)/withdraw", #"{"amount": 1}"#) != base)
        #expect(print("POST", "/wallets/\(uuid)/deposit", #"{"amount": 2}"#) != base)
        #expect(print("POST", "/wallets/\(uuid)/deposit", #"{"amount":1}"#) != base)
        #expect(print("PUT", "/wallets/\(uuid)/deposit", #"{"amount": 1}"#) != base)
        #expect(base.count == 64)
    }

    // MARK: Content type and body

    @Test(
        "application/json is accepted with parameters and in any case",
        arguments: [
            "application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", "APPLICATION/JSON",
            "Application/Json; Charset=utf-8", " application/json ", "application/json\t;x=y",
        ])
    func jsonContentTypeAccepted(type: String) throws {
        #expect(RequestBody.isJSON(type))
        #expect(try RequestBody(request(body: "{}", contentType: type)).members.isEmpty)
    }

    @Test(
        "other content types are 415",
        arguments: [
            "text/plain", "application/jsonp", "application/json-patch+json", "text/json", "application/x-www-form-urlencoded",
            "", "json", "application/ json", "multipart/form-data; boundary=application/json",
        ])
    func otherContentTypeRefused(type: String) {
        #expect(!RequestBody.isJSON(type))
        #expect(throws: APIError.unsupportedMediaType) { try RequestBody(request(body: "{}", contentType: type)) }
    }

    @Test("a body without a content type is 415, an empty body without one is invalid JSON")
    func missingContentType() {
        #expect(throws: APIError.unsupportedMediaType) { try RequestBody(request(body: "{}", contentType: nil)) }
        #expect(throws: APIError.invalidJSON("the body is empty")) { try RequestBody(request(body: "", contentType: nil)) }
        #expect(throws: APIError.invalidJSON("the body is empty")) { try RequestBody(request(body: "")) }
    }

    @Test("a body of 16 KiB is read, one byte more is 413")
    func bodySizeLimit() throws {
        let padding = Limits.requestBodyBytesMax - 2
        let largest = "{" + String(repeating: " ", count: padding) + "}"
        #expect(largest.utf8.count == Limits.requestBodyBytesMax)
        #expect(try RequestBody(request(body: largest)).members.isEmpty)
        #expect(throws: APIError.payloadTooLarge) { try RequestBody(request(body: "{" + String(repeating: " ", count: padding + 1) + "}")) }
    }

    @Test("a body that is not a JSON object is 400 invalid_json", arguments: ["[]", "1", "\"x\"", "null", "{", "{} {}", "{\"a\":1,\"a\":2}"])
    func notAnObject(body: String) {
        do {
            _ = try members(body)
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.status == 400)
            #expect(error.code == "invalid_json")
        }
    }

    @Test(
        "amount accepts JSON integers from 1 to 10^15",
        arguments: [
            ("1", Int64(1)), ("100", 100), ("1000000000000000", Limits.amountMinorUnitsMax), ("999999999999999", 999_999_999_999_999),
        ])
    func amountAccepted(text: String, expected: Int64) throws {
        #expect(try members(#"{"amount": \#(text)}"#).amount().minorUnits == expected)
    }

    @Test(
        "amount refuses everything else with invalid_amount",
        arguments: [
            #"{"amount": 0}"#, #"{"amount": -0}"#, #"{"amount": -1}"#, #"{"amount": 1.5}"#, #"{"amount": 1.0}"#, #"{"amount": 1e3}"#,
            #"{"amount": 1E3}"#, #"{"amount": "100"}"#, #"{"amount": true}"#, #"{"amount": null}"#, #"{"amount": [1]}"#,
            #"{"amount": {"value": 1}}"#, #"{}"#, #"{"Amount": 100}"#, #"{"amount": 1000000000000001}"#,
            #"{"amount": 9223372036854775807}"#, #"{"amount": 9223372036854775808}"#, #"{"amount": -9223372036854775808}"#,
        ])
    func amountRefused(body: String) throws {
        let parsed = try members(body)
        #expect(throws: APIError.invalidAmount) { try parsed.amount() }
        #expect(APIError.invalidAmount.field == "amount")
    }

    @Test("scheduled_for absent or null means at once")
    func scheduledForAbsent() throws {
        #expect(try members(#"{"amount": 1}"#).scheduledFor() == nil)
        #expect(try members(#"{"amount": 1, "scheduled_for": null}"#).scheduledFor() == nil)
    }

    @Test(
        "scheduled_for accepts RFC 3339 with an offset",
        arguments: [
            ("2026-02-15T15:00:00Z", Int64(1_771_167_600_000_000)), ("2026-02-15T18:30:00+03:30", 1_771_167_600_000_000),
            ("2026-02-15T15:00:00.5z", 1_771_167_600_500_000),
        ])
    func scheduledForAccepted(text: String, microseconds: Int64) throws {
        #expect(try members(#"{"scheduled_for": "\#(text)"}"#).scheduledFor()?.microseconds == microseconds)
    }

    @Test(
        "scheduled_for refuses other strings and other types with invalid_scheduled_for",
        arguments: [
            #""2026-02-15T15:00:00""#, #""2026-02-30T15:00:00Z""#, #""tomorrow""#, #""""#, "1771167600", "true", "[]", "{}",
        ])
    func scheduledForRefused(value: String) throws {
        let parsed = try members(#"{"scheduled_for": \#(value)}"#)
        do {
            _ = try parsed.scheduledFor()
            Issue.record("accepted \(value)")
        } catch {
            #expect(error.status == 400)
            #expect(error.code == "invalid_scheduled_for")
            #expect(error.field == "scheduled_for")
        }
    }

    // MARK: The transaction list's query

    @Test("no parameters give the defaults")
    func queryDefaults() throws {
        let parsed = try query("")
        #expect(parsed.filter == TransactionFilter())
        #expect(parsed.limit == Limits.pageSizeDefault)
        #expect(parsed.cursor == nil)
    }

    @Test(
        "status and type filters are case-insensitive",
        arguments: [
            ("status=pending", TransactionFilter(status: .pending)), ("status=PROCESSING", TransactionFilter(status: .processing)),
            ("status=Completed", TransactionFilter(status: .completed)), ("status=failed", TransactionFilter(status: .failed)),
            ("status=canceled", TransactionFilter(status: .canceled)), ("type=deposit", TransactionFilter(type: .deposit)),
            ("type=WITHDRAWAL", TransactionFilter(type: .withdrawal)),
            ("type=Withdrawal&status=pending", TransactionFilter(status: .pending, type: .withdrawal)),
        ])
    func filtersAccepted(text: String, filter: TransactionFilter) throws {
        #expect(try query(text).filter == filter)
    }

    @Test(
        "bad filter, limit and cursor values are 400 invalid_query naming the field",
        arguments: [
            ("status=", "status"), ("status=done", "status"), ("status=cancelled", "status"), ("status=PENDING%20", "status"),
            ("type=", "type"), ("type=refund", "type"), ("type=deposits", "type"),
            ("limit=0", "limit"), ("limit=501", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
            ("limit=%2B5", "limit"), ("limit=1.0", "limit"), ("limit=99999999999999999999", "limit"), ("limit=%205", "limit"),
            ("cursor=0", "cursor"), ("cursor=-1", "cursor"), ("cursor=abc", "cursor"), ("cursor=", "cursor"), ("cursor=07", "cursor"),
        ])
    func queryRefused(text: String, field: String) {
        do {
            _ = try query(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.status == 400)
            #expect(error.code == "invalid_query")
            #expect(error.field == field)
        }
    }

    @Test("limit accepts 1 to 500", arguments: [("1", 1), ("50", 50), ("500", 500), ("007", 7)])
    func limitAccepted(text: String, limit: Int) throws {
        #expect(try query("limit=\(text)").limit == limit)
    }

    @Test("cursor accepts a positive id")
    func cursorAccepted() throws {
        #expect(try query("cursor=42").cursor == 42)
        #expect(try query("cursor=9223372036854775807").cursor == Int64.max)
    }

    @Test("query items are percent-decoded, + is a space, the first of a repeated name wins")
    func queryItems() {
        let items = Request(method: "GET", path: "/", query: "a=1&b=x%20y&c=p+q&a=2&d&=e&&f=%41%62").queryItems
        #expect(items["a"] == "1")
        #expect(items["b"] == "x y")
        #expect(items["c"] == "p q")
        #expect(items["d"] == "")
        #expect(items[""] == "e")
        #expect(items["f"] == "Ab")
        #expect(Request(method: "GET", path: "/").queryItems.isEmpty)
        #expect(Request.percentDecoded("100%") == "100%")
        #expect(Request.percentDecoded("%e2%82%AC") == "€")
    }

    @Test(
        "every status the API answers has its reason phrase",
        arguments: [
            (200, "OK"), (201, "Created"), (204, "No Content"), (400, "Bad Request"), (401, "Unauthorized"), (403, "Forbidden"),
            (404, "Not Found"), (429, "Too Many Requests"), (405, "Method Not Allowed"), (409, "Conflict"),
            (413, "Content Too Large"), (415, "Unsupported Media Type"), (422, "Unprocessable Content"), (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ])
    func reasonPhrases(status: Int, reason: String) {
        #expect(Response.reason(for: status) == reason)
    }

    // A '%' not followed by two hexadecimal digits is kept with what follows; '+' is still a
    // space, as everywhere in a query string.
    @Test("a malformed percent escape is kept as written", arguments: [("a%zzb", "a%zzb"), ("a%4", "a%4"), ("%+5", "% 5"), ("%-0", "%-0")])
    func malformedPercentEscape(text: String, expected: String) {
        #expect(Request.percentDecoded(Substring(text)) == expected)
    }
}
