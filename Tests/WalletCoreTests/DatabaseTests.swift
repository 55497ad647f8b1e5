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

@Suite("Database", sqliteOnly)
struct DatabaseTests {
    @Test("immediateTransaction commits what succeeds and rolls back what throws")
    func immediateTransaction() throws {
        struct Abort: Error {}
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.execute("CREATE TABLE t (x INTEGER) STRICT")
        #expect(raw.isAutocommit)
        try raw.immediateTransaction {
            #expect(!raw.isAutocommit)
            try raw.run("INSERT INTO t VALUES (1)")
        }
        #expect(throws: Abort.self) {
            try raw.immediateTransaction {
                try raw.run("INSERT INTO t VALUES (2)")
                throw Abort()
            }
        }
        #expect(raw.isAutocommit)
        #expect(try raw.query("SELECT x FROM t") { $0.integer(0) } == [1])
        // The other connection sees only what was committed.
        #expect(try database.connection().database.query("SELECT x FROM t") { $0.integer(0) } == [1])
    }

    @Test("a savepoint undoes only its own changes")
    func savepoint() throws {
        struct Abort: Error {}
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.execute("CREATE TABLE t (x INTEGER) STRICT")
        try raw.immediateTransaction {
            try raw.run("INSERT INTO t VALUES (1)")
            #expect(throws: Abort.self) {
                try raw.savepoint { () -> (value: Void, keep: Bool) in
                    try raw.run("INSERT INTO t VALUES (2)")
                    throw Abort()
                }
            }
            _ = try raw.savepoint { (try raw.run("INSERT INTO t VALUES (3)"), true) }
            let refused = try raw.savepoint { (try raw.run("INSERT INTO t VALUES (4)"), false) }
            #expect(refused == 1, "a savepoint not kept still returns its value")
        }
        #expect(try raw.query("SELECT x FROM t ORDER BY x") { $0.integer(0) } == [1, 3])
    }

    @Test("values of every type bind and read back")
    func valuesRoundTrip() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.execute("CREATE TABLE v (i INTEGER, t TEXT, b BLOB, n INTEGER)")
        let blob: [UInt8] = [0, 1, 0xFF, 0]
        try raw.run("INSERT INTO v VALUES (?, ?, ?, ?)", [.integer(Int64.min), .text("é😀 x"), .blob(blob), .null])
        try raw.run("INSERT INTO v VALUES (?, ?, ?, ?)", [SQLValue(Int64?.none), SQLValue("plain"), .blob([]), SQLValue(Int64?(7))])
        let rows = try raw.query("SELECT i, t, b, n FROM v ORDER BY rowid") { row in
            "\(row.optionalInteger(0).map(String.init) ?? "nil")|\(row.text(1))|\(row.blob(2))|\(row.optionalInteger(3).map(String.init) ?? "nil")"
        }
        #expect(rows == ["\(Int64.min)|é😀 x|\(blob)|nil", "nil|plain|[]|7"])
        #expect(try raw.queryFirst("SELECT t FROM v WHERE i IS NULL") { $0.optionalText(0) } == "plain")
        #expect(try raw.queryFirst("SELECT t FROM v WHERE 0") { $0.text(0) } == nil)
    }

    // Known source bug: Statement.bind (Store/Database.swift) passes -1 as the length to
    // sqlite3_bind_text, so SQLite reads the text only up to its first NUL byte.
    @Test("text with an embedded NUL byte is stored whole")
    func textWithNUL() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.execute("CREATE TABLE v (t TEXT)")
        try raw.run("INSERT INTO v VALUES (?)", [.text("a\u{0}b")])
        let stored = try raw.scalarText("SELECT t FROM v")
        #expect(stored == "a\u{0}b")
    }

    @Test("errors carry SQLite's code and message")
    func errors() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        let syntax = #expect(throws: DatabaseError.self) { try raw.run("SELEC 1") }
        #expect(syntax?.code == 1)
        #expect(syntax?.message.contains("syntax") == true)
        #expect(syntax?.isBusy == false)
        let execute = #expect(throws: DatabaseError.self) { try raw.execute("NOT SQL") }
        #expect(execute?.description.contains("SQLite error 1") == true)
        // A failed statement leaves the cached statement usable.
        try raw.execute("CREATE TABLE u (x INTEGER UNIQUE)")
        try raw.run("INSERT INTO u VALUES (?)", [.integer(1)])
        #expect(throws: DatabaseError.self) { try raw.run("INSERT INTO u VALUES (?)", [.integer(1)]) }
        try raw.run("INSERT INTO u VALUES (?)", [.integer(2)])
        #expect(try raw.scalarInteger("SELECT count(*) FROM u") == 2)
    }

    @Test(
        "busy and locked codes, extended or not, are busy; others are not",
        arguments: [
            (5, true), (6, true), (5 | (1 << 8), true), (5 | (2 << 8), true), (6 | (1 << 8), true), (19, false), (1, false), (0, false),
            (2067, false),
        ] as [(Int32, Bool)])
    func busyCodes(code: Int32, busy: Bool) {
        #expect(DatabaseError(code: code, message: "").isBusy == busy)
    }

    @Test("a query-only connection needs an existing file and does not create one")
    func queryOnlyNeedsFile() {
        let path = "/tmp/walletcore-test-missing-\(WalletID.random().text).db"
        #expect(throws: DatabaseError.self) { try Database(path: path, queryOnly: true) }
        #expect(access(path, F_OK) != 0)
    }

    @Test("the online backup is a complete, consistent copy")
    func backup() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: .now())
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 42)!, idempotencyKey: nil, now: .now()).get()
        }
        let copyPath = database.path + ".backup"
        defer { TestDatabase.remove(copyPath) }
        try store.database.backup(to: copyPath)
        let copy = try Store.open(location: copyPath, queryOnly: true)
        #expect(try copy.wallet(wallet)?.balance.minorUnits == 42)
        #expect(try ledgerRows(copy) == ledgerRows(store))
        #expect(try copy.database.scalarInteger("PRAGMA user_version") == Schema.latestVersion)
    }
}
