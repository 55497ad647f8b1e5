import WalletDomain
import WalletJSON
import WalletPlatform

/// The event outbox, the feed, webhook endpoints and their deliveries (README, "Events and
/// webhooks").
///
/// Owner scoping: every read and write here that a client reaches takes the caller's API key
/// id. Events belong to the key that owns their wallet now (`wallets.api_key_id`: a wallet
/// handed to another key takes its history along); endpoints to the key that created them,
/// and an endpoint receives only the events of its own key's wallets.
extension Store {
    // MARK: - The outbox

    /// Writes one event in the caller's transaction: the change and its event commit or roll
    /// back together. `data` is the object as the API shows it now.
    func appendEvent(_ type: EventType, walletRowID: Int64, transactionID: Int64?, data: String, now: Timestamp) throws {
        requireTransaction()
        try database.run(
            "INSERT INTO events (type, wallet_id, transaction_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            [.text(type.rawValue), .integer(walletRowID), SQLValue(transactionID), .integer(now.microseconds), .text(data)])
    }

    /// The same, for a transaction whose wallet row is not at hand.
    func appendEvent(_ type: EventType, transactionID: Int64, data: String, now: Timestamp) throws {
        requireTransaction()
        try database.run(
            """
            INSERT INTO events (type, wallet_id, transaction_id, created_at, data)
            SELECT ?1, wallet_id, id, ?3, ?4 FROM transactions WHERE id = ?2
            """,
            [.text(type.rawValue), .integer(transactionID), .integer(now.microseconds), .text(data)])
    }

    /// A withdrawal's event after a processor change: the transaction as it now reads, with
    /// the members the type adds (README, "Events and webhooks").
    func appendWithdrawalEvent(
        _ type: EventType, transactionID: Int64, now: Timestamp, attempt: Int64?, outcome: String?,
        nextAttemptAt: Timestamp? = nil, refund: LedgerEntry? = nil
    ) throws {
        guard let transaction = try transaction(transactionID) else {
            preconditionFailure("withdrawal \(transactionID) vanished inside our own write transaction")
        }
        var object = transaction.jsonObject
        object.add("attempt", attempt)
        object.add("outcome", outcome)
        switch type {
        case .withdrawalRetrying, .withdrawalOutcomeUnknown:
            object.add("next_attempt_at", nextAttemptAt?.rfc3339)
        case .withdrawalFailed:
            if let refund {
                var inner = JSONObject()
                inner.add("amount", refund.delta)
                inner.add("balance_after", refund.balanceAfter.minorUnits)
                object.add("refund", json: inner.result)
            } else {
                object.add("refund", json: "null")
            }
        default:
            break
        }
        try appendEvent(type, transactionID: transactionID, data: object.result, now: now)
    }

    static func event(from row: Row) throws -> Event {
        guard let type = EventType(rawValue: row.text("type")), let wallet = WalletID(row.text("uuid")) else {
            throw DatabaseError(code: 0, message: "corrupt event \(row.integer("id"))")
        }
        return Event(
            id: row.integer("id"), type: type, createdAt: Timestamp(microseconds: row.integer("created_at")), wallet: wallet,
            data: row.text("data"))
    }

    /// The id up to which the event feed may be read: no event with a smaller id can still
    /// appear (`Database.settledMaxID(of:)`). A client that reads past an id still in flight
    /// on PostgreSQL and asks for what follows it would never see that event.
    public func settledEventID() throws -> Int64 {
        try database.settledMaxID(of: "events")
    }

    /// The caller's settled events after `after`, in id order, at most `limit`. Outside any
    /// transaction (`settledEventID()`).
    public func events(apiKeyID: Int64, after: Int64, type: EventType?, wallet: WalletID?, limit: Int) throws -> EventPage {
        let settled = try settledEventID()
        var rows = try database.query(
            """
            SELECT e.id, e.type, e.created_at, w.uuid, e.data FROM events e JOIN wallets w ON w.id = e.wallet_id
            WHERE e.id > ?1 AND e.id <= ?6 AND (e.type = ?2 OR ?2 IS NULL) AND (w.uuid = ?3 OR ?3 IS NULL) AND w.api_key_id = ?5
            ORDER BY e.id LIMIT ?4
            """,
            [
                .integer(after), SQLValue(type?.rawValue), SQLValue(wallet?.text), .integer(Int64(limit) + 1),
                .integer(apiKeyID), .integer(settled),
            ],
            Store.event)
        var next: Int64?
        if rows.count > limit {
            rows.removeLast()
            next = rows.last?.id
        }
        return EventPage(events: rows, nextAfter: next)
    }

    /// Every event of a transaction or a wallet, for tests and the operator.
    public func events(ofTransaction id: Int64) throws -> [Event] {
        try database.query(
            """
            SELECT e.id, e.type, e.created_at, w.uuid, e.data FROM events e JOIN wallets w ON w.id = e.wallet_id
            WHERE e.transaction_id = ?1 ORDER BY e.id
            """, [.integer(id)], Store.event)
    }

    public func eventCount() throws -> Int64 {
        try database.scalarInteger("SELECT count(*) FROM events") ?? 0
    }

    // MARK: - Endpoints

    static func endpoint(from row: Row) throws -> WebhookEndpoint {
        guard case .array(let values)? = try? JSONParser.parse(Array(row.text("events").utf8), depthMax: 4) else {
            throw DatabaseError(code: 0, message: "corrupt webhook endpoint \(row.integer("id"))")
        }
        let patterns = values.compactMap { value -> String? in
            if case .string(let text) = value { return text }
            return nil
        }
        return WebhookEndpoint(
            id: row.integer("id"), apiKeyID: row.integer("api_key_id"), url: row.text("url"), patterns: patterns,
            nonce: row.text("nonce"), createdAt: Timestamp(microseconds: row.integer("created_at")))
    }

    static let endpointColumns = "id, api_key_id, url, events, nonce, created_at"

    /// The caller's endpoints that are not deleted, oldest first.
    public func webhookEndpoints(apiKeyID: Int64) throws -> [WebhookEndpoint] {
        try database.query(
            "SELECT \(Store.endpointColumns) FROM webhook_endpoints WHERE api_key_id = ?1 AND deleted_at IS NULL ORDER BY id",
            [.integer(apiKeyID)], Store.endpoint)
    }

    /// Creates an endpoint for the caller, or nil when the caller has `limit` already. It
    /// receives the events written after it: those above the settled id now (an event with
    /// a smaller id still in flight is waited for, and goes to the endpoint's predecessors'
    /// fan-out, not lost between the two). The caller's key is locked, so two creations at
    /// once cannot both pass the limit.
    public func createWebhookEndpoint(apiKeyID: Int64, url: String, patterns: [String], limit: Int, now: Timestamp) throws
        -> WebhookEndpoint?
    {
        requireTransaction()
        _ = try database.queryFirst("SELECT id FROM api_keys WHERE id = ?1\(database.lockClause(.update))", [.integer(apiKeyID)]) { _ in () }
        let count =
            try database.scalarInteger(
                "SELECT count(*) FROM webhook_endpoints WHERE api_key_id = ?1 AND deleted_at IS NULL", [.integer(apiKeyID)]) ?? 0
        guard count < Int64(limit) else { return nil }
        let last = try settledEventID()
        let events = "[" + patterns.map { JSONWriter.quoted($0) }.joined(separator: ", ") + "]"
        let created = try database.queryFirst(
            """
            INSERT INTO webhook_endpoints (api_key_id, url, events, nonce, created_at, fanned_out_through)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING \(Store.endpointColumns)
            """,
            [
                .integer(apiKeyID), .text(url), .text(events), .text(WebhookSigning.nonce()), .integer(now.microseconds),
                .integer(last),
            ], Store.endpoint)
        guard let created else { preconditionFailure("INSERT ... RETURNING returned no row") }
        return created
    }

    /// Deletes the caller's endpoint: no delivery of it is made after this commits (one
    /// already in flight may still arrive), and its pending deliveries become failed.
    /// Returns false when the caller has no such endpoint.
    public func deleteWebhookEndpoint(_ id: Int64, apiKeyID: Int64, now: Timestamp) throws -> Bool {
        requireTransaction()
        let changed = try database.run(
            "UPDATE webhook_endpoints SET deleted_at = ?3 WHERE id = ?1 AND api_key_id = ?2 AND deleted_at IS NULL",
            [.integer(id), .integer(apiKeyID), .integer(now.microseconds)])
        guard changed == 1 else { return false }
        try database.run(
            """
            UPDATE webhook_deliveries SET state = ?2, next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL,
                last_error = 'endpoint deleted', finished_at = ?3
            WHERE endpoint_id = ?1 AND state = ?4
            """,
            [.integer(id), SQLValue(DeliveryState.failed), .integer(now.microseconds), SQLValue(DeliveryState.pending)])
        return true
    }

    // MARK: - Deliveries

    /// Whether a notifier pass has anything to do: a live endpoint, or a pending delivery.
    /// Read without the write lock, so that an idle notifier never contends with writers.
    public func hasWebhookWork() throws -> Bool {
        try database.scalarInteger(
            """
            SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE deleted_at IS NULL)
                OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE state = ?1)
            """, [SQLValue(DeliveryState.pending)]) == 1
    }

    /// Turns events written since the last fan-out, up to `settled` (`settledEventID()`, read
    /// before the transaction), into deliveries, for every endpoint whose patterns match, up
    /// to `batch` events per endpoint (one bounded transaction; call it again while
    /// `behind`). Returns the deliveries created, and whether an endpoint has events left to
    /// look at. The endpoints are locked: two notifiers fan out one after the other.
    @discardableResult
    public func fanOutEvents(now: Timestamp, settled newest: Int64, batch: Int = 10_000) throws -> (created: Int, behind: Bool) {
        requireTransaction()
        let endpoints = try database.query(
            """
            SELECT \(Store.endpointColumns), fanned_out_through FROM webhook_endpoints WHERE deleted_at IS NULL
            ORDER BY id\(database.lockClause(.update))
            """
        ) { (try Store.endpoint(from: $0), $0.integer("fanned_out_through")) }
        guard !endpoints.isEmpty else { return (0, false) }
        var created = 0
        var behind = false
        for (endpoint, through) in endpoints where through < newest {
            let patterns = endpoint.patterns.compactMap(EventPattern.init)
            // An endpoint receives only the events of its own key's wallets.
            let events = try database.query(
                """
                SELECT e.id, e.type FROM events e JOIN wallets w ON w.id = e.wallet_id
                WHERE e.id > ?1 AND e.id <= ?4 AND w.api_key_id = ?3 ORDER BY e.id LIMIT ?2
                """, [.integer(through), .integer(Int64(batch)), .integer(endpoint.apiKeyID), .integer(newest)]
            ) { ($0.integer(0), EventType(rawValue: $0.text(1))) }
            for (eventID, type) in events {
                guard let type, EventPattern.anyMatches(patterns, type) else { continue }
                created += try database.run(
                    """
                    INSERT INTO webhook_deliveries (endpoint_id, event_id, state, created_at, next_attempt_at)
                    VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING
                    """, [.integer(endpoint.id), .integer(eventID), SQLValue(DeliveryState.pending), .integer(now.microseconds)])
            }
            let reached = events.count < batch ? newest : (events.last?.0 ?? through)
            behind = behind || reached < newest
            try database.run("UPDATE webhook_endpoints SET fanned_out_through = ?2 WHERE id = ?1", [.integer(endpoint.id), .integer(reached)])
        }
        return (created, behind)
    }

    /// Claims, for up to `endpoints` endpoints not in `excluding`, the endpoint's head of
    /// line and the pending deliveries right behind it (up to `window` in all, in event
    /// order), when the head is due and no live lease holds it. Per endpoint, deliveries go
    /// out in event order, one at a time: a delivery not yet delivered holds back the
    /// endpoint's later ones, and no other endpoint's.
    public func claimDeliveries(
        owner: String, now: Timestamp, leaseUntil: Timestamp, endpoints: Int, window: Int, excluding: Set<Int64>
    ) throws -> [[ClaimedDelivery]] {
        requireTransaction()
        let heads = try database.query(
            """
            SELECT d.endpoint_id, min(d.event_id) AS event_id FROM webhook_deliveries d
            WHERE d.state = ?1 GROUP BY d.endpoint_id
            """, [SQLValue(DeliveryState.pending)]
        ) { ($0.integer(0), $0.integer(1)) }
        var claimed: [[ClaimedDelivery]] = []
        for (endpointID, headEvent) in heads where !excluding.contains(endpointID) {
            if claimed.count >= endpoints { break }
            // One notifier claims an endpoint at a time: another one's claim holds the row
            // until it commits its leases, and is passed over.
            guard
                try database.queryFirst(
                    "SELECT id FROM webhook_endpoints WHERE id = ?1\(database.lockClause(.update, skipLocked: true))", [.integer(endpointID)],
                    { _ in () }) != nil
            else { continue }
            let rows = try database.query(
                """
                SELECT d.id, d.event_id, d.attempts, d.created_at, d.next_attempt_at, d.lease_until, p.url, p.nonce,
                       e.type, e.created_at AS event_created_at, w.uuid, e.data
                FROM webhook_deliveries d JOIN webhook_endpoints p ON p.id = d.endpoint_id
                JOIN events e ON e.id = d.event_id JOIN wallets w ON w.id = e.wallet_id
                WHERE d.endpoint_id = ?1 AND d.state = ?2 AND d.event_id >= ?3 AND p.deleted_at IS NULL
                ORDER BY d.event_id LIMIT ?4
                """, [.integer(endpointID), SQLValue(DeliveryState.pending), .integer(headEvent), .integer(Int64(window))]
            ) { row -> (ClaimedDelivery, Bool) in
                guard let type = EventType(rawValue: row.text("type")), let wallet = WalletID(row.text("uuid")) else {
                    throw DatabaseError(code: 0, message: "corrupt delivery \(row.integer("id"))")
                }
                let event = Event(
                    id: row.integer("event_id"), type: type, createdAt: Timestamp(microseconds: row.integer("event_created_at")),
                    wallet: wallet, data: row.text("data"))
                let ready =
                    (row.optionalInteger("next_attempt_at") ?? Int64.max) <= now.microseconds
                    && (row.optionalInteger("lease_until") ?? 0) <= now.microseconds
                return (
                    ClaimedDelivery(
                        id: row.integer("id"), endpointID: endpointID, url: row.text("url"), endpointNonce: row.text("nonce"),
                        eventID: event.id, body: event.json, attempts: row.integer("attempts"),
                        createdAt: Timestamp(microseconds: row.integer("created_at")), leaseUntil: leaseUntil), ready
                )
            }
            // The run of ready deliveries from the head: the head must be ready, and the
            // window stops at the first one that is not.
            let run = Array(rows.prefix { $0.1 }.map(\.0))
            guard !run.isEmpty else { continue }
            for delivery in run {
                try database.run(
                    "UPDATE webhook_deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
                    [.integer(delivery.id), .text(owner), .integer(leaseUntil.microseconds)])
            }
            claimed.append(run)
        }
        return claimed
    }

    /// Records what became of claimed deliveries, for those `owner` still holds. A
    /// delivery not delivered is due again after `retryAfter(attempts)` microseconds, or
    /// failed once it is older than `giveUpMicroseconds`.
    public func recordDeliveries(
        _ results: [(ClaimedDelivery, DeliveryResult)], owner: String, now: Timestamp, giveUpMicroseconds: Int64,
        retryAfter: (Int64) -> Int64
    ) throws {
        requireTransaction()
        for (delivery, result) in results {
            let holder: [SQLValue] = [.integer(delivery.id), .text(owner), SQLValue(DeliveryState.pending)]
            switch result {
            case .delivered(let status):
                try database.run(
                    """
                    UPDATE webhook_deliveries SET state = ?4, attempts = attempts + 1, next_attempt_at = NULL, lease_owner = NULL,
                        lease_until = NULL, last_attempt_at = ?5, last_status = ?6, last_error = NULL, finished_at = ?5
                    WHERE id = ?1 AND lease_owner = ?2 AND state = ?3
                    """, holder + [SQLValue(DeliveryState.delivered), .integer(now.microseconds), .integer(status)])
            case .notDelivered(let status, let error):
                let attempts = delivery.attempts + 1
                let giveUp = now.microseconds - delivery.createdAt.microseconds >= giveUpMicroseconds
                try database.run(
                    """
                    UPDATE webhook_deliveries SET state = ?4, attempts = attempts + 1, next_attempt_at = ?5, lease_owner = NULL,
                        lease_until = NULL, last_attempt_at = ?6, last_status = ?7, last_error = ?8, finished_at = ?9
                    WHERE id = ?1 AND lease_owner = ?2 AND state = ?3
                    """,
                    holder + [
                        SQLValue(giveUp ? DeliveryState.failed : DeliveryState.pending),
                        giveUp ? .null : .integer(now.microseconds + max(1, retryAfter(attempts))), .integer(now.microseconds),
                        SQLValue(status), .text(String(error.prefix(500))), giveUp ? .integer(now.microseconds) : .null,
                    ])
            case .notTried:
                try database.run(
                    "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2 AND state = ?3",
                    holder)
            }
        }
    }

    /// Deliveries, newest first; only failed ones (given up) and failing ones (pending after
    /// an attempt that did not deliver) with `failedOnly`.
    public func deliveries(failedOnly: Bool, limit: Int) throws -> [DeliveryRecord] {
        try database.query(
            """
            SELECT d.id, d.endpoint_id, p.url, d.event_id, e.type, d.state, d.attempts, d.next_attempt_at, d.last_status,
                   d.last_error, d.created_at
            FROM webhook_deliveries d JOIN webhook_endpoints p ON p.id = d.endpoint_id JOIN events e ON e.id = d.event_id
            WHERE ?1 = 0 OR d.state = ?2 OR (d.state = ?3 AND d.attempts > 0)
            ORDER BY d.id DESC LIMIT ?4
            """,
            [.integer(failedOnly ? 1 : 0), SQLValue(DeliveryState.failed), SQLValue(DeliveryState.pending), .integer(Int64(limit))]
        ) { row in
            guard let type = EventType(rawValue: row.text("type")), let state = DeliveryState(rawValue: row.text("state")) else {
                throw DatabaseError(code: 0, message: "corrupt delivery \(row.integer("id"))")
            }
            return DeliveryRecord(
                id: row.integer("id"), endpointID: row.integer("endpoint_id"), url: row.text("url"), eventID: row.integer("event_id"),
                eventType: type, state: state, attempts: row.integer("attempts"),
                nextAttemptAt: row.optionalInteger("next_attempt_at").map(Timestamp.init(microseconds:)),
                lastStatus: row.optionalInteger("last_status"), lastError: row.optionalText("last_error"),
                createdAt: Timestamp(microseconds: row.integer("created_at")))
        }
    }

    /// Queues a delivery again, due now, with a fresh give-up age: it goes out before its
    /// endpoint's later pending deliveries (it has the lowest event id). False when there is
    /// no such delivery, it is pending already, or its endpoint is deleted.
    public func redeliver(_ id: Int64, now: Timestamp) throws -> Bool {
        requireTransaction()
        return try database.run(
            """
            UPDATE webhook_deliveries SET state = ?2, next_attempt_at = ?3, created_at = ?3, lease_owner = NULL, lease_until = NULL,
                finished_at = NULL
            WHERE id = ?1 AND state <> ?2
              AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE deleted_at IS NULL)
            """, [.integer(id), SQLValue(DeliveryState.pending), .integer(now.microseconds)]) == 1
    }

    /// Pending deliveries whose last attempt did not deliver, and deliveries given up:
    /// the `/metrics` gauges.
    func webhookDeliveryHealth() throws -> (failing: Int64, failed: Int64) {
        try database.queryFirst(
            """
            SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = ?1 AND attempts > 0),
                   (SELECT count(*) FROM webhook_deliveries WHERE state = ?2)
            """, [SQLValue(DeliveryState.pending), SQLValue(DeliveryState.failed)]
        ) { ($0.integer(0), $0.integer(1)) } ?? (0, 0)
    }
}

extension Store {
    /// The endpoint a stored creation answer names (its `id`), if it is the caller's: what an
    /// idempotent replay of the creation renders again with its secret.
    public func webhookEndpoint(fromStoredBody body: String, apiKeyID: Int64) throws -> WebhookEndpoint? {
        guard case .object(let members)? = try? JSONParser.parse(Array(body.utf8), depthMax: 4), let id = members["id"]?.integer else {
            return nil
        }
        return try database.queryFirst(
            "SELECT \(Store.endpointColumns) FROM webhook_endpoints WHERE id = ?1 AND api_key_id = ?2", [.integer(id), .integer(apiKeyID)],
            Store.endpoint)
    }
}
