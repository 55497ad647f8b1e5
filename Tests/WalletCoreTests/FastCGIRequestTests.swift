import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// The parameters nginx sends for a request; `nil` values are left out, as nginx leaves them.
private func received(_ parameters: [String: String?]) -> FastCGIRequest {
    FastCGIRequest(parameter: { name in parameters[name] ?? nil })
}

@Suite("FastCGI request")
struct FastCGIRequestTests {
    @Test("every parameter lands in its place; the body is the bytes read")
    func parameters() throws {
        let fastCGI = received([
            "REQUEST_METHOD": "POST", "DOCUMENT_URI": "/wallets/", "QUERY_STRING": "a=1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "2", "HTTP_IDEMPOTENCY_KEY": "k-1",
            "REQUEST_ID": "abc",
        ])
        let request = try fastCGI.request(body: Array("{}".utf8)).get()
        #expect(request.method == "POST")
        #expect(request.path == "/wallets/")
        #expect(request.query == "a=1")
        #expect(request.contentType == "application/json")
        #expect(request.idempotencyKey == "k-1")
        #expect(request.requestID == "abc")
        #expect(request.body == Array("{}".utf8))
        #expect(fastCGI.routeTemplate == "/wallets/")
    }

    @Test("a GET without parameters: empty CONTENT_LENGTH and CONTENT_TYPE mean no body and no type")
    func defaults() throws {
        let fastCGI = received(["CONTENT_LENGTH": "", "CONTENT_TYPE": ""])
        #expect(try fastCGI.bodyLength().get() == 0)
        let request = try fastCGI.request(body: []).get()
        #expect(request.method == "GET")
        #expect(request.path == "/")
        #expect(request.query == "")
        #expect(request.contentType == nil)
        #expect(request.idempotencyKey == nil)
        #expect(request.requestID == "-")
        #expect(fastCGI.routeTemplate == Route.unmatchedTemplate)
    }

    @Test("an empty Idempotency-Key is kept empty, for the API to refuse")
    func emptyKey() throws {
        #expect(try received(["HTTP_IDEMPOTENCY_KEY": ""]).request(body: []).get().idempotencyKey == "")
    }

    @Test("a Content-Length up to the limit is read", arguments: ["0", "1", "\(Limits.requestBodyBytesMax)"])
    func lengthAccepted(length: String) throws {
        #expect(try received(["CONTENT_LENGTH": length]).bodyLength().get() == Int(length))
    }

    @Test(
        "a Content-Length that is no length is 400 before any byte is read",
        arguments: [
            "-1", "abc", "1.5", " 1", "0x10", "99999999999999999999",
        ])
    func lengthInvalid(length: String) {
        let result = received(["CONTENT_LENGTH": length]).bodyLength()
        #expect(result.failure?.status == 400)
        #expect(result.failure?.code == "bad_request")
    }

    @Test("a Content-Length over the limit is 413 before any byte is read")
    func lengthTooLarge() {
        let fastCGI = received(["CONTENT_LENGTH": "\(Limits.requestBodyBytesMax + 1)"])
        #expect(fastCGI.bodyLength().failure == .payloadTooLarge)
        #expect(fastCGI.request(body: []).failure == .payloadTooLarge)
    }

    @Test("a body shorter than announced (the client went away) is 400", arguments: [0, 1, 9])
    func bodyEndedEarly(count: Int) {
        let result = received(["CONTENT_LENGTH": "10"]).request(body: Array(repeating: 0x20, count: count))
        #expect(result.failure?.status == 400)
        #expect(result.failure?.message == "the request body ended early")
    }

    @Test("the route template of an unreadable request is its route's, or unmatched")
    func routeTemplate() {
        let wallet = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
        #expect(received(["DOCUMENT_URI": "/wallets/\(wallet)/deposit"]).routeTemplate == "/wallets/{uuid}/deposit")
        #expect(received(["DOCUMENT_URI": "/nowhere"]).routeTemplate == Route.unmatchedTemplate)
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
