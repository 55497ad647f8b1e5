import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP

/// The REST API as a pure function from a request to a response, given a connection to
/// read from and an executor to write through. No sockets here: the responder feeds it
/// FastCGI requests, the tests feed it values.
public struct WalletAPI: Sendable {
    public let writer: any WriteExecutor
    public let metrics: Metrics
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

        public init(response: Response, route: String, ledgerEntries: [LedgerEntry] = [], failure: String? = nil) {
            self.response = response
            self.route = route
            self.ledgerEntries = ledgerEntries
            self.failure = failure
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

    private func answer(_ request: Request, reader: Store) -> Handled {
        guard let route = Route(path: request.path) else {
            return Handled(response: APIError.notFound.response, route: Route.unmatchedTemplate, ledgerEntries: [])
        }
        guard route.allowedMethods.contains(request.method) else {
            return Handled(
                response: APIError.methodNotAllowed(allow: route.allowedMethods).response,
                route: route.template, ledgerEntries: [])
        }
        let outcome: WriteOutcome
        var failure: String?
        do {
            outcome = try dispatch(route, request, reader)
        } catch let error as APIError {
            outcome = WriteOutcome(response: error.response, keep: false)
        } catch {
            outcome = WriteOutcome(response: APIError.unavailable.response, keep: false)
            failure = "\(error)"
        }
        return Handled(response: outcome.response, route: route.template, ledgerEntries: outcome.ledgerEntries, failure: failure)
    }

    private func dispatch(_ route: Route, _ request: Request, _ reader: Store) throws -> WriteOutcome {
        switch route {
        case .wallets:
            return try createWallet(request)
        case .wallet(let id):
            guard let wallet = try reader.wallet(id) else { throw APIError.walletNotFound }
            return read(wallet.json)
        case .deposit(let id):
            return try deposit(request, to: id)
        case .withdraw(let id):
            return try withdraw(request, from: id)
        case .transactions(let id):
            return try listTransactions(request, of: id, reader)
        case .transaction(let wallet, let id):
            guard let transaction = try reader.transaction(id, of: wallet) else { throw APIError.transactionNotFound }
            return read(transaction.json)
        case .cancel(let wallet, let id):
            return try cancel(id, of: wallet)
        case .events:
            let query = try EventQuery(request.queryItems)
            return read(
                try reader.events(apiKeyID: callerKeyID(request), after: query.after, type: query.type, wallet: query.wallet, limit: query.limit)
                    .json)
        case .webhookEndpoints:
            if request.method == "POST" { return try createWebhookEndpoint(request) }
            let endpoints = try reader.webhookEndpoints(apiKeyID: callerKeyID(request))
            return read("{\"results\": [" + endpoints.map { $0.json() }.joined(separator: ", ") + "]}")
        case .webhookEndpoint(let id):
            return try deleteWebhookEndpoint(id, request)
        case .health:
            _ = try reader.schemaVersion()
            return read("{\"status\": \"ok\"}")
        case .metrics:
            let text = metrics.render(
                transactionCounts: try reader.transactionCounts(), readings: try reader.operatorReadings(now: Timestamp.now()))
            return WriteOutcome(response: Response(status: 200, body: text, contentType: "text/plain; version=0.0.4"), keep: false)
        }
    }

    private func read(_ body: String) -> WriteOutcome {
        WriteOutcome(response: Response(status: 200, body: body), keep: false)
    }

    /// The API key the request was authenticated with: every event, endpoint and delivery is
    /// scoped to it. The one place that knows; 0 until API keys land.
    private func callerKeyID(_ request: Request) -> Int64 {
        0
    }

    // MARK: - Reads

    private func listTransactions(_ request: Request, of id: WalletID, _ reader: Store) throws -> WriteOutcome {
        let query = try TransactionQuery(request.queryItems)
        guard let wallet = try reader.wallet(id) else { throw APIError.walletNotFound }
        let page = try reader.transactions(of: wallet, filter: query.filter, before: query.cursor, limit: query.limit)
        return read(page.json)
    }

    // MARK: - Writes

    private func createWallet(_ request: Request) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        if !request.body.isEmpty {
            // Empty or `{}`; other members are ignored like everywhere else.
            _ = try RequestBody(request)
        }
        return try write(request, key: key) { store, now in
            let wallet = try store.createWallet(id: WalletID.random(), now: now)
            return .success((Response(status: 201, body: wallet.json), []))
        }
    }

    private func deposit(_ request: Request, to id: WalletID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try RequestBody(request)
        let amount = try body.amount()
        let reference = try body.reference()
        return try write(request, key: key) { store, now in
            try store.deposit(to: id, amount: amount, idempotencyKey: key?.text, reference: reference, now: now).map { result in
                var object = JSONObject()
                object.add("wallet", json: result.wallet.json)
                object.add("transaction", json: result.transaction.json)
                return (Response(status: 200, body: object.result), [result.ledgerEntry])
            }
        }
    }

    private func withdraw(_ request: Request, from id: WalletID) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try RequestBody(request)
        let amount = try body.amount()
        let requested = try body.scheduledFor()
        let reference = try body.reference()
        return try write(request, key: key) { store, now in
            // Checked here, after the key lookup: a replay after the time has passed must
            // still get its original answer.
            if let requested, requested <= now {
                throw APIError.invalidScheduledFor("scheduled_for must be in the future")
            }
            return try store.scheduleWithdrawal(
                from: id, amount: amount, scheduledFor: requested ?? now,
                idempotencyKey: key?.text, reference: reference, now: now
            ).map { transaction in
                (Response(status: 201, body: transaction.json), [])
            }
        }
    }

    private func cancel(_ id: Int64, of wallet: WalletID) throws -> WriteOutcome {
        try write(nil, key: nil) { store, now in
            try store.cancelWithdrawal(id, of: wallet, now: now).map { (Response(status: 200, body: $0.json), []) }
        }
    }

    private func createWebhookEndpoint(_ request: Request) throws -> WriteOutcome {
        let key = try IdempotencyKey(header: request.idempotencyKey)
        let body = try WebhookEndpointBody(RequestBody(request), allowHTTP: webhookAllowsHTTP)
        guard let masterKey = webhookMasterKey else { throw APIError.webhooksUnavailable }
        let owner = callerKeyID(request)
        // The secret is shown in this answer only. The stored answer of an idempotent retry
        // holds the endpoint without it, and a replay derives it again: no table ever holds
        // it in clear.
        let secret = { @Sendable (endpoint: WebhookEndpoint) in
            WebhookSigning.secret(masterKey: masterKey, endpointID: endpoint.id, nonce: endpoint.nonce)
        }
        let stored: @Sendable (Store, Response) throws -> String = { store, response in
            try store.webhookEndpoint(fromStoredBody: response.body, apiKeyID: owner)?.json() ?? response.body
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
        return try write(request, key: key, stored: stored, replayed: replayed, create)
    }

    private func deleteWebhookEndpoint(_ id: Int64, _ request: Request) throws -> WriteOutcome {
        let owner = callerKeyID(request)
        return try write(nil, key: nil) { store, now in
            guard try store.deleteWebhookEndpoint(id, apiKeyID: owner, now: now) else { throw APIError.webhookEndpointNotFound }
            return .success((Response(status: 204, body: ""), []))
        }
    }

    /// Runs one write through the executor with the idempotency rules (README, "Idempotency"): a stored
    /// answer for the key is replayed (same request) or refused (different request) before
    /// anything else, in particular before any check that depends on the time; a successful
    /// answer is stored with its effect, in the same transaction; a refused one stores nothing.
    private func write(
        _ request: Request?, key: IdempotencyKey?,
        stored storedBody: (@Sendable (Store, Response) throws -> String)? = nil,
        replayed: (@Sendable (Store, String) throws -> String)? = nil,
        _ body: @escaping @Sendable (Store, Timestamp) throws -> Result<(Response, [LedgerEntry]), DomainError>
    ) throws -> WriteOutcome {
        let fingerprint = request.map(IdempotencyKey.fingerprint)
        let result = writer.perform { store in
            if let key, let fingerprint, let stored = try store.storedResponse(forKey: key.text) {
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
                            forKey: key.text, now: now)
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
