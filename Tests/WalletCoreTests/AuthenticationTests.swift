import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// Every route of one wallet, with the method it takes and a body for the writes.
private func walletRoutes(_ wallet: WalletID, transaction: Int64) -> [(method: String, path: String, json: String?)] {
    [
        ("GET", "/wallets/\(wallet)/", nil),
        ("POST", "/wallets/\(wallet)/deposit", #"{"amount": 5}"#),
        ("POST", "/wallets/\(wallet)/withdraw", #"{"amount": 5}"#),
        ("GET", "/wallets/\(wallet)/balance", nil),
        ("GET", "/wallets/\(wallet)/transactions/", nil),
        ("GET", "/wallets/\(wallet)/transactions/\(transaction)/", nil),
        ("POST", "/wallets/\(wallet)/transactions/\(transaction)/cancel", nil),
    ]
}

/// The rows whose count changes with any write a client can make.
private func rowCounts(_ t: TestAPI) throws -> [Int64] {
    try ["wallets", "transactions", "ledger", "idempotency"].map { try t.count("SELECT count(*) FROM \($0)") }
        + [try t.count("SELECT coalesce(sum(balance), 0) FROM wallets")]
}

private func expectUnauthenticated(_ handled: WalletAPI.Handled, _ reason: AuthenticationFailure, sourceLocation: SourceLocation = #_sourceLocation) {
    expectError(handled.response, status: 401, code: "unauthenticated", sourceLocation: sourceLocation)
    #expect(handled.response.header("WWW-Authenticate") == #"Bearer realm="wallet""#, sourceLocation: sourceLocation)
    #expect(handled.authenticationFailure == reason, sourceLocation: sourceLocation)
    #expect(handled.apiKey == nil, sourceLocation: sourceLocation)
}

@Suite("Authentication and ownership")
struct AuthenticationTests {
    // MARK: Keys

    @Test("a new key is wsk_ and 256 random bits in base64url, and has the shape every key must have")
    func newKeys() {
        let keys = (0..<200).map { _ in APIKeySecret.random() }
        #expect(Set(keys.map(\.text)).count == keys.count)
        for key in keys {
            #expect(key.text.hasPrefix("wsk_"))
            #expect(key.text.utf8.count == 4 + 43)
            #expect(APIKeySecret(key.text) == key)
            #expect(key.digest.utf8.count == 64 && key.digest != key.text)
        }
    }

    @Test("base64url follows RFC 4648's vectors, unpadded, with - and _")
    func base64URL() {
        #expect(APIKeySecret.base64URL(Array("".utf8)) == "")
        #expect(APIKeySecret.base64URL(Array("f".utf8)) == "Zg")
        #expect(APIKeySecret.base64URL(Array("fo".utf8)) == "Zm8")
        #expect(APIKeySecret.base64URL(Array("foo".utf8)) == "Zm9v")
        #expect(APIKeySecret.base64URL(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(APIKeySecret.base64URL([0xFB, 0xFF, 0xBF]) == "-_-_")
    }

    @Test(
        "the Authorization header: Bearer (any case) and a key of 32 to 128 characters of A-Z a-z 0-9 _ -",
        arguments: [
            (nil, AuthenticationFailure.missing), ("", .missing),
            ("Bearer", .malformed), ("Bearer ", .malformed), ("Basic dXNlcjpwYXNz", .malformed),
            ("Bearer " + String(repeating: "a", count: 31), .malformed),
            ("Bearer " + String(repeating: "a", count: 129), .malformed),
            ("Bearer " + String(repeating: "a", count: 31) + "!", .malformed),
            ("Bearer " + String(repeating: "a", count: 31) + "é", .malformed),
            ("Bearer " + String(repeating: "a", count: 32) + " ", .malformed),
            ("Bearerx" + String(repeating: "a", count: 32), .malformed),
            ("Token " + String(repeating: "a", count: 32), .malformed),
        ] as [(String?, AuthenticationFailure)])
    func refusedHeaders(header: String?, reason: AuthenticationFailure) {
        let request = Request(method: "GET", path: "/", authorization: header)
        #expect(request.bearerKey() == .failure(reason))
    }

    @Test("accepted headers", arguments: ["Bearer ", "bearer ", "BEARER ", "Bearer    "])
    func acceptedHeaders(scheme: String) {
        let key = String(repeating: "A", count: 16) + "z9_-" + String(repeating: "k", count: 12)
        #expect(Request(method: "GET", path: "/", authorization: scheme + key).bearerKey() == .success(APIKeySecret(key)!))
        let longest = String(repeating: "x", count: 128)
        #expect(Request(method: "GET", path: "/", authorization: scheme + longest).bearerKey().map(\.text) == .success(longest))
    }

    @Test("the store finds a key by its digest, tells revoked from unknown, and never stores the secret")
    func digestLookup() throws {
        let database = try TestDatabase()
        let store = database.store
        let secret = APIKeySecret.random()
        let record = try store.write { try store.createAPIKey(name: "billing", digest: secret.digest, now: .now()) }
        #expect(try store.apiKey(digest: secret.digest) == .valid(record.id, lastUsedAt: nil))
        #expect(try store.apiKey(digest: APIKeySecret.random().digest) == .unknown)
        let stored = try store.database.query("SELECT * FROM api_keys") { row in (0..<7).map { row.optionalText(Int32($0)) ?? "" } }
        #expect(!stored.flatMap { $0 }.contains { $0.contains(secret.text) })
        _ = try store.write { try store.revokeAPIKey(record.id, now: .now()) }
        #expect(try store.apiKey(digest: secret.digest) == .revoked)
        #expect(try store.write { try store.revokeAPIKey(APIKeyID(999), now: .now()) } == nil)
    }

    // MARK: Every route needs a key

    @Test("no key, a malformed, unknown or revoked key: 401 on every route, before any other check, changing nothing")
    func everyRouteNeedsAKey() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 100)
        let withdrawal = try #require(t.withdraw(wallet, 10, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
        let revoked = try t.makeKey("revoked")
        let revokedID = try #require(try t.reader.apiKeys().first { $0.name == "revoked" }?.id)
        _ = try t.database.store.write { try t.database.store.revokeAPIKey(revokedID, now: .now()) }
        let before = try rowCounts(t)
        let presented: [(String?, AuthenticationFailure)] = [
            (nil, .missing), ("Bearer short", .malformed), ("Bearer " + APIKeySecret.random().text, .unknown),
            ("Bearer " + revoked.text, .revoked),
        ]
        // Every route of the wallet, creation, and paths that do not exist or take another
        // method: the key is checked first, so nothing about them is learned without one.
        let routes =
            walletRoutes(wallet, transaction: withdrawal) + [
                ("POST", "/wallets/", nil), ("GET", "/nope", nil), ("DELETE", "/wallets/", nil),
                ("POST", "/wallets/\(wallet)/deposit", "not json"),
            ]
        for (header, reason) in presented {
            for route in routes {
                let request = Request(
                    method: route.method, path: route.path, contentType: "application/json", idempotencyKey: "k",
                    body: Array((route.json ?? "").utf8), authorization: header)
                expectUnauthenticated(t.api.handle(request, reader: t.reader), reason)
            }
            // A body that could not be read is refused for its key first, too.
            expectUnauthenticated(
                t.api.refuse(Request(method: "POST", path: "/wallets/", authorization: header), with: .payloadTooLarge, reader: t.reader),
                reason)
        }
        #expect(try rowCounts(t) == before)
        #expect(try t.transaction(withdrawal).status == .pending)
    }

    @Test("a revoked key is refused from the next request on")
    func revocationIsImmediate() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        #expect(t.send("GET", "/wallets/\(wallet)/").status == 200)
        _ = try t.database.store.write { try t.database.store.revokeAPIKey(t.apiKeyID, now: .now()) }
        expectError(t.send("GET", "/wallets/\(wallet)/"), status: 401, code: "unauthenticated")
    }

    @Test("a connection's remembered lookups follow revocations by another connection, by another process and by itself")
    func rememberedLookups() throws {
        let database = try TestDatabase()
        let writer = database.store
        let reader = try database.connection(queryOnly: true)
        let (first, second) = (APIKeySecret.random(), APIKeySecret.random())
        let ids = try writer.write {
            (
                try writer.createAPIKey(name: "a", digest: first.digest, now: .now()).id,
                try writer.createAPIKey(name: "b", digest: second.digest, now: .now()).id
            )
        }
        #expect(try reader.apiKey(digest: first.digest) == .valid(ids.0, lastUsedAt: nil))
        #expect(try reader.apiKey(digest: first.digest) == .valid(ids.0, lastUsedAt: nil))
        #expect(try reader.apiKey(first) == .valid(ids.0, lastUsedAt: nil))
        #expect(try reader.apiKey(first) == .valid(ids.0, lastUsedAt: nil))
        // Another connection revokes: the reader sees it at once, by digest or by the key.
        _ = try writer.write { try writer.revokeAPIKey(ids.0, now: .now()) }
        #expect(try reader.apiKey(first) == .revoked)
        #expect(try reader.apiKey(digest: first.digest) == .revoked)
        // The same connection looks up, then revokes itself: it sees its own change.
        #expect(try writer.apiKey(digest: second.digest) == .valid(ids.1, lastUsedAt: nil))
        _ = try writer.write { try writer.revokeAPIKey(ids.1, now: .now()) }
        #expect(try writer.apiKey(digest: second.digest) == .revoked)
        #expect(try reader.apiKey(digest: second.digest) == .revoked)
        // Another process (a plain SQL change through a third connection) is seen too.
        let third = try database.connection()
        let late = APIKeySecret.random()
        #expect(try reader.apiKey(digest: late.digest) == .unknown)
        try third.database.run(
            "INSERT INTO api_keys (name, digest, created_at) VALUES ('late', ?, 0)", [.text(late.digest)])
        if case .valid = try reader.apiKey(digest: late.digest) {} else { Issue.record("a key added elsewhere was not seen") }
    }

    @Test("after commits that change no key, a key stays valid and a revocation made elsewhere is seen at once")
    func rememberedAcrossOtherCommits() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        // Deposits commit on the writer's connection: the reader's data_version moves, the
        // count of key changes does not, and the key is still valid.
        for _ in 0..<3 {
            #expect(t.deposit(wallet, 100).status == 200)
            #expect(t.send("GET", "/wallets/\(wallet)/").status == 200)
        }
        if case .valid(t.apiKeyID, _) = try t.reader.apiKey(t.apiKey) {} else { Issue.record("the key was not valid") }
        // A revocation by plain SQL on another connection (as another process would make it).
        let other = try t.database.connection()
        try other.database.run("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", [.integer(t.apiKeyID.rawValue)])
        #expect(try t.reader.apiKey(t.apiKey) == .revoked)
        expectError(t.send("GET", "/wallets/\(wallet)/"), status: 401, code: "unauthenticated")
    }

    @Test("/healthz and /metrics answer without a key", arguments: ["/healthz", "/metrics"])
    func openRoutes(path: String) throws {
        let t = try TestAPI()
        let handled = t.api.handle(Request(method: "GET", path: path), reader: t.reader)
        #expect(handled.response.status == 200)
        #expect(handled.apiKey == nil && handled.authenticationFailure == nil)
    }

    @Test("the key's use is recorded, at most once a minute, and named on the request")
    func lastUse() throws {
        let t = try TestAPI()
        #expect(try t.reader.apiKey(t.apiKeyID)?.lastUsedAt == nil)
        let handled = t.api.handle(Request(method: "POST", path: "/wallets/").authorized(t.apiKey), reader: t.reader)
        #expect(handled.apiKey == t.apiKeyID)
        let first = try #require(try t.reader.apiKey(t.apiKeyID)?.lastUsedAt)
        _ = t.send("POST", "/wallets/")
        #expect(try t.reader.apiKey(t.apiKeyID)?.lastUsedAt == first)
    }

    // MARK: Ownership

    @Test("another key's wallet answers 404 on every route exactly as a wallet that does not exist, and nothing changes")
    func ownership() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 100)
        let withdrawal = try #require(t.withdraw(wallet, 10, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
        let other = try t.makeKey("other-client")
        let before = try rowCounts(t)
        let absent = WalletID.random()
        for (own, missing) in zip(walletRoutes(wallet, transaction: withdrawal), walletRoutes(absent, transaction: withdrawal)) {
            let theirs = t.send(own.method, own.path, json: own.json, as: other)
            let nobodys = t.send(missing.method, missing.path, json: missing.json, as: other)
            #expect(theirs.status == 404, "\(own.method) \(own.path): \(theirs.body)")
            #expect(theirs.body == nobodys.body, "\(own.method) \(own.path)")
            #expect(theirs.headers.map(\.name) == nobodys.headers.map(\.name))
        }
        #expect(try rowCounts(t) == before)
        #expect(try t.transaction(withdrawal).status == .pending)
        // The other client's own list knows nothing of it, and the owner still sees it all.
        let created = try #require(t.send("POST", "/wallets/", as: other).json["uuid"]?.string.flatMap { WalletID($0) })
        #expect(t.send("GET", "/wallets/\(created)/transactions/", as: other).json["results"]?.array?.isEmpty == true)
        #expect(t.send("GET", "/wallets/\(wallet)/").json["balance"]?.integer == 100)
        #expect(t.send("GET", "/wallets/\(created)/").status == 404)
    }

    @Test("a wallet handed to another key moves with its history; the former owner no longer sees it")
    func assignment() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 70)
        let other = try t.makeKey("successor")
        let otherID = try #require(try t.reader.apiKeys().first { $0.name == "successor" }?.id)
        _ = try t.database.store.write { try t.database.store.assignWallet(wallet, to: otherID, now: .now()).get() }
        #expect(t.send("GET", "/wallets/\(wallet)/", as: other).json["balance"]?.integer == 70)
        #expect(t.send("GET", "/wallets/\(wallet)/transactions/", as: other).json["results"]?.array?.count == 1)
        #expect(t.send("GET", "/wallets/\(wallet)/").status == 404)
    }

    // MARK: Idempotency keys belong to their client

    @Test("two clients using one Idempotency-Key each get their own effect and answer, and no 422")
    func idempotencyPerClient() throws {
        let t = try TestAPI()
        let other = try t.makeKey("other-client")
        let mine = t.send("POST", "/wallets/", key: "shared-key")
        let theirs = t.send("POST", "/wallets/", key: "shared-key", as: other)
        #expect(mine.status == 201 && theirs.status == 201)
        #expect(mine.json["uuid"] != theirs.json["uuid"])
        // Each replay returns its own client's answer.
        #expect(t.send("POST", "/wallets/", key: "shared-key").body == mine.body)
        #expect(t.send("POST", "/wallets/", key: "shared-key", as: other).body == theirs.body)
        // A different request with the key is refused for its own client only.
        let wallet = try #require(mine.json["uuid"]?.string.flatMap { WalletID($0) })
        let otherWallet = try #require(theirs.json["uuid"]?.string.flatMap { WalletID($0) })
        #expect(t.deposit(wallet, 5, key: "deposit-key").status == 200)
        #expect(t.send("POST", "/wallets/\(otherWallet)/deposit", json: #"{"amount": 9}"#, key: "deposit-key", as: other).status == 200)
        #expect(try t.count("SELECT count(*) FROM wallets") == 2)
        #expect(try t.count("SELECT count(*) FROM idempotency") == 4)
    }
}
