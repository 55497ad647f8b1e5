#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

// MARK: - A fresh database per test

/// A real SQLite file under /tmp, migrated, used by one test and deleted with its `-wal`
/// and `-shm` files when the test lets go of it. When `WALLET_TEST_POSTGRES` holds a
/// conninfo (`make test-postgres`), a fresh PostgreSQL database on that server instead
/// (`CREATE DATABASE t_<random>`), dropped when the test lets go of it.
final class TestDatabase {
    /// The store's location: the file's path, or the test database's conninfo.
    let path: String
    /// The first connection: the one writes go through.
    let store: Store
    private let postgresName: String?

    /// The server the tests run on, when they run on PostgreSQL.
    static let postgresServer: String? = {
        guard let server = getenv("WALLET_TEST_POSTGRES").map({ String(cString: $0) }), !server.isEmpty else { return nil }
        return server
    }()

    static var isPostgres: Bool { postgresServer != nil }

    /// `sqlite`: an SQLite file even when the tests run on PostgreSQL (the source of a copy).
    init(sqlite: Bool = false) throws {
        if !sqlite, let server = TestDatabase.postgresServer {
            let name = "t_" + String(WalletID.random().text.filter { $0 != "-" })
            try Database(postgres: server).execute("CREATE DATABASE \(name)")
            postgresName = name
            path = "\(server) dbname=\(name)"
        } else {
            postgresName = nil
            path = "/tmp/walletcore-test-\(WalletID.random().text).db"
        }
        store = try Store.open(location: path)
    }

    /// Another connection to the same database, as another thread or process would have.
    func connection(queryOnly: Bool = false) throws -> Store {
        try Store.open(location: path, queryOnly: queryOnly)
    }

    deinit {
        if let postgresName, let server = TestDatabase.postgresServer {
            // FORCE: connections the test left open (other stores) are closed first.
            try? Database(postgres: server).execute("DROP DATABASE IF EXISTS \(postgresName) WITH (FORCE)")
        } else {
            TestDatabase.remove(path)
        }
    }

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    }
}

extension Database {
    /// Lifts one of the schema's guards, as someone with write access to the database could.
    func dropTrigger(_ name: String, on table: String) throws {
        try execute(isPostgres ? "DROP TRIGGER \(name) ON \(table)" : "DROP TRIGGER \(name)")
    }

    /// Makes every later write on this connection fail.
    func refuseWrites() throws {
        try execute(isPostgres ? "SET default_transaction_read_only = on" : "PRAGMA query_only = ON")
    }
}

/// For tests of what only SQLite has (its file, its pragmas, its backup): skipped when the
/// tests run on PostgreSQL.
let sqliteOnly = Testing.ConditionTrait.enabled(if: !TestDatabase.isPostgres, "SQLite only: a file, its pragmas or its backup")

// MARK: - The API over a real database

/// A `WalletAPI` over a `SerialWriter` on a fresh database, with a second connection for
/// reads, as the responder has.
final class TestAPI {
    let database: TestDatabase
    let api: WalletAPI
    let reader: Store
    let metrics: Metrics
    /// The API key every request of `send` carries unless told otherwise.
    let apiKey: APIKeySecret
    let apiKeyID: APIKeyID

    init(sqlite: Bool = false) throws {
        database = try TestDatabase(sqlite: sqlite)
        metrics = Metrics()
        api = WalletAPI(writer: SerialWriter(store: database.store), metrics: metrics)
        reader = try database.connection()
        (apiKey, apiKeyID) = try TestAPI.makeKey(database.store, name: "test-client")
    }

    /// A new API key stored in `store`: its secret and its id.
    static func makeKey(_ store: Store, name: String) throws -> (APIKeySecret, APIKeyID) {
        let secret = APIKeySecret.random()
        let record = try store.write { try store.createAPIKey(name: name, digest: secret.digest, now: .now()) }
        return (secret, record.id)
    }

    /// Another client: a key of its own.
    func makeKey(_ name: String) throws -> APIKeySecret {
        try TestAPI.makeKey(database.store, name: name).0
    }

    /// Sends the request, with this API's key unless it carries an `Authorization` of its own.
    func send(_ request: Request) -> Response {
        api.handle(request.authorization == nil ? request.authorized(apiKey) : request, reader: reader).response
    }

    /// Sends a request as the client holding `as` (by default this API's key; nil sends
    /// none); a `json` body goes with `Content-Type: application/json`.
    @discardableResult
    func send(
        _ method: String, _ path: String, json: String? = nil, key: String? = nil, query: String = "", as client: APIKeySecret?? = .none
    ) -> Response {
        let secret: APIKeySecret? =
            switch client {
            case .none: apiKey
            case .some(let chosen): chosen
            }
        return api.handle(
            Request(
                method: method, path: path, query: query, contentType: json == nil ? nil : "application/json",
                idempotencyKey: key, body: Array((json ?? "").utf8), authorization: secret.map { "Bearer \($0.text)" }),
            reader: reader
        ).response
    }

    func createWallet(sourceLocation: SourceLocation = #_sourceLocation) throws -> WalletID {
        let response = send("POST", "/wallets/")
        #expect(response.status == 201, sourceLocation: sourceLocation)
        return try #require(response.json["uuid"]?.string.flatMap { WalletID($0) }, sourceLocation: sourceLocation)
    }

    @discardableResult
    func deposit(_ wallet: WalletID, _ amount: Int64, key: String? = nil) -> Response {
        send("POST", "/wallets/\(wallet)/deposit", json: #"{"amount": \#(amount)}"#, key: key)
    }

    @discardableResult
    func withdraw(_ wallet: WalletID, _ amount: Int64, scheduledFor: String? = nil, key: String? = nil) -> Response {
        let schedule = scheduledFor.map { #", "scheduled_for": "\#($0)""# } ?? ""
        return send("POST", "/wallets/\(wallet)/withdraw", json: #"{"amount": \#(amount)\#(schedule)}"#, key: key)
    }

    /// Schedules a withdrawal due at once and returns its id.
    func dueWithdrawal(_ wallet: WalletID, _ amount: Int64, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int64 {
        let response = withdraw(wallet, amount)
        #expect(response.status == 201, sourceLocation: sourceLocation)
        return try #require(response.json["id"]?.integer, sourceLocation: sourceLocation)
    }

    func wallet(_ id: WalletID, sourceLocation: SourceLocation = #_sourceLocation) throws -> Wallet {
        try #require(try reader.wallet(id), sourceLocation: sourceLocation)
    }

    func transaction(_ id: Int64, sourceLocation: SourceLocation = #_sourceLocation) throws -> Transaction {
        try #require(try reader.transaction(id), sourceLocation: sourceLocation)
    }

    func count(_ sql: String) throws -> Int64 {
        try reader.database.scalarInteger(sql) ?? -1
    }
}

// MARK: - JSON in responses

extension Response {
    /// The body parsed by the library's own strict parser (`.null` when it does not parse).
    var json: JSONValue {
        (try? JSONParser.parse(Array(body.utf8))) ?? .null
    }

    func header(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }
}

extension JSONValue {
    subscript(_ key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members[key]
    }

    var string: String? {
        guard case .string(let text) = self else { return nil }
        return text
    }

    var array: [JSONValue]? {
        guard case .array(let elements) = self else { return nil }
        return elements
    }

    var members: [String: JSONValue]? {
        guard case .object(let members) = self else { return nil }
        return members
    }
}

/// Checks the API's error shape: `{"error": {"code", "message", "field"?}}` and nothing else.
func expectError(
    _ response: Response, status: Int, code: String, field: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(response.status == status, "body: \(response.body)", sourceLocation: sourceLocation)
    #expect(response.contentType == "application/json", sourceLocation: sourceLocation)
    guard let outer = response.json.members, outer.count == 1, let inner = outer["error"]?.members else {
        Issue.record("not the error shape: \(response.body)", sourceLocation: sourceLocation)
        return
    }
    #expect(inner["code"] == .string(code), sourceLocation: sourceLocation)
    #expect(inner["message"]?.string?.isEmpty == false, sourceLocation: sourceLocation)
    #expect(inner["field"] == field.map(JSONValue.string), sourceLocation: sourceLocation)
    #expect(Set(inner.keys).isSubset(of: ["code", "message", "field"]), sourceLocation: sourceLocation)
}

// MARK: - A scripted bank

extension BankTransport {
    static let paid = BankTransport.answered(status: 200, body: Array(#"{"data": "success", "status": 200}"#.utf8))
    static let failed = BankTransport.answered(status: 503, body: Array(#"{"data": "failed", "status": 503}"#.utf8))
    static let refused = BankTransport.notSent("connection refused")
    static let timedOut = BankTransport.noAnswer("timed out after sending")
}

/// Counts bank calls per withdrawal across threads (several passes, several banks).
final class CallRecorder: @unchecked Sendable {
    private let lock = Lock()
    private var counts: [Int64: Int] = [:]

    func record(_ payout: Payout) {
        lock.withLock { counts[payout.withdrawalID, default: 0] += 1 }
    }

    var callsByWithdrawal: [Int64: Int] {
        lock.withLock { counts }
    }
}

/// A fake `BankClient` that answers each attempt from a script and hands the answers back
/// at the next poll, `answersPerPoll` at a time. It records every call and the most calls
/// in flight at once.
final class ScriptedBank: BankClient {
    private let script: (Payout) -> BankTransport
    private let answersPerPoll: Int
    private let recorder: CallRecorder?
    private var started: [Payout] = []
    private let pollDelayMilliseconds: Int
    private(set) var calls: [Payout] = []
    private(set) var maxInFlight = 0
    /// Called as each attempt starts, e.g. to check no database transaction is open.
    var onStart: (Payout) -> Void = { _ in }

    init(
        answersPerPoll: Int = Int.max, pollDelayMilliseconds: Int = 0, recorder: CallRecorder? = nil,
        _ script: @escaping (Payout) -> BankTransport
    ) {
        self.script = script
        self.answersPerPoll = answersPerPoll
        self.pollDelayMilliseconds = pollDelayMilliseconds
        self.recorder = recorder
    }

    /// Answers every attempt the same way.
    convenience init(always answer: BankTransport) {
        self.init { _ in answer }
    }

    /// Answers attempt n (1-based, rechecks included) with `answers[n - 1]`, the last one
    /// repeated once the list runs out.
    convenience init(byAttempt answers: [BankTransport]) {
        self.init { payout in answers[min(Int(payout.attempt), answers.count) - 1] }
    }

    /// Answers each withdrawal from its own list (by attempt, the last repeated), others `otherwise`.
    convenience init(byWithdrawal scripts: [Int64: [BankTransport]], otherwise: BankTransport = .paid) {
        self.init { payout in
            guard let answers = scripts[payout.withdrawalID] else { return otherwise }
            return answers[min(Int(payout.attempt), answers.count) - 1]
        }
    }

    func start(_ payout: Payout) {
        onStart(payout)
        calls.append(payout)
        started.append(payout)
        maxInFlight = max(maxInFlight, started.count)
        recorder?.record(payout)
    }

    func poll(timeoutMilliseconds: Int) -> [(Payout, BankTransport)] {
        if pollDelayMilliseconds > 0 { sleepMilliseconds(pollDelayMilliseconds) }
        let count = min(answersPerPoll, started.count)
        let finished = started.prefix(count)
        started.removeFirst(count)
        return finished.map { ($0, script($0)) }
    }

    var inFlightCount: Int { started.count }

    func calls(for withdrawal: Int64) -> [Payout] {
        calls.filter { $0.withdrawalID == withdrawal }
    }
}

/// Settings for processor tests: no waiting between retries, rechecks due at once.
func processorSettings(
    maxRetries: Int64 = 3, concurrency: Int64 = 4, retryBaseSeconds: Int64 = 0,
    unknownRecheckSeconds: Int64 = 0
) -> Settings {
    var settings = Settings()
    settings.maxRetries = maxRetries
    settings.bankConcurrency = concurrency
    settings.retryBaseSeconds = retryBaseSeconds
    settings.unknownRecheckSeconds = unknownRecheckSeconds
    return settings
}

/// Runs one processor pass with no jitter. `clock` stands for the database's clock as well
/// as the pass's own (as on SQLite, where they are one): a test moves the time the pass
/// sees due times and leases by.
@discardableResult
func runPass(
    _ store: Store, _ bank: ScriptedBank, _ settings: Settings = processorSettings(), owner: String = "test-processor",
    clock: @escaping () -> Timestamp = Timestamp.now
) throws -> PassSummary {
    try ProcessorPass(
        store: store, bank: bank, settings: settings, log: Log(component: "test"), owner: owner,
        random: { 0 }, clock: clock, databaseClock: clock
    ).run()
}

// MARK: - Threads

/// A thread running a closure, to be joined.
struct TestThread {
    private let thread: OSThread

    init(_ body: @escaping @Sendable () -> Void) {
        do {
            thread = try OSThread.start(name: "test", body)
        } catch {
            preconditionFailure("\(error)")
        }
    }

    func join() {
        thread.join()
    }
}

/// Runs `body(index)` on `count` threads at once and waits for them all.
func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let threads = (0..<count).map { index in TestThread { body(index) } }
    for thread in threads { thread.join() }
}

/// A value shared between threads behind a lock.
final class Shared<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func update<T>(_ body: (inout Value) -> T) -> T {
        lock.withLock { body(&value) }
    }

    var current: Value { lock.withLock { value } }
}

func sleepMilliseconds(_ milliseconds: Int) {
    usleep(UInt32(milliseconds * 1_000))
}

// MARK: - The ledger as stored

/// A `ledger` row with every column, as the store reads it for the auditor.
typealias LedgerRow = StoredLedgerRow

func ledgerRows(_ store: Store) throws -> [LedgerRow] {
    try store.ledgerRows()
}

/// The ids of rows whose hash does not recompute from their content and the hash they chain
/// from: the previous row's in the ledger for rows written before schema version 7, their
/// wallet's previous row's for the rest (as `walletctl audit verify` checks them).
func brokenHashLinks(_ rows: [LedgerRow]) -> [Int64] {
    var previous = Store.genesisHash
    var walletHeads: [Int64: String] = [:]
    var broken: [Int64] = []
    for row in rows {
        let chainedFrom = row.walletChain != 0 ? walletHeads[row.walletRowID] ?? Store.genesisHash : previous
        let input = Store.ledgerHashInput(
            previousHash: chainedFrom, id: row.id, walletRowID: row.walletRowID, transactionID: row.transactionID,
            kind: row.kind, delta: row.delta, balanceAfter: row.balanceAfter, createdAt: row.createdAt)
        if SHA256.hex(Array(input.utf8)) != row.hash { broken.append(row.id) }
        if row.walletChain == 0 { previous = row.hash }
        walletHeads[row.walletRowID] = row.hash
    }
    return broken
}

/// Checks the ledger of every wallet: the deltas sum to the balance, each row's
/// `balance_after` is the running sum, and the hash chain recomputes.
func expectLedgerConsistent(_ store: Store, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let rows = try ledgerRows(store)
    #expect(brokenHashLinks(rows).isEmpty, sourceLocation: sourceLocation)
    var running: [Int64: Int64] = [:]
    for row in rows {
        running[row.walletRowID, default: 0] += row.delta
        #expect(row.balanceAfter == running[row.walletRowID], "ledger row \(row.id)", sourceLocation: sourceLocation)
    }
    for wallet in try store.wallets() {
        #expect(running[wallet.rowID, default: 0] == wallet.balance.minorUnits, "wallet \(wallet.id)", sourceLocation: sourceLocation)
    }
}

/// Deposits 10^15 into `wallet` 9,223 times in one transaction, leaving room for
/// 372,036,854,775,807 below `Int64.max`.
func fillNearMaximum(_ store: Store, _ wallet: WalletID) throws {
    let largest = Amount(minorUnits: Limits.amountMinorUnitsMax)!
    let count = Int(Int64.max / Limits.amountMinorUnitsMax)
    try store.database.immediateTransaction {
        let now = Timestamp.now()
        for _ in 0..<count {
            _ = try store.deposit(to: wallet, by: .operator, amount: largest, idempotencyKey: nil, now: now).get()
        }
    }
}

/// What is left below `Int64.max` after `fillNearMaximum`.
let roomAfterFill: Int64 = Int64.max - (Int64.max / Limits.amountMinorUnitsMax) * Limits.amountMinorUnitsMax

/// Waits up to `milliseconds` for `condition` (for effects reported just after an answer,
/// such as a batch's `onBatch` call). Returns whether it became true.
@discardableResult
func waitUntil(milliseconds: Int = 2_000, _ condition: () -> Bool) -> Bool {
    for _ in 0..<milliseconds {
        if condition() { return true }
        sleepMilliseconds(1)
    }
    return condition()
}

// MARK: - API keys in store-level tests

extension Store {
    /// The API key that store-level tests' wallets and stored answers belong to, made on
    /// first use (inside a write transaction).
    func testKey() throws -> APIKeyID {
        if let id = try database.scalarInteger("SELECT id FROM api_keys WHERE name = 'store-tests'") { return APIKeyID(id) }
        return try createAPIKey(name: "store-tests", digest: APIKeySecret.random().digest, now: .now()).id
    }

    func createWallet(id: WalletID, now: Timestamp) throws -> Wallet {
        try createWallet(id: id, owner: testKey(), now: now)
    }

    func storedResponse(forKey key: String) throws -> StoredResponse? {
        guard let id = try database.scalarInteger("SELECT id FROM api_keys WHERE name = 'store-tests'") else { return nil }
        return try storedResponse(forKey: key, of: APIKeyID(id))
    }

    func store(_ response: StoredResponse, forKey key: String, now: Timestamp) throws {
        try store(response, forKey: key, of: testKey(), now: now)
    }
}

extension Request {
    /// The request with `Authorization: Bearer <key>`.
    func authorized(_ key: APIKeySecret) -> Request {
        var request = self
        request.authorization = "Bearer \(key.text)"
        return request
    }
}
