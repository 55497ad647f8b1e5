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

/// A small deployment on SQLite, written through the API and one processor pass: what
/// `walletctl migrate` moves.
private func sqliteDeployment() throws -> TestAPI {
    let t = try TestAPI(sqlite: true)
    let a = try t.createWallet()
    let b = try t.createWallet()
    #expect(t.deposit(a, 10_000, key: "first").status == 200)
    #expect(t.deposit(b, 500).status == 200)
    let paid = try t.dueWithdrawal(a, 1_000)
    let refunded = try t.dueWithdrawal(a, 2_000)
    #expect(t.withdraw(b, 100, scheduledFor: "2099-01-01T00:00:00Z").status == 201)
    let store = try t.database.connection()
    try runPass(store, ScriptedBank(byWithdrawal: [paid: [.paid], refunded: [.failed]]), processorSettings(maxRetries: 0))
    return t
}

@Suite("Copying a deployment")
struct CopyTests {
    @Test("a copy moves every table of the schema, on either engine")
    func copiedTablesAreEveryTable() throws {
        let database = try TestDatabase()
        #expect(try database.store.tableNames() == Set(Store.copiedTables.map(\.name)))
    }

    @Test(
        "an SQLite deployment copied into an empty PostgreSQL database audits the same, and the service goes on there",
        .enabled(if: TestDatabase.isPostgres, "needs a PostgreSQL server (make test-postgres)"))
    func copyIntoPostgres() throws {
        let source = try sqliteDeployment()
        let target = try TestDatabase()
        let copied = try target.store.write { try target.store.copyRows(from: source.database.store) }
        #expect(copied.first { $0.name == "ledger" }?.rows ?? 0 > 0)
        for (name, rows) in copied.map({ ($0.name, $0.rows) }) {
            #expect(try target.store.database.scalarInteger("SELECT count(*) FROM \(name)") == rows, "\(name)")
            #expect(try source.database.store.database.scalarInteger("SELECT count(*) FROM \(name)") == rows, "\(name)")
        }
        let before = try Auditor(store: source.database.store).verify()
        let after = try Auditor(store: target.store).verify()
        #expect(before.passed && after.passed, "\(before.discrepancies) \(after.discrepancies)")
        #expect(after.headHash == before.headHash)
        #expect(after.checkpoint == before.checkpoint)
        #expect(after.adminHeadHash == before.adminHeadHash)

        // Ids continue after the copied ones: a new wallet and its deposit get new rows, and
        // the chain goes on from the copied head.
        let largest = try #require(try target.store.database.scalarInteger("SELECT max(id) FROM wallets"))
        let key = try #require(source.apiKeyID as APIKeyID?)
        let wallet = try target.store.write { try target.store.createWallet(id: .random(), owner: key, now: .now()) }
        #expect(wallet.rowID > largest)
        #expect(try Auditor(store: target.store).verify().passed)
    }

    @Test(
        "a target that holds anything is refused, and the refusal changes nothing",
        .enabled(if: TestDatabase.isPostgres, "needs a PostgreSQL server (make test-postgres)"))
    func nonEmptyTargetRefused() throws {
        let source = try sqliteDeployment()
        let target = try TestDatabase()
        _ = try TestAPI.makeKey(target.store, name: "already-here")
        #expect(throws: Store.CopyRefused.self) { try target.store.write { try target.store.copyRows(from: source.database.store) } }
        #expect(try target.store.database.scalarInteger("SELECT count(*) FROM api_keys") == 1)
        #expect(try target.store.database.scalarInteger("SELECT count(*) FROM wallets") == 0)
    }

    @Test("a copy goes from SQLite to PostgreSQL only")
    func directionChecked() throws {
        let one = try TestDatabase(sqlite: true)
        let other = try TestDatabase(sqlite: true)
        #expect(throws: Store.CopyRefused.self) { try other.store.write { try other.store.copyRows(from: one.store) } }
    }

    @Test("the content digest sees a changed value, and not the order of rows")
    func digestSeesChanges() throws {
        let one = try TestDatabase(sqlite: true)
        let other = try TestDatabase(sqlite: true)
        for database in [one, other] {
            try database.store.database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        }
        try one.store.database.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)")
        try other.store.database.execute("INSERT INTO t VALUES (3, NULL), (2, 'b'), (1, 'a')")
        let digest = { (database: TestDatabase) in try database.store.contentDigest(of: "t", columns: ["id", "v"]) }
        #expect(try digest(one) == digest(other))
        try other.store.database.execute("UPDATE t SET v = '' WHERE id = 3")
        #expect(try digest(one) != digest(other))
    }
}
