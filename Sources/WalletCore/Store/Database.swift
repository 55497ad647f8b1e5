import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// An error reported by SQLite, with its extended result code and message.
/// Never shown to clients: the HTTP layer turns it into a generic 503.
public struct DatabaseError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String

    public var description: String { "SQLite error \(code): \(message)" }

    /// The database is locked by another process for longer than the busy timeout.
    public var isBusy: Bool { code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED }
}

/// A value bound to or read from an SQL statement.
public enum SQLValue: Sendable, Equatable {
    case integer(Int64)
    case text(String)
    case blob([UInt8])
    case null

    public init(_ value: Int64?) { self = value.map(SQLValue.integer) ?? .null }
    public init(_ value: String?) { self = value.map(SQLValue.text) ?? .null }
}

/// How durable a commit is. `full` syncs the WAL on every commit, so a committed deposit
/// survives power loss; `normal` may lose the last commits on an OS crash and exists only
/// so the benchmark can measure the price of durability.
public enum Synchronous: String, Sendable {
    case full = "FULL"
    case normal = "NORMAL"
}

/// One SQLite connection. It is not thread-safe (opened `NOMUTEX`): each thread owns its
/// own. Prepared statements are cached by their SQL text for the connection's life.
public final class Database {
    private let handle: OpaquePointer
    private var statements: [String: Statement] = [:]
    public let path: String

    /// Opens the database in WAL mode with foreign keys on. A writable connection creates
    /// the file if needed, unless `create` is false; a `queryOnly` one requires it and
    /// refuses every write (it still opens the file read-write, which WAL needs to share the
    /// `-shm` index).
    public init(path: String, queryOnly: Bool = false, create: Bool = true, synchronous: Synchronous = .full,
                busyTimeoutMilliseconds: Int32 = Limits.busyTimeoutMilliseconds) throws {
        self.path = path
        var pointer: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (queryOnly || !create ? 0 : SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &pointer, flags, nil)
        guard let pointer else { throw DatabaseError(code: status, message: "out of memory opening \(path)") }
        handle = pointer
        sqlite3_extended_result_codes(handle, 1)
        guard status == SQLITE_OK else {
            let error = DatabaseError(code: status, message: String(cString: sqlite3_errmsg(handle)))
            sqlite3_close_v2(handle)
            throw error
        }
        sqlite3_busy_timeout(handle, busyTimeoutMilliseconds)
        try execute("PRAGMA foreign_keys = ON")
        if queryOnly {
            try execute("PRAGMA query_only = ON")
        } else {
            // WAL lets readers run beside the one writer; it must be set outside a transaction.
            let mode = try scalarText("PRAGMA journal_mode = WAL")
            guard mode == "wal" else { throw DatabaseError(code: SQLITE_ERROR, message: "cannot enable WAL (journal_mode is \(mode ?? "?"))") }
        }
        try execute("PRAGMA synchronous = \(synchronous.rawValue)")
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Runs SQL without results or parameters (pragmas, schema, transaction control).
    public func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(handle, sql, nil, nil, &message)
        if status != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw DatabaseError(code: status, message: text)
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    @discardableResult
    public func run(_ sql: String, _ values: [SQLValue] = []) throws -> Int {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        while try statement.step() {}
        return Int(sqlite3_changes(handle))
    }

    /// Runs a query and maps each row.
    public func query<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> [T] {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        var results: [T] = []
        while try statement.step() {
            results.append(try map(Row(statement: statement)))
        }
        return results
    }

    /// Runs a query and maps its first row, if any.
    public func queryFirst<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> T? {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        return try statement.step() ? try map(Row(statement: statement)) : nil
    }

    public func scalarText(_ sql: String) throws -> String? {
        try queryFirst(sql) { $0.optionalText(0) } ?? nil
    }

    public func scalarInteger(_ sql: String, _ values: [SQLValue] = []) throws -> Int64? {
        try queryFirst(sql, values) { $0.optionalInteger(0) } ?? nil
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// True outside any transaction.
    public var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction: the write lock is taken at the start,
    /// so the transaction never fails half-way for want of it. Rolls back on any error.
    public func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Runs `body` in a savepoint inside the current transaction; on error only its own
    /// changes are undone.
    public func savepoint<T>(_ body: () throws -> T) throws -> T {
        try execute("SAVEPOINT request")
        do {
            let result = try body()
            try execute("RELEASE request")
            return result
        } catch {
            try execute("ROLLBACK TO request")
            try execute("RELEASE request")
            throw error
        }
    }

    /// Copies the whole database to a new file at `path` while others keep using it
    /// (SQLite's online backup, which sees one consistent snapshot). The copy is private
    /// to its owner, like the live database, and self-contained (no `-wal` beside it).
    public func backup(to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw DatabaseError(code: SQLITE_CANTOPEN, message: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        close(descriptor)
        let target = try Database(path: path)
        guard let backup = sqlite3_backup_init(target.handle, "main", handle, "main") else {
            throw DatabaseError(code: sqlite3_errcode(target.handle), message: String(cString: sqlite3_errmsg(target.handle)))
        }
        var status: Int32
        repeat {
            status = sqlite3_backup_step(backup, -1)
            if status == SQLITE_BUSY || status == SQLITE_LOCKED { sqlite3_sleep(20) }
        } while status == SQLITE_OK || status == SQLITE_BUSY || status == SQLITE_LOCKED
        sqlite3_backup_finish(backup)
        guard status == SQLITE_DONE else {
            throw DatabaseError(code: status, message: String(cString: sqlite3_errstr(status)))
        }
        _ = try target.scalarText("PRAGMA journal_mode = DELETE")
    }

    private func prepared(_ sql: String, _ values: [SQLValue]) throws -> Statement {
        let statement: Statement
        if let cached = statements[sql] {
            statement = cached
        } else {
            var pointer: OpaquePointer?
            let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
            guard status == SQLITE_OK, let pointer else { throw error(status) }
            statement = Statement(pointer: pointer, database: self)
            statements[sql] = statement
        }
        try statement.bind(values)
        return statement
    }

    fileprivate func error(_ status: Int32) -> DatabaseError {
        DatabaseError(code: sqlite3_extended_errcode(handle), message: String(cString: sqlite3_errmsg(handle)))
    }
}

/// A prepared statement: bound, stepped, then reset for its next use.
final class Statement {
    let pointer: OpaquePointer
    private unowned let database: Database

    init(pointer: OpaquePointer, database: Database) {
        self.pointer = pointer
        self.database = database
    }

    deinit { sqlite3_finalize(pointer) }

    func bind(_ values: [SQLValue]) throws {
        sqlite3_clear_bindings(pointer)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let status: Int32
            switch value {
            case .integer(let number): status = sqlite3_bind_int64(pointer, index, number)
            case .text(let text):
                // An explicit length: with -1 SQLite would stop at an embedded NUL.
                var text = text
                status = text.withUTF8 { sqlite3_bind_text(pointer, index, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), Int32($0.count), csqlite_transient()) }
            case .blob(let bytes):
                status = bytes.withUnsafeBytes { sqlite3_bind_blob(pointer, index, $0.baseAddress, Int32($0.count), csqlite_transient()) }
            case .null: status = sqlite3_bind_null(pointer, index)
            }
            guard status == SQLITE_OK else { throw database.error(status) }
        }
    }

    /// Advances to the next row; false when the statement is done.
    func step() throws -> Bool {
        switch sqlite3_step(pointer) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let status:
            let error = database.error(status)
            sqlite3_reset(pointer)
            throw error
        }
    }

    func reset() { sqlite3_reset(pointer) }
}

/// The current row of a query, read by column index.
public struct Row {
    fileprivate let statement: Statement

    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement.pointer, column) == SQLITE_NULL }

    public func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(statement.pointer, column) }

    public func optionalInteger(_ column: Int32) -> Int64? { isNull(column) ? nil : integer(column) }

    public func text(_ column: Int32) -> String {
        guard let bytes = sqlite3_column_text(statement.pointer, column) else { return "" }
        let count = Int(sqlite3_column_bytes(statement.pointer, column))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }

    public func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    public func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(statement.pointer, column))
        guard count > 0, let bytes = sqlite3_column_blob(statement.pointer, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }
}
