import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP
import Synchronization

/// The REST API as a pure function from a request to a response, given a connection to
/// read from and an executor to write through. No sockets here: the responder feeds it
/// FastCGI requests, the tests feed it values.
public struct WalletAPI: Sendable {
    public let writer: any WriteExecutor
    public let metrics: Metrics
    private let keyUses = KeyUses()
    /// The webhook master key (`WebhookMasterKey`), nil when none is configured: endpoints
    /// are then refused with 503.
    public let webhookMasterKey: [UInt8]?
    /// `WALLET_WEBHOOK_ALLOW_HTTP=1`: development URLs are accepted for endpoints.
    public let webhookAllowsHTTP: Bool

    /// The most webhook endpoints one API key may have.
    public static let webhookEndpointsMax = 16

    public init(writer: any WriteExecutor, metrics: Metrics = Metrics(), webhookMasterKey: [UInt8]? = nil, webhookAllowsHTTP: Bool = false) {
        self.writer = writer
        self.metrics = metrics
        self.webhookMasterKey = webhookMasterKey
        self.webhookAllowsHTTP = webhookAllowsHTTP
    }

    /// What handling a request produced, for the responder to send and log.
    public struct Handled: Sendable {
        public var response: Response
        /// The route template, or `unmatched`, for logs and metrics.
        public var route: String
        /// Ledger rows committed by this request, for the audit log.
        public var ledgerEntries: [LedgerEntry]
        /// What went wrong behind a 503, for the operator's log only (never the client's).
        public var failure: String?
        /// The API key the request was authenticated with, for the request's log line.
        public var apiKey: APIKeyID?
        /// Why a 401 was answered, for the log (the client sees one answer for all reasons).
        public var authenticationFailure: AuthenticationFailure?

        public init(
            response: Response, route: String, ledgerEntries: [LedgerEntry] = [], failure: String? = nil, apiKey: APIKeyID? = nil,
            authenticationFailure: AuthenticationFailure? = nil
        ) {
            self.response = response
            self.route = route
            self.ledgerEntries = ledgerEntries
            self.failure = failure
            self.apiKey = apiKey
            self.authenticationFailure = authenticationFailure
        }
    }

    public func handle(_ request: Request, reader: Store) -> Handled {
        guard request.method == "HEAD" else { return answer(request, reader: reader) }
        // HEAD is the GET without its body: the same work, status and headers (the length
        // included), so a client may check a resource as it would read it.
        var get = request
        get.method = "GET"
        var handled = answer(get, reader: reader)
        handled.response.omitsBody = true
        return handled
    }

    /// Answers a request that could not be read (a bad `Content-Length`, a body that ended
    /// early) with `error`, unless it also lacks a valid key: the 401 comes first, as for
    /// every request.
    public func refuse(_ request: Request, with error: APIError, reader: Store) -> Handled {
        let route = Route(path: request.path)
        switch admit(request, route, reader) {
        case .refused(let handled): return handled
        case .admitted(let caller): return Handled(response: error.response, route: route?.template ?? Route.unmatchedTemplate, apiKey: caller)
        }
    }

    /// Every route but the open ones needs a valid key, checked before anything else (even
    /// whether the path exists): without one, nothing is learned and nothing changes.
    /// Admitted with the caller's key, or with none on an open route.
    private func admit(_ request: Request, _ route: Route?, _ reader: Store) -> Admission {
        guard route?.isOpen != true else { return .admitted(nil) }
        switch authenticate(request, reader) {
        case .success(let key): return .admitted(key)
        case .failure(var handled):
            handled.route = route?.template ?? Route.unmatchedTemplate
            return .refused(handled)
        }
    }

    private enum Admission {
        case admitted(APIKeyID?)
        case refused(Handled)
    }

    private func answer(_ request: Request, reader: Store) -> Handled {
        let route = Route(path: request.path)
        let template = route?.template ?? Route.unmatchedTemplate
        let caller: APIKeyID?
        switch admit(request, route, reader) {
        case .refused(let handled): return handled
        case .admitted(let key): caller = key
        }
        guard let route else {
            return Handled(response: APIError.notFound.response, route: template, apiKey: caller)
        }
        guard route.allowedMethods.contains(request.method) else {
            return Handled(response: APIError.methodNotAllowed(allow: route.allowedMethods).response, route: template, apiKey: caller)
        }
        let outcome: WriteOutcome
        var failure: String?
        do {
            outcome = try dispatch(route, request, reader, caller)
        } catch let error as APIError {
            outcome = WriteOutcome(response: error.response, keep: false)
        } catch {
            outcome = WriteOutcome(response: APIError.unavailable.response, keep: false)
            failure = "\(error)"
        }
        return Handled(response: outcome.response, route: template, ledgerEntries: outcome.ledgerEntries, failure: failure, apiKey: caller)
    }

    /// The key the request authenticates with, or the 401 (or the 503, when the database
    /// cannot say) to answer instead. A live key's use is recorded at most once a minute.
    private func authenticate(_ request: Request, _ reader: Store) -> Authenticated {
        let refused = { (reason: AuthenticationFailure) in
            Handled(response: APIError.unauthenticated.response, route: "", authenticationFailure: reason)
        }
        let key: APIKeySecret
        switch request.bearerKey() {
        case .success(let presented): key = presented
        case .failure(let reason): return .failure(refused(reason))
        }
        let lookup: KeyLookup
        do {
            lookup = try reader.apiKey(key)
        } catch {
            return .failure(Handled(response: APIError.unavailable.response, route: "", failure: "\(error)"))
        }
        switch lookup {
        case .unknown: return .failure(refused(.unknown))
        case .revoked: return .failure(refused(.revoked))
        case .valid(let id, let lastUsedAt):
            let now = Timestamp.now()
            if keyUses.shouldRecord(id, lastUsedAt: lastUsedAt, now: now) {
                // Bookkeeping for `walletctl keys list`: a failure here must not fail the request.
                _ = writer.perform { store in
                    try store.recordAPIKeyUse(id, now: now)
                    return WriteOutcome(response: Response(status: 204, body: ""), keep: true)
                }
            }
            return .success(id)
        }
    }

    private enum Authenticated {
        case success(APIKeyID)
        case failure(Handled)
    }

    private func dispatch(_ route: Route, _ request: Request, _ reader: Store, _ key: APIKeyID?) throws -> WriteOutcome {
        if route.isOpen { return try answerOpen(route, reader) }
        guard let key else { preconditionFailure("a route that needs a key was dispatched without one") }
        let caller = Caller.client(key)
        switch route {
        case .wallets:
            return try createWallet(request, owner: key)
        case .wallet(let id):
            return read(try lookUpWallet(id, caller, reader).json)
        case .balance(let id):
            return try balance(request, of: id, reader, caller)
        case .deposit(let id):
            return try deposit(request, to: id, by: key)
        case .withdraw(let id):
            return try withdraw(request, from: id, by: key)
        case .transactions(let id):
            return try listTransactions(request, of: id, reader, caller)
        case .transaction(let wallet, let id):
            guard let transaction = try reader.transaction(id, of: wallet, visibleTo: caller) else { throw APIError.transactionNotFound }
            return read(transaction.json)
        case .cancel(let wallet, let id):
            return try cancel(id, of: wallet, by: key)
        case .events:
            let query = try EventQuery(request.queryItems)
            return read(
                try reader.events(apiKeyID: key.rawValue, after: query.after, type: query.type, wallet: query.wallet, limit: query.limit)
                    .json)
        case .webhookEndpoints:
            if request.method == "POST" { return try createWebhookEndpoint(request, owner: key) }
            let endpoints = try reader.webhookEndpoints(apiKeyID: key.rawValue)
            return read("{\"results\": [" + endpoints.map { $0.json() }.joined(separator: ", ") + "]}")
        case .webhookEndpoint(let id):
            return try deleteWebhookEndpoint(id, request, owner: key)
        case .health, .metrics:
            preconditionFailure("open routes are answered above")
        }
    }

    /// `/healthz` and `/metrics`: no key (nginx lets only loopback clients reach `/metrics`).
    private func answerOpen(_ route: Route, _ reader: Store) throws -> WriteOutcome {
        switch route {
        case .health:
            _ = try reader.schemaVersion()
            return read("{\"status\": \"ok\"}")
        case .metrics:
            let text = metrics.render(
                transactionCounts: try reader.transactionCounts(), readings: try reader.operatorReadings(now: Timestamp.now()))
            return WriteOutcome(response: Response(status: 200, body: text, contentType: "text/plain; version=0.0.4"), keep: false)
        default:
            preconditionFailure("\(route.template) is not an open route")
        }
    }

    private func read(_ body: String) -> WriteOutcome {
        WriteOutcome(response: Response(status: 200, body: body), keep: false)
    }

    // MARK: - Reads

    /// The wallet a read route names: the one place a route finds its wallet (404 when
    /// there is none).
    private func lookUpWallet(_ id: WalletID, _ caller: Caller, _ reader: Store) throws -> Wallet {
        guard let wallet = try reader.wallet(id, visibleTo: caller) else { throw APIError.walletNotFound }
        return wallet
    }

    /// The balance and held funds at `at` (now without it), from the ledger, in one snapshot.
    private func balance(_ request: Request, of id: WalletID, _ reader: Store, _ caller: Caller) throws -> WriteOutcome {
        let at = try BalanceQuery(request.queryItems).at ?? Timestamp.now()
        return try reader.read {
            let wallet = try lookUpWallet(id, caller, reader)
            let figures = try reader.balance(of: wallet, at: at)
            var object = JSONObject()
            object.add("wallet", wallet.id.text)
            object.add("at", at.rfc3339)
            object.add("balance", figures.balance)
            object.add("held", figures.held)
            return read(object.result)
        }
    }

    private func listTransactions(_ request: Request, of id: WalletID, _ reader: Store, _ caller: Caller) throws -> WriteOutcome {
        let query = try TransactionQuery(request.queryItems)
        let wallet = try lookUpWallet(id, caller, reader)
        let page = try reader.transactions(of: wallet, filter: query.filter, before: query.cursor, limit: query.limit)
        return read(page.json)
    }

    // MARK: - Writes

    private func createWallet(_ request: Request, owner: APIKeyID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        if !request.body.isEmpty {
            // Empty or `{}`; other members are ignored like everywhere else.
            _ = try RequestBody(request)
        }
        return try write(request, key: key, by: owner) { store, now in
            let wallet = try store.createWallet(id: WalletID.random(), owner: owner, now: now)
            return .success((Response(status: 201, body: wallet.json), []))
        }
    }

    private func deposit(_ request: Request, to id: WalletID, by caller: APIKeyID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try RequestBody(request)
        let amount = try body.amount()
        let reference = try body.reference()
        return try write(request, key: key, by: caller) { store, now in
            try store.deposit(to: id, by: .client(caller), amount: amount, idempotencyKey: key?.text, reference: reference, now: now).map { result in
                var object = JSONObject()
                object.add("wallet", json: result.wallet.json)
                object.add("transaction", json: result.transactionJSON)
                return (Response(status: 200, body: object.result), [result.ledgerEntry])
            }
        }
    }

    private func withdraw(_ request: Request, from id: WalletID, by caller: APIKeyID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try RequestBody(request)
        let amount = try body.amount()
        let requested = try body.scheduledFor()
        let reference = try body.reference()
        return try write(request, key: key, by: caller) { store, now in
            // Checked here, after the key lookup: a replay after the time has passed must
            // still get its original answer. `now` is this responder's clock, not the
            // database's: reading PostgreSQL's would cost a round trip per request, and the
            // check only screens out times already past. Processors decide dueness by the
            // database's clock, so a host a few seconds off at most accepts a time that is
            // already due there (paid at once, as without scheduled_for) or refuses one a
            // few seconds ahead.
            if let requested, requested <= now {
                throw APIError.invalidScheduledFor("scheduled_for must be in the future")
            }
            return try store.scheduleWithdrawal(
                from: id, by: .client(caller), amount: amount, scheduledFor: requested ?? now,
                idempotencyKey: key?.text, reference: reference, now: now
            ).map { transaction in
                (Response(status: 201, body: transaction.json), [])
            }
        }
    }

    private func cancel(_ id: Int64, of wallet: WalletID, by caller: APIKeyID) throws -> WriteOutcome {
        try write(nil, key: nil, by: caller) { store, now in
            try store.cancelWithdrawal(id, of: wallet, by: .client(caller), now: now).map { (Response(status: 200, body: $0.json), []) }
        }
    }

    private func createWebhookEndpoint(_ request: Request, owner caller: APIKeyID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try WebhookEndpointBody(RequestBody(request), allowHTTP: webhookAllowsHTTP)
        guard let masterKey = webhookMasterKey else { throw APIError.webhooksUnavailable }
        let owner = caller.rawValue
        // The secret is shown in this answer only. The stored answer of an idempotent retry
        // holds the endpoint without it, and a replay derives it again: no table ever holds
        // it in clear.
        let secret = { @Sendable (endpoint: WebhookEndpoint) in
            WebhookSigning.secret(masterKey: masterKey, endpointID: endpoint.id, nonce: endpoint.nonce)
        }
        let stored: @Sendable (Store, Response) throws -> String = { store, response in
            // Never the answer itself, which holds the secret: without the endpoint to store
            // in its place, the write fails and nothing is kept.
            guard let endpoint = try store.webhookEndpoint(fromStoredBody: response.body, apiKeyID: owner) else {
                preconditionFailure("the endpoint just created is not found in its own transaction")
            }
            return endpoint.json()
        }
        let replayed: @Sendable (Store, String) throws -> String = { store, body in
            guard let endpoint = try store.webhookEndpoint(fromStoredBody: body, apiKeyID: owner) else { return body }
            return endpoint.json(secret: secret(endpoint))
        }
        let create: @Sendable (Store, Timestamp) throws -> Result<(Response, [LedgerEntry]), DomainError> = { store, now in
            guard
                let endpoint = try store.createWebhookEndpoint(
                    apiKeyID: owner, url: body.url, patterns: body.patterns, limit: WalletAPI.webhookEndpointsMax, now: now)
            else { throw APIError.tooManyWebhookEndpoints(WalletAPI.webhookEndpointsMax) }
            return .success((Response(status: 201, body: endpoint.json(secret: secret(endpoint))), []))
        }
        return try write(request, key: key, by: caller, stored: stored, replayed: replayed, create)
    }

    private func deleteWebhookEndpoint(_ id: Int64, _ request: Request, owner caller: APIKeyID) throws -> WriteOutcome {
        let owner = caller.rawValue
        return try write(nil, key: nil, by: caller) { store, now in
            guard try store.deleteWebhookEndpoint(id, apiKeyID: owner, now: now) else { throw APIError.webhookEndpointNotFound }
            return .success((Response(status: 204, body: ""), []))
        }
    }

    /// Runs one write through the executor with the idempotency rules (README, "Idempotency"): a stored
    /// answer for the key is replayed (same request) or refused (different request) before
    /// anything else, in particular before any check that depends on the time; a successful
    /// answer is stored with its effect, in the same transaction; a refused one stores nothing.
    /// Keys are the caller's own: another client's use of the same key is another key.
    private func write(
        _ request: Request?, key: IdempotencyKey?, by caller: APIKeyID,
        stored storedBody: (@Sendable (Store, Response) throws -> String)? = nil,
        replayed: (@Sendable (Store, String) throws -> String)? = nil,
        _ body: @escaping @Sendable (Store, Timestamp) throws -> Result<(Response, [LedgerEntry]), DomainError>
    ) throws -> WriteOutcome {
        // Only a request with a key is ever compared with another: without one, no fingerprint
        // (a route parse and a SHA-256 of the body) is computed.
        let fingerprint = key == nil ? nil : request.map(IdempotencyKey.fingerprint)
        let result = writer.perform { store in
            if let key { try store.lockIdempotencyKey(key.text, of: caller) }
            if let key, let fingerprint, let stored = try store.storedResponse(forKey: key.text, of: caller) {
                guard stored.fingerprint == fingerprint else { return WriteOutcome(response: APIError.idempotencyKeyReused.response, keep: false) }
                let text = try replayed?(store, stored.body) ?? stored.body
                return WriteOutcome(response: Response(status: stored.status, body: text), keep: false)
            }
            let now = Timestamp.now()
            do {
                switch try body(store, now) {
                case .success(let (response, entries)):
                    if let key, let fingerprint {
                        try store.store(
                            StoredResponse(
                                fingerprint: fingerprint, status: response.status,
                                body: try storedBody?(store, response) ?? response.body),
                            forKey: key.text, of: caller, now: now)
                    }
                    return WriteOutcome(response: response, keep: true, ledgerEntries: entries)
                case .failure(let error):
                    return WriteOutcome(response: APIError(error).response, keep: false)
                }
            } catch let error as APIError {
                return WriteOutcome(response: error.response, keep: false)
            }
        }
        return try result.get()
    }
}

/// When each key's use was last recorded by this process, so that a busy client costs one
/// small write a minute, not one per request.
final class KeyUses: Sendable {
    private let recorded = Mutex<[APIKeyID: Timestamp]>([:])

    /// True when the use at `now` should be written: neither the database (`lastUsedAt`)
    /// nor this process has recorded one within `Limits.apiKeyLastUsedIntervalSeconds`.
    func shouldRecord(_ key: APIKeyID, lastUsedAt: Timestamp?, now: Timestamp) -> Bool {
        let interval = Limits.apiKeyLastUsedIntervalSeconds * 1_000_000
        if let lastUsedAt, now.microseconds - lastUsedAt.microseconds < interval { return false }
        return recorded.withLock { recorded in
            if let last = recorded[key], now.microseconds - last.microseconds < interval { return false }
            recorded[key] = now
            return true
        }
    }
}
