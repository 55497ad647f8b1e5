import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private let http500 = BankTransport.answered(status: 500, body: Array(#"{"error": "internal"}"#.utf8))

/// The event types of one transaction, in id order.
private func types(_ store: Store, _ transaction: Int64) throws -> [EventType] {
    try store.events(ofTransaction: transaction).map(\.type)
}

private func data(_ event: Event) -> [String: JSONValue] {
    guard case .object(let members)? = try? JSONParser.parse(Array(event.data.utf8)) else { return [:] }
    return members
}

@Suite("Events")
struct EventsTests {
    @Test("each API change writes exactly one event of its type, with the object the API answered")
    func apiChangesWriteOneEventEach() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        #expect(try fixture.count("SELECT count(*) FROM events WHERE type = 'wallet.created'") == 1)
        let deposit = fixture.send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": 500, "reference": "inv-1"}"#)
        #expect(deposit.status == 200)
        let depositID = try #require(deposit.json["transaction"]?["id"]?.integer)
        let events = try fixture.reader.events(ofTransaction: depositID)
        #expect(events.map(\.type) == [.depositCompleted])
        // The event's data is the transaction exactly as the answer showed it.
        let answered = try #require(deposit.json["transaction"])
        #expect((try? JSONParser.parse(Array(events[0].data.utf8))) == answered)
        #expect(answered["reference"]?.string == "inv-1")

        let withdrawal = fixture.send(
            "POST", "/wallets/\(wallet)/withdraw", json: #"{"amount": 100, "scheduled_for": "2999-01-01T00:00:00Z", "reference": "po-7"}"#)
        let withdrawalID = try #require(withdrawal.json["id"]?.integer)
        #expect(fixture.send("POST", "/wallets/\(wallet)/transactions/\(withdrawalID)/cancel").status == 200)
        #expect(try types(fixture.reader, withdrawalID) == [.withdrawalScheduled, .withdrawalCanceled])
        let canceled = try fixture.reader.events(ofTransaction: withdrawalID)[1]
        #expect(data(canceled)["status"]?.string == "CANCELED")
        #expect(data(canceled)["reference"]?.string == "po-7")
        // A second cancel changes nothing and writes nothing.
        #expect(fixture.send("POST", "/wallets/\(wallet)/transactions/\(withdrawalID)/cancel").status == 409)
        #expect(try fixture.count("SELECT count(*) FROM events") == 4)
    }

    @Test("a refused write leaves no event; an idempotent replay writes none")
    func refusedWritesLeaveNoEvent() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        try fillNearMaximum(fixture.database.store, wallet)
        let before = try fixture.count("SELECT count(*) FROM events")
        #expect(fixture.deposit(wallet, 1_000_000_000_000_000).status == 422)
        #expect(fixture.send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": 1, "reference": ""}"#).status == 400)
        #expect(try fixture.count("SELECT count(*) FROM events") == before)
        let other = try fixture.createWallet()
        #expect(fixture.deposit(other, 5, key: "k1").status == 200)
        let once = try fixture.count("SELECT count(*) FROM events")
        #expect(fixture.deposit(other, 5, key: "k1").status == 200)
        #expect(try fixture.count("SELECT count(*) FROM events") == once)
    }

    @Test("the processor writes one event per change: processing, retrying, completed")
    func processorPaidAfterRetries() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        fixture.deposit(wallet, 1_000)
        let id = try fixture.dueWithdrawal(wallet, 300)
        let bank = ScriptedBank(byAttempt: [.failed, http500, .paid])
        for _ in 0..<4 { try runPass(fixture.database.store, bank) }
        #expect(
            try types(fixture.reader, id) == [
                .withdrawalScheduled, .withdrawalProcessing, .withdrawalRetrying, .withdrawalRetrying, .withdrawalCompleted,
            ])
        let events = try fixture.reader.events(ofTransaction: id)
        #expect(data(events[2])["attempt"]?.integer == 1)
        #expect(data(events[2])["outcome"]?.string == "declined")
        #expect(data(events[2])["next_attempt_at"]?.string != nil)
        #expect(data(events[3])["outcome"]?.string == "unknown")
        #expect(data(events[4])["status"]?.string == "COMPLETED")
        #expect(data(events[4])["attempts"]?.integer == 3)
    }

    @Test("failed after the last attempt: withdrawal.failed with the refund; for want of funds, a null refund")
    func processorFailures() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        fixture.deposit(wallet, 1_000)
        let rejected = try fixture.dueWithdrawal(wallet, 300)
        let poor = try fixture.dueWithdrawal(wallet, 5_000)
        let bank = ScriptedBank(always: .failed)
        for _ in 0..<5 { try runPass(fixture.database.store, bank) }
        #expect(
            try types(fixture.reader, rejected) == [
                .withdrawalScheduled, .withdrawalProcessing, .withdrawalRetrying, .withdrawalRetrying, .withdrawalRetrying,
                .withdrawalFailed,
            ])
        let failed = try #require(try fixture.reader.events(ofTransaction: rejected).last)
        #expect(data(failed)["failure_reason"]?.string == "bank_rejected")
        #expect(data(failed)["refund"]?["amount"]?.integer == 300)
        #expect(data(failed)["refund"]?["balance_after"]?.integer == 1_000)
        #expect(try types(fixture.reader, poor) == [.withdrawalScheduled, .withdrawalFailed])
        let poorFailed = try #require(try fixture.reader.events(ofTransaction: poor).last)
        #expect(data(poorFailed)["refund"] == .null)
        #expect(data(poorFailed)["failure_reason"]?.string == "insufficient_funds")
    }

    @Test("unknown after the last retry: withdrawal.outcome_unknown, once per recheck that stays unknown")
    func processorOutcomeUnknown() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        fixture.deposit(wallet, 1_000)
        let id = try fixture.dueWithdrawal(wallet, 300)
        let bank = ScriptedBank(always: .timedOut)
        for _ in 0..<5 { try runPass(fixture.database.store, bank) }
        #expect(
            try types(fixture.reader, id) == [
                .withdrawalScheduled, .withdrawalProcessing, .withdrawalRetrying, .withdrawalRetrying, .withdrawalRetrying,
                .withdrawalOutcomeUnknown, .withdrawalOutcomeUnknown,
            ])
        let last = try #require(try fixture.reader.events(ofTransaction: id).last)
        #expect(data(last)["failure_reason"]?.string == "bank_outcome_unknown")
    }

    @Test("every transaction has its events and every event its change, across a mixed run")
    func outboxMatchesChanges() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        fixture.deposit(wallet, 1_000)
        for amount in [100, 200, 5_000] { _ = try fixture.dueWithdrawal(wallet, Int64(amount)) }
        try runPass(fixture.database.store, ScriptedBank(always: .paid))
        #expect(try fixture.count("SELECT count(*) FROM transactions t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.transaction_id = t.id)") == 0)
        #expect(
            try fixture.count("SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.transaction_id = l.transaction_id)")
                == 0)
        #expect(
            try fixture.count(
                "SELECT count(*) FROM wallets w WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.wallet_id = w.id AND e.type = 'wallet.created')")
                == 0)
        // Ids increase with the changes: each transaction's events are in the order of its life
        // (SQLite: the order rows were written; PostgreSQL: the order of the transactions
        // that wrote them, whose ids are handed out under the write lock).
        let order = fixture.reader.database.isPostgres ? "xmin::text::bigint, id" : "rowid"
        let ids = try fixture.reader.database.query("SELECT id FROM events ORDER BY \(order)") { $0.integer(0) }
        #expect(ids == ids.sorted())
    }

    @Test("GET /events pages in id order with after and limit, filters by type and wallet, and refuses bad parameters")
    func feed() throws {
        let fixture = try TestAPI()
        let first = try fixture.createWallet()
        let second = try fixture.createWallet()
        for _ in 0..<3 { fixture.deposit(first, 10) }
        fixture.deposit(second, 10)
        // 2 wallets + 4 deposits.
        var seen: [Int64] = []
        var after: Int64 = 0
        while true {
            let page = fixture.send("GET", "/events", query: "after=\(after)&limit=4")
            #expect(page.status == 200)
            let results = page.json["results"]?.array ?? []
            seen += results.compactMap { $0["id"]?.integer }
            guard let next = page.json["next_after"]?.integer else {
                #expect(page.json["next_after"] == .null)
                break
            }
            after = next
        }
        #expect(seen.count == 6 && seen == seen.sorted() && Set(seen).count == 6)
        let deposits = fixture.send("GET", "/events", query: "type=deposit.completed&wallet=\(first)")
        #expect(deposits.json["results"]?.array?.count == 3)
        #expect(fixture.send("GET", "/events", query: "after=\(seen.last!)").json["results"]?.array?.count == 0)
        for (query, field) in [
            ("type=deposit", "type"), ("limit=0", "limit"), ("limit=501", "limit"), ("after=-1", "after"), ("after=x", "after"),
            ("wallet=nope", "wallet"),
        ] {
            let response = fixture.send("GET", "/events", query: query)
            #expect(response.status == 400, "\(query)")
            #expect(response.json["error"]?["field"]?.string == field, "\(query)")
        }
    }

    @Test("references: validated, stored, returned, filtered, and sent to the bank as the payout's reference")
    func references() throws {
        let fixture = try TestAPI()
        let wallet = try fixture.createWallet()
        for bad in [#""""#, #""\u00e9""#, #""a\tb""#, "1", "\"" + String(repeating: "x", count: 129) + "\""] {
            let response = fixture.send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": 1, "reference": \#(bad)}"#)
            #expect(response.status == 400, "\(bad)")
            #expect(response.json["error"]?["code"]?.string == "invalid_reference")
            #expect(response.json["error"]?["field"]?.string == "reference")
        }
        let longest = String(repeating: "~", count: 128)
        #expect(fixture.send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": 1000, "reference": "\#(longest)"}"#).status == 200)
        let withdrawal = fixture.send("POST", "/wallets/\(wallet)/withdraw", json: #"{"amount": 10, "reference": "order 981"}"#)
        #expect(withdrawal.json["reference"]?.string == "order 981")
        let plain = fixture.withdraw(wallet, 10)
        #expect(plain.json["reference"] == .null)
        let listed = fixture.send("GET", "/wallets/\(wallet)/transactions/", query: "reference=order%20981")
        #expect(listed.json["results"]?.array?.count == 1)
        #expect(fixture.send("GET", "/wallets/\(wallet)/transactions/", query: "reference=").status == 400)
        let bank = ScriptedBank(always: .paid)
        try runPass(fixture.database.store, bank)
        let bodies = bank.calls.map(\.requestBody)
        #expect(bodies.contains { $0.hasPrefix(#"{"reference": "order 981", "wallet": ""#) })
        let plainID = try #require(plain.json["id"]?.integer)
        #expect(bodies.contains { $0.hasPrefix(#"{"reference": "withdrawal-\#(plainID)", "#) })
        #expect(Reference.isValid(" ") && Reference.isValid("~") && !Reference.isValid("\u{7F}"))
    }

    @Test("routes: the feed and webhook endpoints, with and without the slash; a malformed endpoint id matches nothing")
    func routes() {
        #expect(Route(path: "/events") == .events && Route(path: "/events/") == .events)
        #expect(Route(path: "/webhook-endpoints") == .webhookEndpoints && Route(path: "/webhook-endpoints/") == .webhookEndpoints)
        #expect(Route(path: "/webhook-endpoints/7") == .webhookEndpoint(7) && Route(path: "/webhook-endpoints/7/") == .webhookEndpoint(7))
        for path in ["/webhook-endpoints/07", "/webhook-endpoints/x", "/webhook-endpoints/7/x", "/events/1", "/webhook-endpoints/-1"] {
            #expect(Route(path: path) == nil, "\(path)")
        }
        #expect(Route.webhookEndpoint(7).allowedMethods == ["DELETE"])
        #expect(Route.webhookEndpoints.allowedMethods == ["GET", "HEAD", "POST"])
    }

    @Test("event patterns: exact types, prefix.*, *, and nothing unknown")
    func patterns() {
        #expect(EventPattern("*")?.matches(.walletCreated) == true)
        #expect(EventPattern("withdrawal.*")?.matches(.withdrawalFailed) == true)
        #expect(EventPattern("withdrawal.*")?.matches(.depositCompleted) == false)
        #expect(EventPattern("deposit.completed")?.matches(.depositCompleted) == true)
        #expect(EventPattern("deposit.completed")?.matches(.withdrawalCompleted) == false)
        for bad in ["", "withdrawal", "withdrawal.", "withdraw.*", "refund.*", "*.*", "deposit.failed", "Deposit.completed", ".*"] {
            #expect(EventPattern(bad) == nil, "\(bad)")
        }
    }

    @Test("webhook URLs: https only, no user information, no private or loopback literal, unless development allows")
    func urls() {
        for good in ["https://example.com/hook", "https://example.com:8443/a?b=c", "https://[2001:db8::1]/x", "https://8.8.8.8/"] {
            #expect(WebhookURL.problem(good, allowHTTP: false) == nil, "\(good)")
        }
        for bad in [
            "http://example.com/", "ftp://example.com/", "https://user:pw@example.com/", "https://localhost/", "https://LOCALHOST./",
            "https://127.0.0.1/", "https://10.1.2.3/", "https://172.16.0.1/", "https://172.31.255.255/", "https://192.168.1.1/",
            "https://169.254.169.254/latest", "https://[::1]/", "https://[fc00::1]/", "https://[fd12::1]/", "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/", "https://0.0.0.0/", "https://2130706433/", "https:///path", "https://example.com:99999/",
            "https://" + String(repeating: "a", count: 2048) + ".com/", "https://exa mple.com/",
            // Leading zeros read as octal by libc (012 is 10), carrier-grade NAT, benchmarking,
            // multicast and broadcast, and IPv4 inside IPv6 (compatible, NAT64), multicast IPv6.
            "https://012.0.0.1/", "https://127.000.0.1/", "https://100.64.0.1/", "https://100.127.255.254/", "https://198.18.0.1/",
            "https://224.0.0.1/", "https://255.255.255.255/", "https://192.0.0.8/", "https://[::127.0.0.1]/",
            "https://[64:ff9b::10.0.0.1]/", "https://[ff02::1]/",
        ] {
            #expect(WebhookURL.problem(bad, allowHTTP: false) != nil, "\(bad)")
        }
        #expect(WebhookURL.problem("https://172.32.0.1/", allowHTTP: false) == nil)
        #expect(WebhookURL.problem("https://100.128.0.1/", allowHTTP: false) == nil)
        #expect(WebhookURL.problem("https://[64:ff9b::8.8.8.8]/", allowHTTP: false) == nil)
        #expect(WebhookURL.problem("http://127.0.0.1:9000/hook", allowHTTP: true) == nil)
        #expect(WebhookURL.problem("http://user@127.0.0.1/", allowHTTP: true) != nil)
    }

    @Test("signatures: HMAC-SHA256 of \"<t>.<body>\" under the secret, hex; secrets derived from the master key")
    func signatures() {
        #expect(
            WebhookSigning.signature(secret: "whsec_test", timestamp: 1_700_000_000, body: Array(#"{"id": 1}"#.utf8))
                == "t=1700000000,v1=ff7d36d5bb309a173a3a6972f8281e91d1594106ac01df380439e545a03f2919")
        let key = Array(repeating: UInt8(7), count: 32)
        let secret = WebhookSigning.secret(masterKey: key, endpointID: 1, nonce: "n")
        #expect(secret.hasPrefix("whsec_") && secret.count == 6 + 64)
        #expect(secret == WebhookSigning.secret(masterKey: key, endpointID: 1, nonce: "n"))
        #expect(secret != WebhookSigning.secret(masterKey: key, endpointID: 2, nonce: "n"))
        #expect(secret != WebhookSigning.secret(masterKey: key, endpointID: 1, nonce: "m"))
    }

    @Test("webhook endpoints: 503 without a master key; created with a secret shown once; listed without; deleted")
    func endpoints() throws {
        let database = try TestDatabase()
        let reader = try database.connection()
        let off = WalletAPI(writer: SerialWriter(store: database.store))
        let (client, clientID) = try TestAPI.makeKey(database.store, name: "webhooks")
        func send(_ api: WalletAPI, _ method: String, _ path: String, json: String? = nil, key: String? = nil) -> Response {
            api.handle(
                Request(
                    method: method, path: path, query: "", contentType: json == nil ? nil : "application/json", idempotencyKey: key,
                    body: Array((json ?? "").utf8)
                ).authorized(client), reader: reader
            ).response
        }
        let body = #"{"url": "https://hooks.example.com/wallet", "events": ["withdrawal.*", "deposit.completed"]}"#
        #expect(send(off, "POST", "/webhook-endpoints", json: body).status == 503)
        let masterKey = Array(repeating: UInt8(1), count: 32)
        let api = WalletAPI(writer: SerialWriter(store: database.store), webhookMasterKey: masterKey)
        let created = send(api, "POST", "/webhook-endpoints", json: body, key: "create-1")
        #expect(created.status == 201)
        let id = try #require(created.json["id"]?.integer)
        let secret = try #require(created.json["secret"]?.string)
        let nonce = try #require(try database.store.webhookEndpoints(apiKeyID: clientID.rawValue).first?.nonce)
        #expect(secret == WebhookSigning.secret(masterKey: masterKey, endpointID: id, nonce: nonce))
        // The database holds no secret, not even in the stored idempotent answer; a replay
        // derives it again.
        let stored = try database.store.database.query("SELECT body FROM idempotency") { $0.text(0) }
        #expect(!stored.isEmpty && stored.allSatisfy { !$0.contains("whsec_") })
        let replay = send(api, "POST", "/webhook-endpoints", json: body, key: "create-1")
        #expect(replay.status == 201 && replay.body == created.body)
        let listed = send(api, "GET", "/webhook-endpoints")
        #expect(listed.json["results"]?.array?.count == 1)
        #expect(!listed.body.contains("secret"))
        #expect(send(api, "DELETE", "/webhook-endpoints/\(id)").status == 204)
        #expect(send(api, "DELETE", "/webhook-endpoints/\(id)").status == 404)
        #expect(send(api, "DELETE", "/webhook-endpoints/999").status == 404)
        #expect(send(api, "GET", "/webhook-endpoints/").json["results"]?.array?.count == 0)
        for (json, code) in [
            (#"{"url": "http://hooks.example.com/", "events": ["*"]}"#, "invalid_url"),
            (#"{"url": "https://127.0.0.1/", "events": ["*"]}"#, "invalid_url"),
            (#"{"events": ["*"]}"#, "invalid_url"),
            (#"{"url": "https://hooks.example.com/", "events": []}"#, "invalid_events"),
            (#"{"url": "https://hooks.example.com/", "events": ["payout.*"]}"#, "invalid_events"),
            (#"{"url": "https://hooks.example.com/", "events": "*"}"#, "invalid_events"),
        ] {
            let response = send(api, "POST", "/webhook-endpoints", json: json)
            #expect(response.status == 400, "\(json)")
            #expect(response.json["error"]?["code"]?.string == code, "\(json)")
        }
        for index in 0..<WalletAPI.webhookEndpointsMax {
            #expect(send(api, "POST", "/webhook-endpoints", json: body).status == 201, "endpoint \(index)")
        }
        #expect(send(api, "POST", "/webhook-endpoints", json: body).status == 422)
    }

    @Test("fan-out and claims: in event order per endpoint, a window behind the head, leases keep a second notifier off")
    func deliveries() throws {
        let fixture = try TestAPI()
        let store = fixture.database.store
        let (one, two) = try store.write {
            (
                try #require(
                    try store.createWebhookEndpoint(
                        apiKeyID: fixture.apiKeyID.rawValue, url: "https://a.example/", patterns: ["*"], limit: 16, now: .now())),
                try #require(
                    try store.createWebhookEndpoint(
                        apiKeyID: fixture.apiKeyID.rawValue, url: "https://b.example/", patterns: ["deposit.*"], limit: 16, now: .now()))
            )
        }
        let wallet = try fixture.createWallet()
        for _ in 0..<3 { fixture.deposit(wallet, 5) }
        let fanned = try store.write { try store.fanOutEvents(now: .now(), settled: store.settledEventID(), batch: 3) }
        #expect(fanned.created == 3 + 2 && fanned.behind)
        let rest = try store.write { try store.fanOutEvents(now: .now(), settled: store.settledEventID(), batch: 3) }
        #expect(rest.created == 1 + 1 && !rest.behind)
        #expect(try store.write { try store.fanOutEvents(now: .now(), settled: store.settledEventID()) }.created == 0)
        let now = Timestamp.now()
        let claimed = try store.write {
            try store.claimDeliveries(owner: "a", now: now, leaseUntil: now.adding(seconds: 60), endpoints: 16, window: 2, excluding: [])
        }
        #expect(claimed.count == 2)
        let first = try #require(claimed.first { $0.first?.endpointID == one.id })
        #expect(first.count == 2 && first[0].eventID < first[1].eventID)
        #expect(claimed.contains { $0.first?.endpointID == two.id })
        // Another notifier finds every head leased.
        let other = try store.write {
            try store.claimDeliveries(owner: "b", now: now, leaseUntil: now.adding(seconds: 60), endpoints: 16, window: 2, excluding: [])
        }
        #expect(other.isEmpty)
        // The head not delivered: its endpoint's later events wait behind it; the other endpoint's don't.
        try store.write {
            try store.recordDeliveries(
                [(first[0], .notDelivered(status: 500, error: "HTTP 500")), (first[1], .notTried)], owner: "a", now: now,
                giveUpMicroseconds: 1_000_000_000
            ) { _ in 60_000_000 }
        }
        let later = try store.write {
            try store.claimDeliveries(owner: "b", now: now, leaseUntil: now.adding(seconds: 60), endpoints: 16, window: 8, excluding: [])
        }
        #expect(later.isEmpty, "endpoint two is still leased by a; endpoint one's head is not due")
        let failing = try store.deliveries(failedOnly: true, limit: 10)
        #expect(failing.count == 1 && failing[0].lastStatus == 500 && failing[0].attempts == 1)
        #expect(try store.operatorReadings(now: now).webhookDeliveriesFailing == 1)
        #expect(try store.write { try store.redeliver(failing[0].id, now: now) } == false, "still pending")
    }
}

@Suite("Events are scoped to API keys")
struct EventScopingTests {
    @Test("the feed shows a key only its own wallets' events, and an endpoint is fed only its own key's")
    func scoping() throws {
        let t = try TestAPI()
        let other = try t.makeKey("neighbour")
        let otherID = try #require(try t.reader.apiKeys().first { $0.name == "neighbour" }?.id)
        let mine = try t.createWallet()
        t.deposit(mine, 10)
        let theirs = try #require(t.send("POST", "/wallets/", as: other).json["uuid"]?.string.flatMap { WalletID($0) })
        _ = t.send("POST", "/wallets/\(theirs)/deposit", json: #"{"amount": 7}"#, as: other)
        let wallets = { (response: Response) in Set(response.json["results"]?.array?.compactMap { $0["wallet"]?.string } ?? []) }
        #expect(wallets(t.send("GET", "/events")) == [mine.text])
        #expect(wallets(t.send("GET", "/events", as: other)) == [theirs.text])
        // Asking for another key's wallet by name shows nothing, as for an unknown one.
        #expect(t.send("GET", "/events", query: "wallet=\(theirs)").json["results"]?.array?.isEmpty == true)
        // Endpoints: each key's endpoint gets deliveries of its own key's events only.
        let store = t.database.store
        let (a, b) = try store.write {
            (
                try #require(
                    try store.createWebhookEndpoint(apiKeyID: t.apiKeyID.rawValue, url: "https://a.example/", patterns: ["*"], limit: 16, now: .now())
                ),
                try #require(
                    try store.createWebhookEndpoint(apiKeyID: otherID.rawValue, url: "https://b.example/", patterns: ["*"], limit: 16, now: .now()))
            )
        }
        t.deposit(mine, 1)
        _ = t.send("POST", "/wallets/\(theirs)/deposit", json: #"{"amount": 2}"#, as: other)
        _ = try store.write { try store.fanOutEvents(now: .now(), settled: store.settledEventID()) }
        let delivered = { (endpoint: Int64) in
            try t.count(
                "SELECT count(*) FROM webhook_deliveries d JOIN events e ON e.id = d.event_id JOIN wallets w ON w.id = e.wallet_id "
                    + "WHERE d.endpoint_id = \(endpoint) AND w.uuid <> '\(endpoint == a.id ? mine.text : theirs.text)'")
        }
        #expect(try delivered(a.id) == 0 && delivered(b.id) == 0)
        #expect(try t.count("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = \(a.id)") == 1)
        #expect(try t.count("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = \(b.id)") == 1)
        // Another key's endpoint is 404, exactly as an unknown one.
        let foreign = t.send("DELETE", "/webhook-endpoints/\(b.id)")
        #expect(foreign.status == 404 && foreign.body == t.send("DELETE", "/webhook-endpoints/99999").body)
    }
}

@Suite("Events follow a wallet handed to another key")
struct EventReassignmentTests {
    @Test("events written before a wallet changes hands go to the former owner's endpoints, later ones to the new owner's")
    func reassignment() throws {
        let t = try TestAPI()
        let store = t.database.store
        let successor = try t.makeKey("successor")
        let successorID = try #require(try t.reader.apiKeys().first { $0.name == "successor" }?.id)
        let (old, new) = try store.write {
            (
                try #require(
                    try store.createWebhookEndpoint(apiKeyID: t.apiKeyID.rawValue, url: "https://a.example/", patterns: ["*"], limit: 16, now: .now())
                ),
                try #require(
                    try store.createWebhookEndpoint(
                        apiKeyID: successorID.rawValue, url: "https://b.example/", patterns: ["*"], limit: 16, now: .now()))
            )
        }
        let wallet = try t.createWallet()
        t.deposit(wallet, 5)
        // No notifier pass has run: the two events are not fanned out yet when the wallet moves.
        _ = try store.write { try store.assignWallet(wallet, to: successorID, now: .now()).get() }
        _ = t.send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": 6}"#, as: successor)
        _ = try store.write { try store.fanOutEvents(now: .now(), settled: store.settledEventID()) }
        #expect(try t.count("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = \(old.id)") == 2)
        #expect(try t.count("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = \(new.id)") == 1)
    }
}
