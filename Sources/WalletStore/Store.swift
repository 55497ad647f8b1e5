import WalletDomain
import WalletJSON
import WalletPlatform

/// The only door to the database: one connection, and every query the service runs as a
/// named method beside its SQL. Read methods run on their own or inside a transaction;
/// write methods must run inside a write transaction that the store opened (`write`, or a
/// `writeBatch` savepoint), and each keeps every invariant on its own: a balance never
/// changes without its ledger row in the same transaction.
public final class Store {
    let database: Database
    /// Lookups of API keys (by the presented key, or by `digest:` and its digest), valid while
    /// the count of key changes stays `keyLookupsChanges`, which is read again only when
    /// `PRAGMA data_version` is no longer `keyLookupsVersion` (Store+APIKeys.swift).
    var keyLookups: [String: KeyLookup] = [:]
    var keyLookupsVersion: Int64 = -1
    var keyLookupsChanges: Int64?

    init(database: Database) {
        self.database = database
    }

    /// Runs `body` in one write transaction, committed when it returns and rolled back when
    /// it throws. On SQLite the write lock is taken at the start (`BEGIN IMMEDIATE`): one
    /// writer at a time. On PostgreSQL writers run at once: each write method locks the rows
    /// it reads in order to change them, and claims skip rows another transaction holds.
    public func write<T>(_ body: () throws -> T) throws -> T {
        try database.immediateTransaction(body)
    }

    /// Runs `count` independent writes in one transaction, made durable by one commit, each
    /// in a savepoint of its own: a write that throws, or whose result says not to keep it,
    /// leaves no trace, and the others are still committed. Returns each write's result; if
    /// the transaction cannot begin or commit, every write fails with that error.
    public func writeBatch<T>(_ count: Int, _ work: (Int) throws -> (value: T, keep: Bool)) -> [Result<T, any Error>] {
        do {
            return try database.immediateTransaction {
                (0..<count).map { index in Result { try database.savepoint { try work(index) } } }
            }
        } catch {
            return Array(repeating: .failure(error), count: count)
        }
    }

    /// Runs `body` in a read transaction: every query in it sees one snapshot, while the
    /// service goes on writing.
    public func read<T>(_ body: () throws -> T) throws -> T {
        try database.readTransaction(body)
    }

    /// The schema version, read from the database: the health check's proof that the
    /// database answers.
    public func schemaVersion() throws -> Int64 {
        try database.schemaVersion()
    }

    /// The database's clock now (`Database.clockNow`): the time processors and notifiers
    /// on several hosts take due times and leases from. One round trip on PostgreSQL; the
    /// local clock on SQLite, whose file has one host.
    public func databaseNow() throws -> Timestamp {
        try database.clockNow()
    }

    /// Whether the store is on PostgreSQL rather than an SQLite file.
    public var isPostgres: Bool { database.isPostgres }

    /// Copies the whole database to a new file at `path` (SQLite's online backup; on
    /// PostgreSQL an error that says to use pg_dump).
    public func backup(to path: String) throws {
        try database.backup(to: path)
    }

    /// Opens the database `location` names (`WALLET_DB`: an SQLite file's path, or a
    /// PostgreSQL URI or conninfo, `DatabaseLocation`) and, unless query-only, migrates it
    /// to the latest schema. A query-only store still refuses a schema newer than this
    /// binary. `create` and `synchronous` concern SQLite files: a PostgreSQL database is
    /// made by its administrator, and its commits are always durable
    /// (`synchronous_commit = on`).
    public static func open(
        location: String, queryOnly: Bool = false, create: Bool = true, synchronous: Synchronous = .full,
        busyTimeoutMilliseconds: Int32 = Limits.busyTimeoutMilliseconds
    ) throws -> Store {
        let database: Database
        switch DatabaseLocation(location) {
        case .sqlite(let path):
            database = try Database(
                path: path, queryOnly: queryOnly, create: create, synchronous: synchronous,
                busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        case .postgres(let conninfo):
            database = try Database(
                postgres: try checkedConninfo(conninfo), queryOnly: queryOnly, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        }
        if queryOnly {
            let version = try database.schemaVersion()
            guard version <= Schema.latestVersion else { throw Schema.TooNewError(found: version) }
        } else {
            try Schema.migrate(database)
        }
        return Store(database: database)
    }

    func requireTransaction() {
        precondition(!database.isAutocommit, "store writes must run inside a transaction")
    }

    // MARK: - Wallets

    static let walletColumns = "id, uuid, balance, held, created_at, updated_at, api_key_id"

    static func wallet(from row: Row) throws -> Wallet {
        guard let id = WalletID(row.text("uuid")), let balance = Money(minorUnits: row.integer("balance")),
            let held = Money(minorUnits: row.integer("held"))
        else {
            throw DatabaseError(code: 0, message: "corrupt wallet row \(row.integer("id"))")
        }
        return Wallet(
            rowID: row.integer("id"), id: id, balance: balance, held: held,
            createdAt: Timestamp(microseconds: row.integer("created_at")), updatedAt: Timestamp(microseconds: row.integer("updated_at")),
            owner: APIKeyID(row.integer("api_key_id")))
    }

    /// The wallet, if `caller` may see it: a client sees only its own wallets, and another
    /// key's wallet is nil exactly as one that does not exist.
    public func wallet(_ id: WalletID, visibleTo caller: Caller) throws -> Wallet? {
        try wallet(id, visibleTo: caller, lock: nil)
    }

    /// The same, held with `lock` until the transaction ends (`Database.RowLock`): `.update`
    /// for a wallet the write changes, `.keyShare` for one it adds to without changing it.
    func wallet(_ id: WalletID, visibleTo caller: Caller, lock: Database.RowLock?) throws -> Wallet? {
        try database.queryFirst(
            """
            SELECT \(Store.walletColumns) FROM wallets WHERE uuid = ?1 AND (api_key_id = ?2 OR ?2 IS NULL)\(lock.map { database.lockClause($0) } ?? "")
            """,
            [.text(id.text), SQLValue(caller.keyFilter?.rawValue)], Store.wallet)
    }

    /// The wallet, whoever owns it (the operator's and the processor's view).
    public func wallet(_ id: WalletID) throws -> Wallet? {
        try wallet(id, visibleTo: .operator)
    }

    public func createWallet(id: WalletID, owner: APIKeyID, now: Timestamp) throws -> Wallet {
        requireTransaction()
        let created = try database.queryFirst(
            "INSERT INTO wallets (uuid, balance, created_at, updated_at, api_key_id) VALUES (?, 0, ?, ?, ?) RETURNING \(Store.walletColumns)",
            [.text(id.text), .integer(now.microseconds), .integer(now.microseconds), .integer(owner.rawValue)], Store.wallet)
        guard let created else { preconditionFailure("INSERT ... RETURNING returned no row") }
        try appendEvent(.walletCreated, walletRowID: created.rowID, transactionID: nil, data: created.json, now: now)
        return created
    }

    /// Wallets in creation order, for the admin CLI.
    public func wallets(afterRowID: Int64 = 0, limit: Int = 1000) throws -> [Wallet] {
        try database.query(
            "SELECT \(Store.walletColumns) FROM wallets WHERE id > ? ORDER BY id LIMIT ?",
            [.integer(afterRowID), .integer(Int64(limit))], Store.wallet)
    }
}
