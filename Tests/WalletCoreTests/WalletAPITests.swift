import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private let unknownWallet = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"

/// Checks a wallet object has exactly the members openapi.yaml names.
private func expectWalletShape(_ wallet: JSONValue?, balance: Int64, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let members = wallet?.members else {
        Issue.record("not a wallet object", sourceLocation: sourceLocation)
        return
    }
    #expect(Set(members.keys) == ["uuid", "balance", "created_at", "updated_at"], sourceLocation: sourceLocation)
    #expect(members["uuid"]?.string.flatMap { WalletID($0) }?.text == members["uuid"]?.string, sourceLocation: sourceLocation)
    #expect(members["balance"]?.integer == balance, sourceLocation: sourceLocation)
    for name in ["created_at", "updated_at"] {
        let text = members[name]?.string ?? ""
        #expect(text.hasSuffix("Z") && Timestamp(rfc3339: text) != nil, "\(name): \(text)", sourceLocation: sourceLocation)
    }
}

private let transactionMembers: Set<String> = [
    "id", "wallet", "type", "amount", "status", "scheduled_for", "executed_at", "created_at", "attempts", "failure_reason", "idempotency_key",
    "reference",
]

@Suite("WalletAPI")
struct WalletAPITests {
    // MARK: Routing

    @Test(
        "unknown paths are 404 not_found in the JSON error shape",
        arguments: [
            "/", "/wallet", "/wallets/nope", "/wallets/\(unknownWallet)/refund", "/wallets/\(unknownWallet)/transactions/0", "/admin",
        ])
    func unknownPaths(path: String) throws {
        let t = try TestAPI()
        for method in ["GET", "POST"] {
            let handled = t.api.handle(Request(method: method, path: path).authorized(t.apiKey), reader: t.reader)
            expectError(handled.response, status: 404, code: "not_found")
            #expect(handled.route == Route.unmatchedTemplate)
        }
    }

    @Test(
        "a known path with the wrong method is 405 with Allow",
        arguments: [
            ("GET", "/wallets/", "POST"), ("DELETE", "/wallets", "POST"), ("POST", "/wallets/\(unknownWallet)/", "GET, HEAD"),
            ("PUT", "/wallets/\(unknownWallet)", "GET, HEAD"), ("GET", "/wallets/\(unknownWallet)/deposit", "POST"),
            ("GET", "/wallets/\(unknownWallet)/withdraw", "POST"), ("POST", "/wallets/\(unknownWallet)/transactions/", "GET, HEAD"),
            ("DELETE", "/wallets/\(unknownWallet)/transactions/1/", "GET, HEAD"), ("GET", "/wallets/\(unknownWallet)/transactions/1/cancel", "POST"),
            ("POST", "/healthz", "GET, HEAD"), ("DELETE", "/metrics", "GET, HEAD"), ("get", "/healthz", "GET, HEAD"),
            ("HEAD", "/wallets/", "POST"), ("HEAD", "/wallets/\(unknownWallet)/deposit", "POST"),
        ])
    func wrongMethod(method: String, path: String, allow: String) throws {
        let t = try TestAPI()
        let handled = t.api.handle(Request(method: method, path: path).authorized(t.apiKey), reader: t.reader)
        expectError(handled.response, status: 405, code: "method_not_allowed")
        #expect(handled.response.header("Allow") == allow)
        #expect(handled.route == Route(path: path)?.template)
        // A 405 to HEAD is still an answer to HEAD: no body goes out.
        #expect(handled.response.omitsBody == (method == "HEAD"))
    }

    @Test("HEAD answers wherever GET does, with GET's status and headers, and sends no body")
    func head() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        t.deposit(id, 125)
        let paths = [
            "/wallets/\(id)/", "/wallets/\(id)", "/wallets/\(id)/transactions/", "/wallets/\(id)/transactions/1/",
            "/healthz", "/wallets/\(unknownWallet)/", "/wallets/\(id)/transactions/99/", "/nowhere",
        ]
        for path in paths {
            let get = t.api.handle(Request(method: "GET", path: path).authorized(t.apiKey), reader: t.reader)
            let head = t.api.handle(Request(method: "HEAD", path: path).authorized(t.apiKey), reader: t.reader)
            #expect(head.response.status == get.response.status, "\(path)")
            #expect(head.response.contentType == get.response.contentType, "\(path)")
            #expect(head.response.headers.map(\.name) == get.response.headers.map(\.name), "\(path)")
            // The body is kept (its length is GET's Content-Length) but never sent.
            #expect(head.response.body == get.response.body, "\(path)")
            #expect(head.response.omitsBody, "\(path)")
            #expect(!get.response.omitsBody, "\(path)")
            #expect(head.route == get.route, "\(path)")
        }
        // A query applies to HEAD as to GET: a bad filter is the same 400.
        let bad = t.api.handle(Request(method: "HEAD", path: "/wallets/\(id)/transactions/", query: "limit=0").authorized(t.apiKey), reader: t.reader)
        #expect(bad.response.status == 400)
        #expect(bad.response.omitsBody)
        // HEAD /metrics is GET's text/plain answer without the text.
        let metrics = t.api.handle(Request(method: "HEAD", path: "/metrics").authorized(t.apiKey), reader: t.reader).response
        #expect(metrics.status == 200)
        #expect(metrics.contentType.hasPrefix("text/plain"))
        #expect(metrics.omitsBody)
    }

    // MARK: Wallets

    @Test(
        "POST /wallets/ creates an empty wallet, with an empty body or {}",
        arguments: [
            ("/wallets/", nil), ("/wallets", nil), ("/wallets/", "{}"), ("/wallets/", #"{"ignored": true}"#),
        ] as [(String, String?)])
    func createWallet(path: String, body: String?) throws {
        let t = try TestAPI()
        let response = t.send("POST", path, json: body)
        #expect(response.status == 201)
        #expect(response.contentType == "application/json")
        expectWalletShape(response.json, balance: 0)
        #expect(response.json["created_at"] == response.json["updated_at"])
        let id = try #require(response.json["uuid"]?.string.flatMap { WalletID($0) })
        #expect(try t.reader.wallet(id)?.balance == .zero)
    }

    @Test("POST /wallets/ refuses a body that is not an object (400) or not JSON-typed (415)")
    func createWalletRefused() throws {
        let t = try TestAPI()
        expectError(t.send("POST", "/wallets/", json: "[]"), status: 400, code: "invalid_json")
        expectError(t.send("POST", "/wallets/", json: "{"), status: 400, code: "invalid_json")
        expectError(
            t.send(Request(method: "POST", path: "/wallets/", contentType: "text/plain", body: Array("{}".utf8))),
            status: 415, code: "unsupported_media_type")
        expectError(t.send(Request(method: "POST", path: "/wallets/", body: Array("{}".utf8))), status: 415, code: "unsupported_media_type")
        #expect(try t.count("SELECT count(*) FROM wallets") == 0)
    }

    @Test("GET /wallets/{uuid}/ returns the wallet in any case of the uuid, with or without the slash")
    func getWallet() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        t.deposit(id, 125)
        for path in ["/wallets/\(id)/", "/wallets/\(id)", "/wallets/\(id.text.uppercased())/"] {
            let response = t.send("GET", path)
            #expect(response.status == 200)
            expectWalletShape(response.json, balance: 125)
            #expect(response.json["uuid"]?.string == id.text)
        }
    }

    @Test("GET of an unknown or malformed wallet is 404")
    func getWalletNotFound() throws {
        let t = try TestAPI()
        expectError(t.send("GET", "/wallets/\(unknownWallet)/"), status: 404, code: "not_found")
        expectError(t.send("GET", "/wallets/not-a-uuid/"), status: 404, code: "not_found")
        expectError(t.send("GET", "/wallets/\(unknownWallet.dropLast())/"), status: 404, code: "not_found")
    }

    // MARK: Deposits

    @Test("a deposit answers 200 with the wallet and a COMPLETED transaction, and credits at once")
    func deposit() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let handled = t.api.handle(
            Request(
                method: "POST", path: "/wallets/\(id)/deposit", contentType: "application/json; charset=utf-8",
                idempotencyKey: "dep-1", body: Array(#"{"amount": 5000}"#.utf8)
            ).authorized(t.apiKey), reader: t.reader)
        let response = handled.response
        #expect(response.status == 200)
        #expect(Set(response.json.members?.keys ?? [:].keys) == ["wallet", "transaction"])
        expectWalletShape(response.json["wallet"], balance: 5_000)
        let transaction = try #require(response.json["transaction"]?.members)
        #expect(Set(transaction.keys) == transactionMembers)
        #expect(transaction["wallet"] == .string(id.text))
        #expect(transaction["type"] == .string("DEPOSIT"))
        #expect(transaction["amount"] == .number("5000"))
        #expect(transaction["status"] == .string("COMPLETED"))
        #expect(transaction["scheduled_for"] == .null)
        #expect(transaction["executed_at"]?.string == transaction["created_at"]?.string)
        #expect(transaction["attempts"] == .number("0"))
        #expect(transaction["failure_reason"] == .null)
        #expect(transaction["idempotency_key"] == .string("dep-1"))
        #expect(handled.route == "/wallets/{uuid}/deposit")
        #expect(handled.ledgerEntries.map(\.delta) == [5_000])
        #expect(handled.ledgerEntries.first?.kind == .deposit)
        #expect(try t.wallet(id).balance.minorUnits == 5_000)
        #expect(t.deposit(id, 1).json["wallet"]?["balance"] == .number("5001"))
        #expect(t.deposit(id, 1).json["transaction"]?["idempotency_key"] == .null)
    }

    @Test("deposit amounts from 1 to 10^15 are accepted", arguments: [1, 99, 1_000_000_000_000_000] as [Int64])
    func depositAmountAccepted(amount: Int64) throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        #expect(t.deposit(id, amount).status == 200)
        #expect(try t.wallet(id).balance.minorUnits == amount)
    }

    @Test(
        "invalid amounts are 400 invalid_amount and change nothing",
        arguments: [
            #"{"amount": 0}"#, #"{"amount": -1}"#, #"{"amount": 1.5}"#, #"{"amount": 1e3}"#, #"{"amount": "100"}"#, #"{"amount": true}"#,
            #"{"amount": null}"#, #"{}"#, #"{"amount": 1000000000000001}"#, #"{"amount": 100, "amount": 100}"#,
        ])
    func invalidAmounts(body: String) throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        for route in ["deposit", "withdraw"] {
            let response = t.send("POST", "/wallets/\(id)/\(route)", json: body, key: "k-\(route)")
            if body.contains(#""amount": 100, "amount""#) {
                expectError(response, status: 400, code: "invalid_json")
            } else {
                expectError(response, status: 400, code: "invalid_amount", field: "amount")
            }
        }
        #expect(try t.count("SELECT count(*) FROM transactions") == 0)
        #expect(try t.count("SELECT count(*) FROM idempotency") == 0)
        #expect(try t.wallet(id).balance == .zero)
    }

    @Test("deposit refusals: unknown wallet 404, bad JSON 400, wrong type 415, too large 413")
    func depositRefusals() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        expectError(t.deposit(WalletID(unknownWallet)!, 10), status: 404, code: "not_found")
        expectError(t.send("POST", "/wallets/not-a-uuid/deposit", json: #"{"amount": 10}"#), status: 404, code: "not_found")
        expectError(t.send("POST", "/wallets/\(id)/deposit", json: "{amount: 10}"), status: 400, code: "invalid_json")
        expectError(t.send("POST", "/wallets/\(id)/deposit", json: "[10]"), status: 400, code: "invalid_json")
        expectError(t.send("POST", "/wallets/\(id)/deposit"), status: 400, code: "invalid_json")
        expectError(
            t.send(Request(method: "POST", path: "/wallets/\(id)/deposit", contentType: "text/plain", body: Array(#"{"amount": 10}"#.utf8))),
            status: 415, code: "unsupported_media_type")
        let large = #"{"amount": 10, "pad": ""# + String(repeating: "x", count: Limits.requestBodyBytesMax) + #""}"#
        expectError(t.send("POST", "/wallets/\(id)/deposit", json: large), status: 413, code: "payload_too_large")
        #expect(try t.count("SELECT count(*) FROM transactions") == 0)
    }

    @Test("a deposit past Int64.max is 422 balance_overflow and changes nothing")
    func depositOverflow() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        // StoreTests reaches this balance through 9,223 real deposits; here it is set directly
        // to keep the test fast (the ledger is not the point of this test).
        try t.database.store.database.run("UPDATE wallets SET balance = ? WHERE uuid = ?", [.integer(Int64.max - roomAfterFill), .text(id.text)])
        let transactions = try t.count("SELECT count(*) FROM transactions")
        let refused = t.deposit(id, roomAfterFill + 1, key: "overflow")
        expectError(refused, status: 422, code: "balance_overflow", field: "amount")
        #expect(try t.count("SELECT count(*) FROM transactions") == transactions)
        #expect(try t.count("SELECT count(*) FROM idempotency") == 0)
        #expect(t.deposit(id, roomAfterFill).json["wallet"]?["balance"]?.integer == Int64.max)
        expectError(t.deposit(id, 1), status: 422, code: "balance_overflow", field: "amount")
        #expect(try t.wallet(id).balance.minorUnits == Int64.max)
        #expect(try t.count("SELECT count(*) FROM ledger") == transactions + 1)
    }

    // MARK: Withdrawals

    @Test("a withdrawal answers 201 PENDING, leaves the balance alone and may exceed it")
    func withdraw() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        t.deposit(id, 100)
        let response = t.withdraw(id, 5_000, scheduledFor: "2999-01-01T03:30:00+03:30", key: "w-1")
        #expect(response.status == 201)
        let transaction = try #require(response.json.members)
        #expect(Set(transaction.keys) == transactionMembers)
        #expect(transaction["type"] == .string("WITHDRAWAL"))
        #expect(transaction["status"] == .string("PENDING"))
        #expect(transaction["amount"] == .number("5000"))
        #expect(transaction["scheduled_for"] == .string("2999-01-01T00:00:00Z"))
        #expect(transaction["executed_at"] == .null)
        #expect(transaction["attempts"] == .number("0"))
        #expect(transaction["failure_reason"] == .null)
        #expect(transaction["idempotency_key"] == .string("w-1"))
        #expect(try t.wallet(id).balance.minorUnits == 100)
    }

    @Test("a withdrawal without scheduled_for is due at once")
    func withdrawNow() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        for body in [#"{"amount": 10}"#, #"{"amount": 10, "scheduled_for": null}"#] {
            let response = t.send("POST", "/wallets/\(id)/withdraw", json: body)
            #expect(response.status == 201)
            #expect(response.json["scheduled_for"] != .null)
            #expect(response.json["scheduled_for"] == response.json["created_at"])
        }
    }

    @Test("withdrawal refusals: past or offset-less time 400, unknown wallet 404")
    func withdrawRefusals() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let past = Timestamp.now().adding(seconds: -1).rfc3339
        expectError(t.withdraw(id, 10, scheduledFor: past), status: 400, code: "invalid_scheduled_for", field: "scheduled_for")
        expectError(t.withdraw(id, 10, scheduledFor: "2999-01-01T00:00:00"), status: 400, code: "invalid_scheduled_for", field: "scheduled_for")
        expectError(
            t.send("POST", "/wallets/\(id)/withdraw", json: #"{"amount": 10, "scheduled_for": 1}"#),
            status: 400, code: "invalid_scheduled_for", field: "scheduled_for")
        expectError(t.withdraw(WalletID(unknownWallet)!, 10), status: 404, code: "not_found")
        #expect(try t.count("SELECT count(*) FROM transactions") == 0)
    }

    // MARK: Transactions

    @Test("a transaction is read through its own wallet; another wallet's or an unknown id is 404")
    func getTransaction() throws {
        let t = try TestAPI()
        let (mine, other) = (try t.createWallet(), try t.createWallet())
        let created = t.deposit(mine, 10).json["transaction"]
        let id = try #require(created?["id"]?.integer)
        let response = t.send("GET", "/wallets/\(mine)/transactions/\(id)/")
        #expect(response.status == 200)
        #expect(response.json == created)
        #expect(t.send("GET", "/wallets/\(mine)/transactions/\(id)").json == created)
        expectError(t.send("GET", "/wallets/\(other)/transactions/\(id)/"), status: 404, code: "not_found")
        expectError(t.send("GET", "/wallets/\(mine)/transactions/\(id + 1)/"), status: 404, code: "not_found")
        expectError(t.send("GET", "/wallets/\(unknownWallet)/transactions/\(id)/"), status: 404, code: "not_found")
    }

    @Test("the list of an unknown wallet is 404, a bad query 400 invalid_query")
    func listRefusals() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        expectError(t.send("GET", "/wallets/\(unknownWallet)/transactions/"), status: 404, code: "not_found")
        expectError(t.send("GET", "/wallets/\(id)/transactions/", query: "status=done"), status: 400, code: "invalid_query", field: "status")
        expectError(t.send("GET", "/wallets/\(id)/transactions/", query: "type=x"), status: 400, code: "invalid_query", field: "type")
        expectError(t.send("GET", "/wallets/\(id)/transactions/", query: "limit=501"), status: 400, code: "invalid_query", field: "limit")
        expectError(t.send("GET", "/wallets/\(id)/transactions/", query: "cursor=x"), status: 400, code: "invalid_query", field: "cursor")
        let empty = t.send("GET", "/wallets/\(id)/transactions/")
        #expect(empty.status == 200)
        #expect(empty.json == .object(["results": .array([]), "next_cursor": .null]))
    }

    @Test(
        "pagination walks every matching row once, newest first",
        arguments: [
            ("", 1), ("", 4), ("", 13), ("", 50), ("status=pending", 2), ("status=CANCELED", 1), ("type=deposit", 3),
            ("type=Withdrawal", 5), ("type=withdrawal&status=pending", 1), ("status=failed", 3),
        ] as [(String, Int)])
    func pagination(filter: String, limit: Int) throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let other = try t.createWallet()
        t.deposit(other, 1)
        var expected: [(id: Int64, type: String, status: String)] = []
        for round in 0..<4 {
            expected.append((try #require(t.deposit(id, Int64(round + 1)).json["transaction"]?["id"]?.integer), "DEPOSIT", "COMPLETED"))
            let withdrawal = try #require(t.withdraw(id, 5, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
            if round % 2 == 0 {
                #expect(t.send("POST", "/wallets/\(id)/transactions/\(withdrawal)/cancel").status == 200)
                expected.append((withdrawal, "WITHDRAWAL", "CANCELED"))
            } else {
                expected.append((withdrawal, "WITHDRAWAL", "PENDING"))
            }
        }
        let items = Request(method: "GET", path: "/", query: filter).queryItems
        let wanted = expected.reversed().filter { row in
            (items["status"].map { $0.uppercased() == row.status } ?? true) && (items["type"].map { $0.uppercased() == row.type } ?? true)
        }.map(\.id)

        var seen: [Int64] = []
        var cursor: String?
        var pages = 0
        repeat {
            let query = [filter, "limit=\(limit)", cursor.map { "cursor=\($0)" }].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "&")
            let page = t.send("GET", "/wallets/\(id)/transactions/", query: query)
            #expect(page.status == 200)
            let results = try #require(page.json["results"]?.array)
            #expect(results.count <= limit)
            seen += results.compactMap { $0["id"]?.integer }
            #expect(results.allSatisfy { $0["wallet"] == .string(id.text) })
            cursor = page.json["next_cursor"]?.string
            #expect(cursor != nil || page.json["next_cursor"] == .null)
            pages += 1
        } while cursor != nil && pages <= 20
        #expect(seen == wanted)
        #expect(pages == max(1, (wanted.count + limit - 1) / limit))
    }

    @Test("the default page holds 50 and says where to continue")
    func defaultPageSize() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        try t.database.store.database.immediateTransaction {
            for _ in 0..<(Limits.pageSizeDefault + 1) {
                _ = try t.database.store.deposit(to: id, by: .operator, amount: Amount(minorUnits: 1)!, idempotencyKey: nil, now: .now()).get()
            }
        }
        let page = t.send("GET", "/wallets/\(id)/transactions/")
        #expect(page.json["results"]?.array?.count == Limits.pageSizeDefault)
        let cursor = try #require(page.json["next_cursor"]?.string)
        let rest = t.send("GET", "/wallets/\(id)/transactions", query: "cursor=\(cursor)")
        #expect(rest.json["results"]?.array?.count == 1)
        #expect(rest.json["results"]?.array?.first?["id"]?.integer == 1)
        #expect(rest.json["next_cursor"] == .null)
    }

    // MARK: Cancel

    @Test("a PENDING withdrawal cancels once; then, and for any other status, it is 409 not_cancelable")
    func cancel() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let withdrawal = try #require(t.withdraw(id, 10, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
        let canceled = t.send("POST", "/wallets/\(id)/transactions/\(withdrawal)/cancel")
        #expect(canceled.status == 200)
        #expect(canceled.json["status"] == .string("CANCELED"))
        #expect(canceled.json["failure_reason"] == .string("canceled"))
        #expect(t.send("GET", "/wallets/\(id)/transactions/\(withdrawal)/").json == canceled.json)
        expectError(t.send("POST", "/wallets/\(id)/transactions/\(withdrawal)/cancel/"), status: 409, code: "not_cancelable")

        let deposit = try #require(t.deposit(id, 100).json["transaction"]?["id"]?.integer)
        expectError(t.send("POST", "/wallets/\(id)/transactions/\(deposit)/cancel"), status: 409, code: "not_cancelable")

        let processing = try t.dueWithdrawal(id, 30)
        let now = Timestamp.now()
        _ = try t.database.store.database.immediateTransaction {
            try t.database.store.claimDue(owner: "p", dueBy: now, now: now, leaseUntil: now.adding(seconds: 60), limit: 10)
        }
        expectError(t.send("POST", "/wallets/\(id)/transactions/\(processing)/cancel"), status: 409, code: "not_cancelable")
        #expect(try t.transaction(processing).status == .processing)
    }

    @Test("canceling an unknown transaction, or another wallet's, is 404")
    func cancelNotFound() throws {
        let t = try TestAPI()
        let (mine, other) = (try t.createWallet(), try t.createWallet())
        let withdrawal = try #require(t.withdraw(mine, 10, scheduledFor: "2999-01-01T00:00:00Z").json["id"]?.integer)
        expectError(t.send("POST", "/wallets/\(other)/transactions/\(withdrawal)/cancel"), status: 404, code: "not_found")
        expectError(t.send("POST", "/wallets/\(mine)/transactions/\(withdrawal + 1)/cancel"), status: 404, code: "not_found")
        expectError(t.send("POST", "/wallets/\(unknownWallet)/transactions/\(withdrawal)/cancel"), status: 404, code: "not_found")
        #expect(try t.transaction(withdrawal).status == .pending)
    }

    // MARK: Idempotency

    @Test("a replay returns the identical status and body and makes one effect", arguments: ["wallets", "deposit", "withdraw"])
    func replay(route: String) throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let send = { () -> Response in
            switch route {
            case "wallets": t.send("POST", "/wallets/", key: "same-key")
            case "deposit": t.deposit(id, 700, key: "same-key")
            default: t.withdraw(id, 700, scheduledFor: "2999-01-01T00:00:00Z", key: "same-key")
            }
        }
        let first = send()
        #expect([200, 201].contains(first.status))
        let counts = try (
            t.count("SELECT count(*) FROM wallets"), t.count("SELECT count(*) FROM transactions"), t.count("SELECT count(*) FROM ledger")
        )
        for _ in 0..<3 {
            #expect(send() == first)
        }
        #expect(
            try (t.count("SELECT count(*) FROM wallets"), t.count("SELECT count(*) FROM transactions"), t.count("SELECT count(*) FROM ledger"))
                == counts)
        #expect(try t.count("SELECT count(*) FROM idempotency") == 1)
    }

    @Test("a replay spelled with another trailing slash or uuid case is the same request")
    func replaySpelling() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let first = t.send("POST", "/wallets/\(id)/deposit", json: #"{"amount": 5}"#, key: "k")
        #expect(t.send("POST", "/wallets/\(id.text.uppercased())/deposit/", json: #"{"amount": 5}"#, key: "k") == first)
        #expect(try t.wallet(id).balance.minorUnits == 5)
    }

    @Test("the same key with another body or path is 422 idempotency_key_reused and changes nothing")
    func keyReused() throws {
        let t = try TestAPI()
        let (id, other) = (try t.createWallet(), try t.createWallet())
        let first = t.deposit(id, 5, key: "k")
        #expect(first.status == 200)
        expectError(t.deposit(id, 6, key: "k"), status: 422, code: "idempotency_key_reused")
        expectError(t.send("POST", "/wallets/\(id)/deposit", json: #"{"amount":5}"#, key: "k"), status: 422, code: "idempotency_key_reused")
        expectError(t.deposit(other, 5, key: "k"), status: 422, code: "idempotency_key_reused")
        expectError(t.send("POST", "/wallets/\(id)/withdraw", json: #"{"amount": 5}"#, key: "k"), status: 422, code: "idempotency_key_reused")
        expectError(t.send("POST", "/wallets/", key: "k"), status: 422, code: "idempotency_key_reused")
        #expect(try t.wallet(id).balance.minorUnits == 5)
        #expect(try t.wallet(other).balance == .zero)
        #expect(try t.count("SELECT count(*) FROM transactions") == 1)
        #expect(t.deposit(id, 5, key: "k") == first)
    }

    @Test("a refused request stores nothing, so the corrected request may reuse its key")
    func failureStoresNothing() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        expectError(t.deposit(id, 0, key: "fix-me"), status: 400, code: "invalid_amount", field: "amount")
        expectError(t.deposit(WalletID(unknownWallet)!, 5, key: "fix-me"), status: 404, code: "not_found")
        expectError(
            t.withdraw(id, 5, scheduledFor: "2000-01-01T00:00:00Z", key: "fix-me"), status: 400, code: "invalid_scheduled_for",
            field: "scheduled_for")
        #expect(try t.count("SELECT count(*) FROM idempotency") == 0)
        let corrected = t.deposit(id, 5, key: "fix-me")
        #expect(corrected.status == 200)
        #expect(t.deposit(id, 5, key: "fix-me") == corrected)
        #expect(try t.wallet(id).balance.minorUnits == 5)
    }

    @Test("an invalid Idempotency-Key is 400 and does nothing", arguments: ["", String(repeating: "x", count: 256), "ключ", "a\tb"])
    func invalidKey(key: String) throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        expectError(t.deposit(id, 5, key: key), status: 400, code: "invalid_idempotency_key")
        expectError(t.withdraw(id, 5, key: key), status: 400, code: "invalid_idempotency_key")
        expectError(t.send("POST", "/wallets/", key: key), status: 400, code: "invalid_idempotency_key")
        #expect(try t.count("SELECT count(*) FROM transactions") == 0)
        #expect(try t.count("SELECT count(*) FROM wallets") == 1)
        #expect(t.deposit(id, 5, key: String(repeating: "x", count: 255)).status == 200)
    }

    @Test("a withdrawal replayed after its scheduled time gets its original 201")
    func replayAfterScheduledTime() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        let soon = Timestamp.now().adding(microseconds: 300_000).rfc3339
        let first = t.withdraw(id, 10, scheduledFor: soon, key: "late")
        #expect(first.status == 201)
        sleepMilliseconds(400)
        #expect(t.withdraw(id, 10, scheduledFor: soon, key: "late") == first)
        expectError(t.withdraw(id, 10, scheduledFor: soon, key: "new-key"), status: 400, code: "invalid_scheduled_for", field: "scheduled_for")
        expectError(t.withdraw(id, 10, scheduledFor: soon), status: 400, code: "invalid_scheduled_for", field: "scheduled_for")
        #expect(try t.count("SELECT count(*) FROM transactions") == 1)
    }

    // MARK: Operations

    @Test("/healthz answers ok")
    func health() throws {
        let t = try TestAPI()
        for path in ["/healthz", "/healthz/"] {
            let response = t.send("GET", path)
            #expect(response.status == 200)
            #expect(response.json == .object(["status": .string("ok")]))
        }
    }

    @Test("/metrics renders request counters and the transactions in the database")
    func metrics() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        t.deposit(id, 10)
        t.deposit(id, 20)
        t.withdraw(id, 5, scheduledFor: "2999-01-01T00:00:00Z")
        t.metrics.record(method: "POST", route: "/wallets/{uuid}/deposit", status: 200, seconds: 0.002)
        t.metrics.record(method: "POST", route: "/wallets/{uuid}/deposit", status: 200, seconds: 0.3)
        let handled = t.api.handle(Request(method: "GET", path: "/metrics").authorized(t.apiKey), reader: t.reader)
        let response = handled.response
        #expect(response.status == 200)
        #expect(response.contentType == "text/plain; version=0.0.4")
        #expect(handled.route == "/metrics")
        let lines = Set(response.body.split(separator: "\n").map(String.init))
        #expect(lines.contains(#"wallet_transactions{type="DEPOSIT",status="COMPLETED"} 2"#))
        #expect(lines.contains(#"wallet_transactions{type="WITHDRAWAL",status="PENDING"} 1"#))
        #expect(lines.contains(#"wallet_http_requests_total{method="POST",route="/wallets/{uuid}/deposit",status="200"} 2"#))
        #expect(lines.contains(#"wallet_http_request_duration_seconds_count{route="/wallets/{uuid}/deposit"} 2"#))
        #expect(lines.contains("# TYPE wallet_http_requests_total counter"))
        #expect(lines.contains("# TYPE wallet_transactions gauge"))
    }

    @Test("a database error is 503 service_unavailable and reveals nothing of the database")
    func databaseError() throws {
        let t = try TestAPI()
        let id = try t.createWallet()
        try t.database.store.database.refuseWrites()
        let response = t.deposit(id, 5)
        expectError(response, status: 503, code: "service_unavailable")
        for secret in ["SQL", "sqlite", "postgres", "readonly", "read-only", "/tmp", "wallets"] {
            #expect(!response.body.lowercased().contains(secret.lowercased()))
        }
        expectError(t.send("POST", "/wallets/"), status: 503, code: "service_unavailable")
        #expect(t.send("GET", "/wallets/\(id)/").status == 200)
    }
}
