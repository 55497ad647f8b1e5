import WalletDomain
import WalletJSON
import WalletPlatform
import CSQLite

/// An error reported by the database: SQLite's extended result code, or PostgreSQL's
/// SQLSTATE, with its message. Never shown to clients: the HTTP layer turns it into a
/// generic 503.
public struct DatabaseError: Error, CustomStringConvertible {
    /// SQLite's extended result code (0 for PostgreSQL and for the store's own errors).
    public let code: Int32
    public let message: String
    /// PostgreSQL's five-character SQLSTATE, nil for SQLite.
    public let sqlState: String?

    public var description: String {
        if let sqlState { return "PostgreSQL error \(sqlState): \(message)" }
        return "SQLite error \(code): \(message)"
    }

    /// The database cannot serve this transaction now but may the next one: SQLite locked
    /// by another process for longer than the busy timeout; PostgreSQL's write lock not
    /// granted within the same timeout, a serialization failure or deadlock, or the
    /// connection lost (class 08, the server shutting down): the connection reconnects on
    /// its next use.
    public var isBusy: Bool {
        guard let sqlState else { return code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED }
        return sqlState.hasPrefix("08") || PostgresConnection.retryableStates.contains(sqlState)
    }

    /// PostgreSQL rolled the transaction back to let another one through: a deadlock
    /// (40P01) or a serialization failure (40001). Nothing of it was committed, and the same
    /// work tried again will most likely succeed.
    public var isConflict: Bool {
        sqlState == "40P01" || sqlState == "40001"
    }

    /// A constraint refused the statement: a CHECK, NOT NULL, UNIQUE or foreign key, or a
    /// trigger guarding an invariant (SQLite's `RAISE(ABORT, ...)` is a constraint error;
    /// PostgreSQL's triggers raise P0001).
    public var isConstraintViolation: Bool {
        guard let sqlState else { return code & 0xFF == SQLITE_CONSTRAINT }
        return sqlState.hasPrefix("23") || sqlState == "P0001"
    }

    public init(code: Int32, message: String, sqlState: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
    }
}

/// A value bound to or read from an SQL statement.
public enum SQLValue: Sendable, Equatable {
    case integer(Int64)
    case text(String)
    case blob([UInt8])
    case null

    public init(_ value: Int64?) { self = value.map(SQLValue.integer) ?? .null }
    public init(_ value: String?) { self = value.map(SQLValue.text) ?? .null }
    /// A status, kind or reason, bound by its raw value: queries never spell them out.
    public init<Value: RawRepresentable>(_ value: Value?) where Value.RawValue == String {
        self = value.map { .text($0.rawValue) } ?? .null
    }
}

/// The connection the store talks to, whichever the engine: SQLite (a file, the default)
/// or PostgreSQL (a server, through libpq). The SQL is written once, in the store, in the
/// dialect both accept (`?` and `?N` placeholders, `ON CONFLICT DO NOTHING`, integers and
/// text); what only one engine has (its schema version, the change counter the key cache
/// reads, the online backup, the id of the last insert, the clock) is a named method here. Not
/// thread-safe: each thread owns its own.
public final class Database {
    enum Engine {
        case sqlite(SQLiteConnection)
        case postgres(PostgresConnection)
    }

    let engine: Engine

    /// Opens an SQLite file in WAL mode with foreign keys on. A writable connection creates
    /// the file if needed, unless `create` is false; a `queryOnly` one requires it and
    /// refuses every write (it still opens the file read-write, which WAL needs to share the
    /// `-shm` index).
    public init(
        path: String, queryOnly: Bool = false, create: Bool = true, synchronous: Synchronous = .full,
        busyTimeoutMilliseconds: Int32 = Limits.busyTimeoutMilliseconds
    ) throws {
        engine = .sqlite(
            try SQLiteConnection(
                path: path, queryOnly: queryOnly, create: create, synchronous: synchronous,
                busyTimeoutMilliseconds: busyTimeoutMilliseconds))
    }

    /// Connects to PostgreSQL with a libpq conninfo string or URI; a `queryOnly` connection
    /// refuses every write. A write lock waited for longer than `busyTimeoutMilliseconds`
    /// fails as busy, as with SQLite.
    public init(postgres conninfo: String, queryOnly: Bool = false, busyTimeoutMilliseconds: Int32 = Limits.busyTimeoutMilliseconds) throws {
        engine = .postgres(try PostgresConnection(conninfo: conninfo, queryOnly: queryOnly, lockTimeoutMilliseconds: busyTimeoutMilliseconds))
    }

    public var isPostgres: Bool {
        if case .postgres = engine { return true }
        return false
    }

    /// Runs SQL without results or parameters (schema, session settings, transaction control).
    public func execute(_ sql: String) throws {
        switch engine {
        case .sqlite(let connection): try connection.execute(sql)
        case .postgres(let connection): try connection.execute(sql)
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    @discardableResult
    public func run(_ sql: String, _ values: [SQLValue] = []) throws -> Int {
        switch engine {
        case .sqlite(let connection): return try connection.run(sql, values)
        case .postgres(let connection): return try connection.run(sql, values)
        }
    }

    /// Runs an `INSERT` into a table whose key is `id` and returns the new row's id.
    public func insert(_ sql: String, _ values: [SQLValue]) throws -> Int64 {
        switch engine {
        case .sqlite(let connection):
            try connection.run(sql, values)
            return connection.lastInsertRowID
        case .postgres(let connection):
            return try connection.insertReturningID(sql, values)
        }
    }

    /// Runs a query and maps each row.
    public func query<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> [T] {
        switch engine {
        case .sqlite(let connection): return try connection.query(sql, values, map)
        case .postgres(let connection): return try connection.query(sql, values, map)
        }
    }

    /// Runs a query and maps its first row, if any.
    public func queryFirst<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> T? {
        switch engine {
        case .sqlite(let connection): return try connection.queryFirst(sql, values, map)
        case .postgres(let connection): return try connection.queryFirst(sql, values, map)
        }
    }

    public func scalarText(_ sql: String) throws -> String? {
        try queryFirst(sql) { $0.optionalText(0) } ?? nil
    }

    public func scalarInteger(_ sql: String, _ values: [SQLValue] = []) throws -> Int64? {
        try queryFirst(sql, values) { $0.optionalInteger(0) } ?? nil
    }

    /// True outside any transaction.
    public var isAutocommit: Bool {
        switch engine {
        case .sqlite(let connection): return connection.isAutocommit
        case .postgres(let connection): return connection.isAutocommit
        }
    }

    /// Runs `body` in a write transaction. On SQLite the write lock is taken at the start
    /// (`BEGIN IMMEDIATE`), so that the transaction never fails half-way for want of it, and
    /// writers take turns. On PostgreSQL writers run at once, each locking the rows it
    /// changes (`lockClause`) (`PostgresConnection.transaction`). Rolls back on any error.
    func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        switch engine {
        case .sqlite(let connection): return try connection.immediateTransaction(body)
        case .postgres(let connection): return try connection.transaction(.write, body)
        }
    }

    /// Runs `body` in a read transaction: one consistent snapshot of the database, while
    /// writers go on.
    func readTransaction<T>(_ body: () throws -> T) throws -> T {
        switch engine {
        case .sqlite(let connection): return try connection.readTransaction(body)
        case .postgres(let connection): return try connection.transaction(.read, body)
        }
    }

    /// Runs `body` in a savepoint inside the current transaction. Its changes are released
    /// into the transaction when it returns true, undone when it returns false or throws.
    func savepoint<T>(_ body: () throws -> (value: T, keep: Bool)) throws -> T {
        switch engine {
        case .sqlite(let connection): return try connection.savepoint(body)
        case .postgres(let connection): return try connection.savepoint(body)
        }
    }

    /// How a write's read holds the rows it read until its transaction ends (PostgreSQL;
    /// SQLite's one writer at a time holds every row already).
    enum RowLock: String {
        /// `FOR UPDATE`: rows it is about to change, so that two transactions never both
        /// decide from one version of a row; the second waits for the first, then reads its
        /// change.
        case update = "UPDATE"
        /// `FOR KEY SHARE`: a row it depends on without changing it (the wallet a withdrawal
        /// is scheduled on, checked for its owner). Other such reads and a balance's update
        /// pass; a change of the wallet's owner (`FOR UPDATE`) waits for it, or makes it wait.
        case keyShare = "KEY SHARE"
    }

    /// The clause a read that locks its rows ends with: ` FOR <lock>`, of the rows of
    /// `table` (the query's alias, when it joins others), and with `skipLocked` leaving out
    /// rows another transaction holds instead of waiting (a claim takes what nobody is
    /// working on). Empty on SQLite.
    func lockClause(_ lock: RowLock, of table: String? = nil, skipLocked: Bool = false) -> String {
        guard isPostgres else { return "" }
        return " FOR \(lock.rawValue)" + (table.map { " OF \($0)" } ?? "") + (skipLocked ? " SKIP LOCKED" : "")
    }

    /// Makes every other transaction that calls this with the same `key` and `scope` wait
    /// until this one ends. On PostgreSQL a transaction-scoped advisory lock on a hash of
    /// both (a collision only makes two unrelated writes take turns); on SQLite nothing,
    /// since its one writer at a time already excludes the others.
    func lockKey(_ key: String, scope: Int64) throws {
        guard isPostgres else { return }
        _ = try queryFirst("SELECT pg_advisory_xact_lock(hashtextextended(?1, ?2))", [.text(key), .integer(scope)]) { _ in () }
    }

    /// Makes every other transaction that appends to `table` wait until this one ends, for
    /// a table whose rows are numbered and chained one after another (the admin trail):
    /// PostgreSQL's `SHARE ROW EXCLUSIVE` lock, which readers pass; nothing on SQLite.
    func lockForAppending(_ table: String) throws {
        guard isPostgres else { return }
        try run("LOCK TABLE \(table) IN SHARE ROW EXCLUSIVE MODE")
    }

    /// An SQL expression for the next id of `table`, for a row whose hash covers its id (so
    /// the id is needed before the row is written). PostgreSQL draws it from the table's
    /// sequence (`<table>_id_seq`): concurrent writers each get their own, never handed out
    /// twice. SQLite has one writer at a time, so the largest id plus one is free until it
    /// commits.
    func nextID(of table: String) -> String {
        switch engine {
        case .sqlite: return "(SELECT coalesce(max(id), 0) + 1 FROM \(table))"
        case .postgres: return "nextval('\(table)_id_seq')"
        }
    }

    /// The largest id of `table` below which no row can still appear: rows are read in id
    /// order (the checkpoints, the event feed) and a reader that went past an id still in
    /// flight would skip it for good. SQLite has one writer at a time, whose ids come after
    /// every committed one: the largest committed id. PostgreSQL's writers draw ids
    /// concurrently, and it waits until those drawn below the largest have committed or
    /// rolled back (`PostgresConnection.settledMaxID(of:)`). Outside a transaction, or
    /// inside a write transaction.
    public func settledMaxID(of table: String) throws -> Int64 {
        switch engine {
        case .sqlite(let connection): return try connection.scalarInteger("SELECT coalesce(max(id), 0) FROM \(table)") ?? 0
        case .postgres(let connection): return try connection.settledMaxID(of: table)
        }
    }

    /// The schema version the database records: SQLite's `PRAGMA user_version`, or
    /// PostgreSQL's one-row `schema_version` table (0 before the first migration).
    public func schemaVersion() throws -> Int64 {
        switch engine {
        case .sqlite(let connection): return try connection.scalarInteger("PRAGMA user_version") ?? 0
        case .postgres(let connection): return try connection.schemaVersion()
        }
    }

    /// A number that changes whenever another connection commits, or nil when the engine
    /// has none: SQLite's `PRAGMA data_version`. PostgreSQL has no such per-connection
    /// counter.
    public func dataVersion() throws -> Int64? {
        switch engine {
        case .sqlite(let connection): return try connection.scalarInteger("PRAGMA data_version") ?? 0
        case .postgres: return nil
        }
    }

    /// The database's clock now, in microseconds since the epoch: what leases and due
    /// times are measured against, so that hosts whose clocks disagree still agree on them.
    /// On PostgreSQL one query of `clock_timestamp()` (the server's time when the statement
    /// runs, with microsecond resolution; `now()` would be the transaction's start, before
    /// its write lock was granted). `extract(epoch ...)` gives an exact numeric from
    /// PostgreSQL 14 on, so the bigint is the server's microseconds to the digit. An SQLite
    /// file lives on one host, whose clock is the database's.
    public func clockNow() throws -> Timestamp {
        switch engine {
        case .sqlite: return Timestamp.now()
        case .postgres(let connection):
            guard
                let microseconds = try connection.queryFirst(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", [], { $0.integer(0) })
            else { throw DatabaseError(code: 0, message: "the server did not report its clock") }
            return Timestamp(microseconds: microseconds)
        }
    }

    /// The rowid of the last row this connection inserted (SQLite only: PostgreSQL reports
    /// ids through `insert(_:_:)`).
    public var lastInsertRowID: Int64 {
        guard case .sqlite(let connection) = engine else { preconditionFailure("lastInsertRowID is SQLite's; use insert(_:_:)") }
        return connection.lastInsertRowID
    }

    /// Copies the whole database to a new file at `path` while others keep using it
    /// (SQLite's online backup, which sees one consistent snapshot). PostgreSQL has its own
    /// tools for that, and the error says so.
    public func backup(to path: String) throws {
        switch engine {
        case .sqlite(let connection): try connection.backup(to: path)
        case .postgres:
            throw DatabaseError(
                code: 0, message: "backup copies an SQLite file; back a PostgreSQL database up with pg_dump (or its server's own tools)")
        }
    }
}

/// The current row of a query, read by column name or index. Valid only inside the map
/// closure it is given to.
public struct Row {
    enum Source {
        case sqlite(Statement)
        case postgres(PostgresRows, Int32)
    }

    let source: Source

    init(sqlite statement: Statement) { source = .sqlite(statement) }
    init(postgres rows: PostgresRows, row: Int32) { source = .postgres(rows, row) }

    /// The index of the result column called `name`; asking for a column the query does not
    /// have is a bug in this program.
    private func index(_ name: String) -> Int32 {
        let found: Int32?
        switch source {
        case .sqlite(let statement): found = statement.columnIndex(name)
        case .postgres(let rows, _): found = rows.columnIndex(name)
        }
        guard let found else { preconditionFailure("the query has no column \(name)") }
        return found
    }

    public func integer(_ name: String) -> Int64 { integer(index(name)) }
    public func optionalInteger(_ name: String) -> Int64? { optionalInteger(index(name)) }
    public func text(_ name: String) -> String { text(index(name)) }
    public func optionalText(_ name: String) -> String? { optionalText(index(name)) }

    public func isNull(_ column: Int32) -> Bool {
        switch source {
        case .sqlite(let statement): return sqlite3_column_type(statement.pointer, column) == SQLITE_NULL
        case .postgres(let rows, let row): return rows.isNull(row, column)
        }
    }

    public func integer(_ column: Int32) -> Int64 {
        switch source {
        case .sqlite(let statement): return sqlite3_column_int64(statement.pointer, column)
        case .postgres(let rows, let row): return rows.integer(row, column)
        }
    }

    public func optionalInteger(_ column: Int32) -> Int64? { isNull(column) ? nil : integer(column) }

    public func text(_ column: Int32) -> String {
        switch source {
        case .sqlite(let statement):
            guard let bytes = sqlite3_column_text(statement.pointer, column) else { return "" }
            let count = Int(sqlite3_column_bytes(statement.pointer, column))
            return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
        case .postgres(let rows, let row): return rows.text(row, column)
        }
    }

    public func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    public func blob(_ column: Int32) -> [UInt8] {
        switch source {
        case .sqlite(let statement):
            let count = Int(sqlite3_column_bytes(statement.pointer, column))
            guard count > 0, let bytes = sqlite3_column_blob(statement.pointer, column) else { return [] }
            return Array(UnsafeRawBufferPointer(start: bytes, count: count))
        case .postgres(let rows, let row): return rows.blob(row, column)
        }
    }
}
