import WalletDomain
import WalletJSON
import WalletPlatform

/// A request as FastCGI delivers it: the parameters nginx sends, copied out of libfcgi,
/// and the rules that turn them and the body into a `Request` or the contract's error.
/// The responder reads the parameters and the body bytes; everything it decides about
/// them is decided here, where the tests and the request fuzzer run the same code.
public struct FastCGIRequest: Sendable {
    public var method: String
    /// The path without the query, as nginx decoded and normalised it (`DOCUMENT_URI`).
    public var path: String
    public var query: String
    public var contentType: String?
    public var contentLength: String
    public var idempotencyKey: String?
    public var requestID: String
    public var authorization: String?

    /// Takes each parameter from `parameter`, which answers nil for one nginx did not send.
    public init(parameter: (String) -> String?) {
        method = parameter("REQUEST_METHOD") ?? "GET"
        path = parameter("DOCUMENT_URI") ?? "/"
        query = parameter("QUERY_STRING") ?? ""
        // nginx sends CONTENT_TYPE empty when the client sent none.
        contentType = parameter("CONTENT_TYPE").flatMap { $0.isEmpty ? nil : $0 }
        contentLength = parameter("CONTENT_LENGTH") ?? ""
        idempotencyKey = parameter("HTTP_IDEMPOTENCY_KEY")
        requestID = parameter("REQUEST_ID") ?? "-"
        authorization = parameter("HTTP_AUTHORIZATION")
    }

    /// How many body bytes to read: `CONTENT_LENGTH`, which nginx sends empty on a GET.
    /// Refused before any byte is read when it is not a decimal number or is over the limit,
    /// so a client cannot make the responder allocate what it announces.
    public func bodyLength() -> Result<Int, APIError> {
        guard !contentLength.isEmpty else { return .success(0) }
        guard let length = Int(contentLength), length >= 0 else {
            return .failure(APIError(status: 400, code: "bad_request", message: "invalid Content-Length"))
        }
        guard length <= Limits.requestBodyBytesMax else { return .failure(.payloadTooLarge) }
        return .success(length)
    }

    /// The request, given the body bytes the stream delivered (at most `bodyLength()`); fewer
    /// than announced means the client went away mid-body.
    public func request(body: [UInt8]) -> Result<Request, APIError> {
        let length: Int
        switch bodyLength() {
        case .success(let value): length = value
        case .failure(let error): return .failure(error)
        }
        guard body.count == length else {
            return .failure(APIError(status: 400, code: "bad_request", message: "the request body ended early"))
        }
        return .success(
            Request(
                method: method, path: path, query: query, contentType: contentType,
                idempotencyKey: idempotencyKey, body: body, requestID: requestID, authorization: authorization))
    }

    /// The request without its body: enough to authenticate one whose body could not be read.
    public var withoutBody: Request {
        Request(
            method: method, path: path, query: query, contentType: contentType, idempotencyKey: idempotencyKey,
            requestID: requestID, authorization: authorization)
    }

    /// The route template for logs and metrics when the request could not be read.
    public var routeTemplate: String {
        Route(path: path)?.template ?? Route.unmatchedTemplate
    }
}
