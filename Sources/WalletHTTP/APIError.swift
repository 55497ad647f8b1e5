import WalletDomain
import WalletJSON
import WalletPlatform

/// An error as the contract shows it: a status and `{"error": {"code", "message", "field"?}}`.
/// Every error response of the responder is made here, so the shape cannot drift.
public struct APIError: Error, Equatable, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public var field: String?
    public var allow: String?

    public init(status: Int, code: String, message: String, field: String? = nil, allow: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.allow = allow
    }

    public var response: Response {
        var inner = JSONObject()
        inner.add("code", code)
        inner.add("message", message)
        if let field { inner.add("field", field) }
        var outer = JSONObject()
        outer.add("error", json: inner.result)
        var headers: [(name: String, value: String)] = []
        if let allow { headers.append((name: "Allow", value: allow)) }
        if status == 401 { headers.append((name: "WWW-Authenticate", value: APIError.bearerChallenge)) }
        return Response(status: status, body: outer.result, headers: headers)
    }

    /// The challenge of every 401 (RFC 6750): one answer whatever was wrong with the key.
    public static let bearerChallenge = #"Bearer realm="wallet""#

    /// Missing, malformed, unknown or revoked: the client learns only that the request
    /// needs a valid key (the log says which).
    public static let unauthenticated = APIError(
        status: 401, code: "unauthenticated", message: "send a valid API key as Authorization: Bearer <key>")

    // MARK: - The catalogue

    public static let notFound = APIError(status: 404, code: "not_found", message: "no such resource")
    public static let walletNotFound = APIError(status: 404, code: "not_found", message: "no wallet with this id")
    public static let transactionNotFound = APIError(status: 404, code: "not_found", message: "no transaction with this id in this wallet")

    public static func methodNotAllowed(allow: [String]) -> APIError {
        APIError(
            status: 405, code: "method_not_allowed", message: "this path accepts \(allow.joined(separator: ", "))",
            allow: allow.joined(separator: ", "))
    }

    public static let unsupportedMediaType = APIError(
        status: 415, code: "unsupported_media_type", message: "send the body as application/json")
    public static let payloadTooLarge = APIError(
        status: 413, code: "payload_too_large", message: "the request body is larger than \(Limits.requestBodyBytesMax) bytes")

    public static func invalidJSON(_ detail: String) -> APIError {
        APIError(status: 400, code: "invalid_json", message: "the body must be a JSON object: \(detail)")
    }

    public static let invalidAmount = APIError(
        status: 400, code: "invalid_amount",
        message: "amount must be a JSON integer from 1 to \(Limits.amountMinorUnitsMax) (minor units)", field: "amount")

    public static func invalidScheduledFor(_ detail: String) -> APIError {
        APIError(status: 400, code: "invalid_scheduled_for", message: detail, field: "scheduled_for")
    }

    public static let invalidAt = APIError(
        status: 400, code: "invalid_at", message: "at must be an RFC 3339 time with an offset, such as 2026-02-15T15:00:00Z",
        field: "at")

    public static let invalidReference = APIError(
        status: 400, code: "invalid_reference", message: "reference must be 1 to \(Reference.bytesMax) printable ASCII characters",
        field: "reference")

    public static func invalidURL(_ detail: String) -> APIError {
        APIError(status: 400, code: "invalid_url", message: detail, field: "url")
    }

    public static func invalidEvents(_ detail: String) -> APIError {
        APIError(status: 400, code: "invalid_events", message: detail, field: "events")
    }

    public static let webhookEndpointNotFound = APIError(status: 404, code: "not_found", message: "no webhook endpoint with this id")

    public static func tooManyWebhookEndpoints(_ limit: Int) -> APIError {
        APIError(status: 422, code: "too_many_webhook_endpoints", message: "an API key may have at most \(limit) webhook endpoints")
    }

    /// No webhook master key is configured (README, "Webhooks"): endpoints cannot be given a
    /// secret, so none is created.
    public static let webhooksUnavailable = APIError(
        status: 503, code: "webhooks_unavailable", message: "webhooks are not configured on this service (no master key)")

    public static func invalidQuery(field: String, _ detail: String) -> APIError {
        APIError(status: 400, code: "invalid_query", message: detail, field: field)
    }

    public static let invalidIdempotencyKey = APIError(
        status: 400, code: "invalid_idempotency_key",
        message: "Idempotency-Key must be 1 to \(Limits.idempotencyKeyBytesMax) printable ASCII characters")

    public static let idempotencyKeyReused = APIError(
        status: 422, code: "idempotency_key_reused",
        message: "this Idempotency-Key was used for a different request")

    public static let balanceOverflow = APIError(
        status: 422, code: "balance_overflow", message: "the deposit would take the balance past the largest amount a wallet can hold",
        field: "amount")

    public static func notCancelable(_ status: TransactionStatus) -> APIError {
        APIError(status: 409, code: "not_cancelable", message: "only a PENDING withdrawal can be canceled; this one is \(status.rawValue)")
    }

    /// The database could not be reached or did not answer in time. Nothing was changed
    /// (the transaction rolled back), so the client may retry with the same key.
    public static let unavailable = APIError(
        status: 503, code: "service_unavailable", message: "the service cannot complete requests right now; retry later")

    public init(_ error: DomainError) {
        switch error {
        case .walletNotFound: self = .walletNotFound
        case .transactionNotFound: self = .transactionNotFound
        case .balanceOverflow: self = .balanceOverflow
        case .notCancelable(let status): self = .notCancelable(status)
        case .idempotencyKeyReused: self = .idempotencyKeyReused
        }
    }
}
