import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// A started `GroupCommitWriter` on a fresh database, with the size of every batch it commits.
private final class GroupCommitFixture {
    let database: TestDatabase
    let writer: GroupCommitWriter
    let api: WalletAPI
    let batches = Shared<[Int]>([])
    let keyID: APIKeyID

    init() throws {
        database = try TestDatabase()
        let batches = self.batches
        writer = GroupCommitWriter(store: database.store, onBatch: { size in batches.update { $0.append(size) } })
        api = WalletAPI(writer: writer)
        // The key's use is recorded now, so that the requests of a test make no such write
        // of their own: every batch counted here is the test's.
        let store = database.store
        keyID = try store.write {
            let id = try store.createAPIKey(name: "group-commit", digest: groupCommitKey.digest, now: .now()).id
            try store.recordAPIKeyUse(id, now: .now())
            return id
        }
        writer.start()
    }

    deinit {
        writer.stop()
    }

    /// A read connection, as each responder thread has. Query-only: opening it needs no
    /// write lock, which the writer thread may be holding.
    func reader() throws -> Store {
        try database.connection(queryOnly: true)
    }

    /// Sends a request from the calling thread with its own read connection.
    func send(_ request: Request) throws -> Response {
        api.handle(request.authorized(groupCommitKey), reader: try reader()).response
    }

    /// Holds the writer thread inside a batch until `release` is called, so that requests
    /// sent meanwhile queue up and form the next batch together.
    func block() -> (release: @Sendable () -> Void, join: () -> Void) {
        let entered = Semaphore()
        let gate = Semaphore()
        let writer = self.writer
        let thread = TestThread {
            _ = writer.perform { _ in
                entered.signal()
                gate.wait()
                return WriteOutcome(response: Response(status: 200, body: "{}"), keep: false)
            }
        }
        entered.wait()
        return ({ gate.signal() }, { thread.join() })
    }
}

/// The API key of every request in these tests.
private let groupCommitKey = APIKeySecret.random()

private func depositRequest(_ wallet: WalletID, _ amount: Int64, key: String? = nil) -> Request {
    Request(
        method: "POST", path: "/wallets/\(wallet)/deposit", contentType: "application/json", idempotencyKey: key,
        body: Array(#"{"amount": \#(amount)}"#.utf8), authorization: "Bearer \(groupCommitKey.text)")
}

/// Sends every request on its own thread while the writer is held, then lets the writer go:
/// the requests are answered from one batch. Returns the answers in request order.
private func sendInOneBatch(_ fixture: GroupCommitFixture, _ requests: [Request]) -> [Response?] {
    let answers = Shared<[Response?]>(Array(repeating: nil, count: requests.count))
    let queued = Shared(0)
    let (release, join) = fixture.block()
    let threads = requests.enumerated().map { index, request in
        TestThread {
            guard let reader = try? fixture.reader() else { return }
            queued.update { $0 += 1 }
            let response = fixture.api.handle(request.authorized(groupCommitKey), reader: reader).response
            answers.update { $0[index] = response }
        }
    }
    while queued.current < requests.count { sleepMilliseconds(1) }
    // Every thread is at most a few instructions from queueing its request.
    sleepMilliseconds(150)
    release()
    join()
    for thread in threads { thread.join() }
    return answers.current
}

extension GroupCommitFixture: @unchecked Sendable {}

@Suite("GroupCommitWriter")
struct GroupCommitWriterTests {
    @Test("32 threads × 50 deposits give the exact balance, in batches larger than one")
    func manyThreads() throws {
        let fixture = try GroupCommitFixture()
        let created = try fixture.send(Request(method: "POST", path: "/wallets/"))
        let wallet = try #require(created.json["uuid"]?.string.flatMap { WalletID($0) })
        let failures = Shared(0)
        runOnThreads(32) { thread in
            guard let reader = try? fixture.reader() else {
                failures.update { $0 += 1 }
                return
            }
            for _ in 0..<50 {
                let response = fixture.api.handle(depositRequest(wallet, Int64(thread + 1)), reader: reader).response
                if response.status != 200 { failures.update { $0 += 1 } }
            }
        }
        #expect(failures.current == 0)
        let reader = try fixture.database.connection()
        #expect(try reader.wallet(wallet)?.balance.minorUnits == 50 * (1...32).reduce(0, +))
        #expect(try reader.database.scalarInteger("SELECT count(*) FROM transactions") == 32 * 50)
        #expect(waitUntil { fixture.batches.current.reduce(0, +) == 32 * 50 + 1 })
        let batches = fixture.batches.current
        #expect(batches.contains { $0 > 1 }, "batch sizes: \(batches)")
        #expect(batches.allSatisfy { $0 <= Limits.groupCommitRequestsMax })
        try expectLedgerConsistent(reader)
    }

    @Test("a batch mixing successes and failures answers each caller its own, and failures leave no trace")
    func mixedBatch() throws {
        let fixture = try GroupCommitFixture()
        let (wallet, full) = (WalletID.random(), WalletID.random())
        let earlier = try fixture.send(Request(method: "POST", path: "/wallets/"))
        #expect(earlier.status == 201)
        _ = try fixture.writer.perform { store in
            _ = try store.createWallet(id: wallet, owner: fixture.keyID, now: .now())
            _ = try store.createWallet(id: full, owner: fixture.keyID, now: .now())
            try store.database.run("UPDATE wallets SET balance = ? WHERE uuid = ?", [.integer(Int64.max), .text(full.text)])
            return WriteOutcome(response: Response(status: 200, body: "{}"), keep: true)
        }.get()
        let original = try fixture.send(depositRequest(wallet, 5, key: "stored"))
        #expect(original.status == 200)
        waitUntil { fixture.batches.current.count == 3 }
        let batchesBefore = fixture.batches.current.count

        let requests = [
            depositRequest(wallet, 10),  // 0: succeeds
            depositRequest(WalletID.random(), 10),  // 1: unknown wallet
            depositRequest(full, 1),  // 2: overflow
            depositRequest(wallet, 6, key: "stored"),  // 3: key reused with another body
            depositRequest(wallet, 5, key: "stored"),  // 4: replay
            depositRequest(wallet, 20, key: "twice"),  // 5 and 6: one key sent twice at once
            depositRequest(wallet, 20, key: "twice"),
            Request(
                method: "POST", path: "/wallets/\(wallet)/withdraw", contentType: "application/json", idempotencyKey: "past",
                body: Array(#"{"amount": 1, "scheduled_for": "2000-01-01T00:00:00Z"}"#.utf8)),  // 7: refused after the key lookup
            depositRequest(wallet, 40),  // 8: succeeds
        ]
        let answers = sendInOneBatch(fixture, requests)
        #expect(waitUntil { fixture.batches.current.dropFirst(batchesBefore).contains(requests.count) }, "batches: \(fixture.batches.current)")

        #expect(answers[0]?.status == 200)
        if let answer = answers[1] { expectError(answer, status: 404, code: "not_found") }
        if let answer = answers[2] { expectError(answer, status: 422, code: "balance_overflow", field: "amount") }
        if let answer = answers[3] { expectError(answer, status: 422, code: "idempotency_key_reused") }
        #expect(answers[4] == original)
        #expect(answers[5]?.status == 200)
        #expect(answers[5] == answers[6])
        if let answer = answers[7] { expectError(answer, status: 400, code: "invalid_scheduled_for", field: "scheduled_for") }
        #expect(answers[8]?.status == 200)

        let reader = try fixture.database.connection()
        #expect(try reader.wallet(wallet)?.balance.minorUnits == 5 + 10 + 20 + 40)
        #expect(try reader.wallet(full)?.balance.minorUnits == Int64.max)
        #expect(try reader.database.scalarInteger("SELECT count(*) FROM transactions") == 4)
        #expect(try reader.database.scalarInteger("SELECT count(*) FROM ledger") == 4)
        #expect(Set(try reader.database.query("SELECT key FROM idempotency") { $0.text(0) }) == ["stored", "twice"])
    }

    @Test("savepoints keep each request's writes to itself: kept, refused and thrown work in one batch")
    func savepointsIsolateWork() throws {
        struct Failure: Error {}
        let fixture = try GroupCommitFixture()
        let (kept, refused, thrown) = (WalletID.random(), WalletID.random(), WalletID.random())
        let outcomes = Shared<[String]>([])
        let (release, join) = fixture.block()
        let work: [(WalletID, Bool, Bool)] = [(kept, true, false), (refused, false, false), (thrown, true, true)]
        let threads = work.map { id, keep, fail in
            TestThread {
                let result = fixture.writer.perform { store in
                    _ = try store.createWallet(id: id, now: .now())
                    if fail { throw Failure() }
                    return WriteOutcome(response: Response(status: keep ? 201 : 409, body: "{}"), keep: keep)
                }
                let text =
                    switch result {
                    case .success(let outcome): "\(id): \(outcome.response.status)"
                    case .failure(let error): "\(id): \(error is Failure ? "Failure" : "\(error)")"
                    }
                outcomes.update { $0.append(text) }
            }
        }
        sleepMilliseconds(150)
        release()
        join()
        for thread in threads { thread.join() }
        #expect(Set(outcomes.current) == ["\(kept): 201", "\(refused): 409", "\(thrown): Failure"])
        let reader = try fixture.database.connection()
        #expect(try reader.wallet(kept) != nil)
        #expect(try reader.wallet(refused) == nil)
        #expect(try reader.wallet(thrown) == nil)
    }

    @Test("stop() finishes the queued work, then refuses new work")
    func stopFinishesQueue() throws {
        let fixture = try GroupCommitFixture()
        let wallet = try #require(try fixture.send(Request(method: "POST", path: "/wallets/")).json["uuid"]?.string.flatMap { WalletID($0) })
        let answers = Shared<[Int]>([])
        let (release, join) = fixture.block()
        let threads = (0..<8).map { _ in
            TestThread {
                guard let reader = try? fixture.reader() else { return }
                let status = fixture.api.handle(depositRequest(wallet, 3), reader: reader).response.status
                answers.update { $0.append(status) }
            }
        }
        sleepMilliseconds(150)
        let stopper = TestThread { fixture.writer.stop() }
        sleepMilliseconds(50)
        release()
        join()
        for thread in threads { thread.join() }
        stopper.join()
        #expect(answers.current == Array(repeating: 200, count: 8))
        let reader = try fixture.database.connection()
        #expect(try reader.wallet(wallet)?.balance.minorUnits == 24)
        let refused = fixture.writer.perform { _ in WriteOutcome(response: Response(status: 200, body: "{}"), keep: true) }
        #expect(throws: DatabaseError.self) { try refused.get() }
        expectError(try fixture.send(depositRequest(wallet, 3)), status: 503, code: "service_unavailable")
        #expect(try reader.wallet(wallet)?.balance.minorUnits == 24)
    }

    @Test("a lone request is committed alone, before it is answered, without waiting for company")
    func loneRequest() throws {
        let fixture = try GroupCommitFixture()
        // Nothing else is ever queued: a writer that waited for a batch to fill would never
        // answer, and one that answered before its commit would show no batch yet.
        let response = try fixture.send(Request(method: "POST", path: "/wallets/"))
        #expect(response.status == 201)
        #expect(fixture.batches.current == [1])
        let second = try fixture.send(Request(method: "POST", path: "/wallets/"))
        #expect(second.status == 201)
        #expect(fixture.batches.current == [1, 1])
    }
}
