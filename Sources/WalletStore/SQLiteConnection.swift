import WalletDomain
import WalletPlatform
import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// One SQLite connection. It is not thread-safe (opened `NOMUTEX`): each thread owns its
/// own. Prepared statements are cached by their SQL text for the connection's life.
final class SQLiteConnection {
    private let handle: OpaquePointer
    private var statements: [String: Statement] = [:]

    /// Opens the database in WAL mode with foreign keys on. A writable connection creates
    /// the file if needed, unless `create` is false; a `queryOnly` one requires it and
    /// refuses every write (it still opens the file read-write, which WAL needs to share the
    /// `-shm` index).
    init(
        path: String, queryOnly: Bool = false, create: Bool = true, synchronous: Synchronous = .full,
        busyTimeoutMilliseconds: Int32 = Limits.busyTimeoutMilliseconds
    ) throws {
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
    func execute(_ sql: String) throws {
        try check(sqlite3_exec(handle, sql, nil, nil, nil))
    }

    /// Checks an SQLite result code: the one place every call's result goes through. The
    /// codes that only a mistake in this program can cause (misuse of the API, a parameter
    /// index out of range) stop the program; every other failure is thrown with SQLite's
    /// extended code and message.
    func check(_ status: Int32) throws {
        switch status {
        case SQLITE_OK, SQLITE_ROW, SQLITE_DONE:
            return
        case SQLITE_MISUSE, SQLITE_RANGE:
            preconditionFailure("SQLite API misused (\(status)): \(String(cString: sqlite3_errmsg(handle)))")
        default:
            throw DatabaseError(code: sqlite3_extended_errcode(handle), message: String(cString: sqlite3_errmsg(handle)))
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: [SQLValue] = []) throws -> Int {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        while try statement.step() {}
        return Int(sqlite3_changes(handle))
    }

    /// Runs a query and maps each row.
    func query<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> [T] {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        var results: [T] = []
        while try statement.step() {
            results.append(try map(Row(sqlite: statement)))
        }
        return results
    }

    /// Runs a query and maps its first row, if any.
    func queryFirst<T>(_ sql: String, _ values: [SQLValue] = [], _ map: (Row) throws -> T) throws -> T? {
        let statement = try prepared(sql, values)
        defer { statement.reset() }
        return try statement.step() ? try map(Row(sqlite: statement)) : nil
    }

    func scalarText(_ sql: String) throws -> String? {
        try queryFirst(sql) { $0.optionalText(0) } ?? nil
    }

    func scalarInteger(_ sql: String, _ values: [SQLValue] = []) throws -> Int64? {
        try queryFirst(sql, values) { $0.optionalInteger(0) } ?? nil
    }

    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// True outside any transaction.
    var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction: the write lock is taken at the start,
    /// so the transaction never fails half-way for want of it. Rolls back on any error.
    func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        try transaction("BEGIN IMMEDIATE", body)
    }

    /// Runs `body` in a read transaction: one consistent snapshot of the database, while
    /// writers go on (WAL).
    func readTransaction<T>(_ body: () throws -> T) throws -> T {
        try transaction("BEGIN", body)
    }

    private func transaction<T>(_ begin: String, _ body: () throws -> T) throws -> T {
        precondition(isAutocommit, "transactions do not nest; a savepoint does")
        try execute(begin)
        let result: T
        do {
            result = try body()
        } catch {
            rollBack(after: error)
            throw error
        }
        do {
            try execute("COMMIT")
        } catch {
            rollBack(after: error)
            throw error
        }
        return result
    }

    /// Undoes the open transaction after `error`. SQLite may already have rolled it back on
    /// its own (after an I/O error or a full disk): then there is nothing left to undo. A
    /// ROLLBACK that fails leaves the connection in a state nobody can know, holding the
    /// write lock perhaps, so the program stops rather than carry on with it.
    private func rollBack(after error: any Error) {
        guard !isAutocommit else { return }
        do {
            try execute("ROLLBACK")
        } catch let rollbackError {
            preconditionFailure("ROLLBACK failed (\(rollbackError)) after \(error)")
        }
    }

    /// Runs `body` in a savepoint inside the current transaction. Its changes are released
    /// into the transaction when it returns true, undone when it returns false or throws.
    func savepoint<T>(_ body: () throws -> (value: T, keep: Bool)) throws -> T {
        // After an I/O error SQLite may have rolled the whole transaction back; a SAVEPOINT
        // now would start a transaction of its own and commit on RELEASE.
        guard !isAutocommit else { throw DatabaseError(code: SQLITE_ABORT, message: "the transaction was rolled back") }
        try execute("SAVEPOINT work")
        do {
            let (value, keep) = try body()
            if !keep { try execute("ROLLBACK TO work") }
            try execute("RELEASE work")
            return value
        } catch {
            // SQLite may have rolled the whole transaction back on its own (an I/O error, a
            // full disk): then there is no savepoint left to undo, and the original error is
            // the one worth reporting.
            if !isAutocommit {
                try execute("ROLLBACK TO work")
                try execute("RELEASE work")
            }
            throw error
        }
    }

    /// Copies the whole database to a new file at `path` while others keep using it
    /// (SQLite's online backup, which sees one consistent snapshot). The copy is private
    /// to its owner, like the live database, and self-contained (no `-wal` beside it).
    func backup(to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw DatabaseError(code: SQLITE_CANTOPEN, message: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        close(descriptor)
        let target = try SQLiteConnection(path: path)
        guard let backup = sqlite3_backup_init(target.handle, "main", handle, "main") else {
            try target.check(sqlite3_errcode(target.handle))
            preconditionFailure("sqlite3_backup_init failed without an error")
        }
        var status: Int32
        repeat {
            status = sqlite3_backup_step(backup, -1)
            if status == SQLITE_BUSY || status == SQLITE_LOCKED { sqlite3_sleep(20) }
        } while status == SQLITE_OK || status == SQLITE_BUSY || status == SQLITE_LOCKED
        sqlite3_backup_finish(backup)
        if status != SQLITE_DONE { try target.check(status) }
        _ = try target.scalarText("PRAGMA journal_mode = DELETE")
    }

    private func prepared(_ sql: String, _ values: [SQLValue]) throws -> Statement {
        let statement: Statement
        if let cached = statements[sql] {
            statement = cached
        } else {
            var pointer: OpaquePointer?
            try check(sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil))
            guard let pointer else { preconditionFailure("an empty statement: \(sql)") }
            statement = Statement(pointer: pointer, database: self)
            statements[sql] = statement
        }
        try statement.bind(values)
        return statement
    }

}

/// A prepared statement: bound, stepped, then reset for its next use.
final class Statement {
    let pointer: OpaquePointer
    private unowned let database: SQLiteConnection

    init(pointer: OpaquePointer, database: SQLiteConnection) {
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
                status = text.withUTF8 {
                    sqlite3_bind_text(
                        pointer, index, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), Int32($0.count), csqlite_transient())
                }
            case .blob(let bytes):
                status = bytes.withUnsafeBytes { sqlite3_bind_blob(pointer, index, $0.baseAddress, Int32($0.count), csqlite_transient()) }
            case .null: status = sqlite3_bind_null(pointer, index)
            }
            try database.check(status)
        }
    }

    /// Advances to the next row; false when the statement is done.
    func step() throws -> Bool {
        let status = sqlite3_step(pointer)
        do {
            try database.check(status)
        } catch {
            sqlite3_reset(pointer)
            throw error
        }
        return status == SQLITE_ROW
    }

    func reset() { sqlite3_reset(pointer) }

    /// Result column names to indexes, read once per prepared statement (statements are
    /// cached for the connection's life, so this is paid once per query text).
    private lazy var columns: [String: Int32] = {
        var columns: [String: Int32] = [:]
        for index in 0..<sqlite3_column_count(pointer) {
            guard let name = sqlite3_column_name(pointer, index) else { continue }
            // A name that appears twice (a join) keeps its first column.
            let key = String(cString: name)
            if columns[key] == nil { columns[key] = index }
        }
        return columns
    }()

    func columnIndex(_ name: String) -> Int32? { columns[name] }
}
