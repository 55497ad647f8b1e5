import WalletDomain
import WalletPlatform
import CPostgres
import Glibc
import Synchronization

/// One PostgreSQL connection over libpq, speaking the store's SQL. Not thread-safe: each
/// thread owns its own.
///
/// - Statements are prepared once per connection and SQL text (`PQprepare`, names `s1`,
///   `s2`...), their `?`/`?N` placeholders rewritten to `$N` once, and executed with
///   `PQexecPrepared` in text format with each parameter's type given (bigint, text,
///   bytea). A null's type is left for the server to infer from the parameter's first
///   use, which must therefore give it one: `(x = ?2 OR ?2 IS NULL)` type-checks, and
///   `(?2 IS NULL OR x = ?2)` does not.
/// - Every session runs with `synchronous_commit = on` (a commit is on disk, on the
///   server, before it is acknowledged), UTC, and only warnings and errors reported.
/// - A lost connection (the server restarted, the network dropped) fails the statement
///   with a busy error, which the service answers with 503, and the connection reconnects
///   (`PQreset`) on its next use outside a transaction.
final class PostgresConnection {
    /// SQLSTATEs after which the same work may succeed when tried again: the write lock not
    /// granted within the timeout (55P03), a serialization failure (40001), a deadlock
    /// (40P01), the server shutting down or restarting (57P01, 57P02, 57P03). Class 08
    /// (connection exceptions) too, checked by prefix.
    static let retryableStates: Set<String> = ["55P03", "40001", "40P01", "57P01", "57P02", "57P03"]

    /// The advisory lock a schema migration takes (`PostgresSchema.migrate`), so that of
    /// several programs starting at once one migrates and the others then find nothing
    /// left to do. Write transactions take no lock of their own: each locks the rows it
    /// changes, so writers of different wallets run at once.
    static let migrationLockKey: Int64 = 0x7761_6C6C_6574  // "wallet"

    enum TransactionKind {
        /// `BEGIN`, READ COMMITTED, with a transaction id from the start.
        case write
        /// One snapshot for the whole transaction, like SQLite's read transaction.
        case read
    }

    /// How many times a connection of this process was found lost. When the server's
    /// machine dies, nothing closes the idle connections to it: each would be found dead
    /// only by a request sent on it, after the keepalives or `tcp_user_timeout` give up (10 s
    /// and more), one after another. One connection found lost is taken to mean the server
    /// is gone for all of them: each connection reconnects before its next statement outside
    /// a transaction once this count has moved since it last connected. A reconnection to a
    /// server that is still there costs one connection set-up.
    static let connectionsLost = Atomic<Int>(0)

    private let handle: OpaquePointer
    /// `connectionsLost` when this connection was last made.
    private var lostSeen = PostgresConnection.connectionsLost.load(ordering: .relaxed)
    private let queryOnly: Bool
    private let lockTimeoutMilliseconds: Int32
    private var statements: [String: PostgresStatement] = [:]
    private var statementsPrepared = 0
    /// Set when the connection was found lost: the next use outside a transaction resets it.
    private var needsReset = false
    /// Between our BEGIN and its COMMIT or ROLLBACK, whatever became of the connection.
    private var transactionOpen = false

    init(conninfo: String, queryOnly: Bool, lockTimeoutMilliseconds: Int32) throws {
        guard let handle = PQconnectdb(conninfo) else {
            throw DatabaseError(code: 0, message: "out of memory connecting to PostgreSQL", sqlState: "08001")
        }
        self.handle = handle
        self.queryOnly = queryOnly
        self.lockTimeoutMilliseconds = lockTimeoutMilliseconds
        // Every stored property is set: a throw from here on runs deinit, whose PQfinish is
        // the only one (a second would free the connection twice).
        guard PQstatus(handle) == CONNECTION_OK else {
            // libpq's message names the server and why. The conninfo was parsed before
            // (Store.checkedConninfo), so it is not a parse error quoting the text.
            throw DatabaseError(code: 0, message: connectionMessage, sqlState: "08001")
        }
        try configureSession()
    }

    deinit {
        PQfinish(handle)
    }

    private var connectionMessage: String {
        guard let message = PQerrorMessage(handle) else { return "connection failed" }
        return String(cString: message).trimmingWhitespace()
    }

    /// Every session's `application_name`: `wallet-service/` and the program's name (at most
    /// 40 bytes of it, letters, digits, `-`, `_` and `.` only). `pg_stat_activity` shows
    /// which program a session is, and `settledMaxID(of:)` waits only for the service's own.
    static let applicationName: String = {
        let program = CommandLine.arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "program"
        let safe = program.unicodeScalars.filter {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0))
        }
        return applicationPrefix + String(String.UnicodeScalarView(safe.prefix(40)))
    }()

    /// The prefix of every session's `application_name`.
    static let applicationPrefix = "wallet-service/"

    /// The session settings every connection runs with, set again after a reconnection.
    private func configureSession() throws {
        // No statement timeout, whatever the role or database says: a COMMIT cancelled while
        // it waits for the synchronous standby is reported as a success (with a warning)
        // although only the leader has it, and the client would be told so.
        var settings = [
            "SET synchronous_commit = on", "SET TIME ZONE 'UTC'", "SET client_min_messages = warning",
            "SET application_name = '\(PostgresConnection.applicationName)'",
            "SET lock_timeout = \(lockTimeoutMilliseconds)", "SET statement_timeout = 0",
        ]
        if queryOnly { settings.append("SET default_transaction_read_only = on") }
        try executeOnce(settings.joined(separator: "; "))
    }

    /// Reconnects if the connection was found lost, before a statement outside a
    /// transaction. Never inside one: its work is gone with the old connection, and a
    /// COMMIT on a new one would report success for nothing.
    private func reconnectIfNeeded() throws {
        let lost = PostgresConnection.connectionsLost.load(ordering: .relaxed)
        guard needsReset || lost != lostSeen || PQstatus(handle) != CONNECTION_OK else { return }
        guard !transactionOpen else { return }
        PQreset(handle)
        statements.removeAll()
        guard PQstatus(handle) == CONNECTION_OK else {
            throw DatabaseError(code: 0, message: "cannot reconnect: \(connectionMessage)", sqlState: "08006")
        }
        // Not reset until the session is configured: a connection without its settings
        // (synchronous commit, the lock timeout, read-only) is never used.
        try configureSession()
        needsReset = false
        lostSeen = lost
    }

    // MARK: - Statements

    /// Runs SQL without parameters; several statements may be separated by semicolons.
    func execute(_ sql: String) throws {
        try reconnectIfNeeded()
        try executeOnce(sql)
    }

    private func executeOnce(_ sql: String) throws {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result)
    }

    func run(_ sql: String, _ values: [SQLValue]) throws -> Int {
        let (result, _) = try executePrepared(sql, values)
        defer { PQclear(result) }
        guard let changed = PQcmdTuples(result), changed.pointee != 0 else { return 0 }
        return Int(String(cString: changed)) ?? 0
    }

    /// The `INSERT` with `RETURNING id` appended, and the id it returns.
    func insertReturningID(_ sql: String, _ values: [SQLValue]) throws -> Int64 {
        guard let id = try queryFirst(sql + " RETURNING id", values, { $0.integer(0) }) else {
            preconditionFailure("INSERT ... RETURNING returned no row")
        }
        return id
    }

    func query<T>(_ sql: String, _ values: [SQLValue], _ map: (Row) throws -> T) throws -> [T] {
        let (result, statement) = try executePrepared(sql, values)
        defer { PQclear(result) }
        let rows = PostgresRows(result: result, statement: statement)
        let count = PQntuples(result)
        var mapped: [T] = []
        mapped.reserveCapacity(Int(count))
        for index in 0..<count {
            mapped.append(try map(Row(postgres: rows, row: index)))
        }
        return mapped
    }

    func queryFirst<T>(_ sql: String, _ values: [SQLValue], _ map: (Row) throws -> T) throws -> T? {
        let (result, statement) = try executePrepared(sql, values)
        defer { PQclear(result) }
        guard PQntuples(result) > 0 else { return nil }
        return try map(Row(postgres: PostgresRows(result: result, statement: statement), row: 0))
    }

    /// Prepares `sql` on first use (per connection) and executes it with `values`. The
    /// caller clears the result.
    private func executePrepared(_ sql: String, _ values: [SQLValue]) throws -> (OpaquePointer, PostgresStatement) {
        try reconnectIfNeeded()
        let statement = try prepared(sql, values)
        let parameters = try PostgresParameters(values)
        let result = parameters.withPointers { pointers in
            PQexecPrepared(handle, statement.name, Int32(values.count), pointers, nil, nil, 0)
        }
        do {
            try check(result)
        } catch {
            PQclear(result)
            throw error
        }
        guard let result else { preconditionFailure("libpq returned no result without an error") }
        return (result, statement)
    }

    private func prepared(_ sql: String, _ values: [SQLValue]) throws -> PostgresStatement {
        if let cached = statements[sql], cached.parameterCount == values.count { return cached }
        statementsPrepared += 1
        let statement = PostgresStatement(name: "s\(statementsPrepared)", parameterCount: values.count)
        let types: [Oid] = values.map { value in
            switch value {
            case .integer: return 20  // int8
            case .text: return 25  // text
            case .blob: return 17  // bytea
            case .null: return 0  // inferred by the server from where it is used
            }
        }
        let result = PQprepare(handle, statement.name, PostgresSQL.numberedParameters(sql), Int32(values.count), types)
        defer { PQclear(result) }
        try check(result)
        statements[sql] = statement
        return statement
    }

    /// Checks a result: the one place every statement's outcome goes through. A failure is
    /// thrown with its SQLSTATE and primary message; a lost connection marks the connection
    /// for a reset on its next use.
    private func check(_ result: OpaquePointer?) throws {
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY { return }
        var sqlState = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) }
        var message = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "M"))) }.map { String(cString: $0) } ?? connectionMessage
        if PQstatus(handle) != CONNECTION_OK {
            sqlState = sqlState ?? "08006"
            if message.isEmpty { message = "the connection to the server was lost" }
        }
        if let state = sqlState, state.hasPrefix("08") || state.hasPrefix("57P") || PQstatus(handle) != CONNECTION_OK {
            if !needsReset { PostgresConnection.connectionsLost.add(1, ordering: .relaxed) }
            needsReset = true
        }
        throw DatabaseError(code: 0, message: message, sqlState: sqlState ?? "XX000")
    }

    // MARK: - Transactions

    /// True outside any transaction.
    var isAutocommit: Bool { !transactionOpen }

    func transaction<T>(_ kind: TransactionKind, _ body: () throws -> T) throws -> T {
        precondition(!transactionOpen, "transactions do not nest; a savepoint does")
        try reconnectIfNeeded()
        switch kind {
        case .write:
            // READ COMMITTED whatever the server's default: a statement that waited for a
            // row another transaction held then sees that transaction's change (an UPDATE
            // re-checks its WHERE against it, a SELECT ... FOR UPDATE returns it), where
            // REPEATABLE READ would fail with a serialization error.
            //
            // The transaction id is taken at once, before the work draws any id from a
            // sequence: `settledMaxID(of:)` relies on every transaction that holds an id
            // showing its transaction id in `pg_stat_activity` from before it drew it. Sent
            // with the BEGIN, in one round trip.
            try begin("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_current_xact_id()")
            transactionOpen = true
        case .read:
            try begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            transactionOpen = true
        }
        let result: T
        do {
            result = try body()
        } catch {
            rollBack(after: error)
            throw error
        }
        // A statement that failed inside the transaction without a savepoint around it has
        // aborted the whole transaction, and COMMIT would quietly roll it back.
        guard PQtransactionStatus(handle) != PQTRANS_INERROR else {
            let error = DatabaseError(code: 0, message: "the transaction was aborted by an earlier error", sqlState: "25P02")
            rollBack(after: error)
            throw error
        }
        do {
            try executeOnce("COMMIT")
            transactionOpen = false
        } catch {
            rollBack(after: error)
            throw error
        }
        return result
    }

    /// Starts a transaction. A connection the server closed while it sat idle (a restart)
    /// is found lost only by its next statement: when that is the BEGIN, nothing has been
    /// done yet, so the connection is made again and the BEGIN sent once more.
    private func begin(_ sql: String) throws {
        do {
            try executeOnce(sql)
        } catch let error as DatabaseError where needsReset && error.isBusy {
            try reconnectIfNeeded()
            try executeOnce(sql)
        }
    }

    /// Undoes the open transaction after `error`. A lost connection has nothing left to
    /// undo (the server rolled it back). A ROLLBACK that fails on a live connection leaves
    /// it in a state nobody can know, so the program stops rather than carry on with it.
    private func rollBack(after error: any Error) {
        guard transactionOpen else { return }
        defer { transactionOpen = false }
        guard PQtransactionStatus(handle) != PQTRANS_IDLE else { return }
        do {
            try executeOnce("ROLLBACK")
        } catch let rollbackError {
            guard PQstatus(handle) == CONNECTION_OK else {
                needsReset = true
                return
            }
            preconditionFailure("ROLLBACK failed (\(rollbackError)) after \(error)")
        }
    }

    /// A savepoint inside the current transaction. On PostgreSQL a failed statement aborts
    /// the whole transaction unless it is rolled back to a savepoint, which this does.
    func savepoint<T>(_ body: () throws -> (value: T, keep: Bool)) throws -> T {
        guard transactionOpen else { throw DatabaseError(code: 0, message: "the transaction was rolled back", sqlState: "25P01") }
        try executeOnce("SAVEPOINT work")
        do {
            let (value, keep) = try body()
            if !keep { try executeOnce("ROLLBACK TO work") }
            try executeOnce("RELEASE work")
            return value
        } catch {
            if PQstatus(handle) == CONNECTION_OK {
                try executeOnce("ROLLBACK TO work")
                try executeOnce("RELEASE work")
            }
            throw error
        }
    }

    // MARK: - Engine-specific

    /// The largest id of `table` that is settled: every row with an id up to it that will
    /// ever be committed is committed now. Ids come from a sequence, drawn by concurrent
    /// transactions that commit in any order, so the largest id visible may have smaller
    /// ones still in flight; a reader that went on from it would skip them for good.
    ///
    /// Every write transaction has its transaction id from its first statement
    /// (`transaction(.write, _:)`), before it draws any id. So a transaction that drew an id
    /// up to the largest one read had its transaction id before that read: by the time of
    /// the next statement it has ended, or it is among the transactions then running. Those
    /// are read from `pg_stat_activity` (their `backend_xid`) after the largest id, and
    /// waited for. (A snapshot's list of transactions in progress would not do: it omits
    /// those whose id is past the last one completed.)
    ///
    /// Only the service's own sessions on this database are waited for (`datname`,
    /// `application_name`, which every caller sees): an operator's session left open in
    /// `BEGIN`, or a long `CREATE INDEX`, does not stop the event feed and the checkpoints.
    /// They are write transactions, over in milliseconds; after the lock timeout this fails
    /// as busy.
    ///
    /// Outside a transaction, or inside a write transaction (READ COMMITTED: each statement
    /// takes a snapshot of its own), which it does not wait for. A transaction that holds
    /// rows others write under makes any of them that waits for it wait in vain, until the
    /// timeout fails it as busy.
    func settledMaxID(of table: String) throws -> Int64 {
        guard let largest = try queryFirst("SELECT coalesce(max(id), 0) FROM \(table)", [], { $0.integer(0) }) else {
            preconditionFailure("an aggregate returned no row")
        }
        let started = MonotonicInstant.now()
        // The transaction ids of the service's other sessions on this database still among
        // `waitedFor` (all of them when nil), comma-separated.
        func running(among waitedFor: String?) throws -> String {
            // Inside a transaction, PostgreSQL keeps the activity view it read first: clear it,
            // or what changed since would not be seen.
            if transactionOpen { try executeOnce("SELECT pg_stat_clear_snapshot()") }
            return try queryFirst(
                """
                SELECT coalesce(string_agg(backend_xid::text, ','), '') FROM pg_stat_activity
                WHERE datname = current_database() AND application_name LIKE ?1 AND backend_xid IS NOT NULL
                  AND pid <> pg_backend_pid() AND (backend_xid::text = ANY(string_to_array(?2, ',')) OR ?2 IS NULL)
                """, [.text(PostgresConnection.applicationPrefix + "%"), SQLValue(waitedFor)], { $0.text(0) }) ?? ""
        }
        let waitedFor = try running(among: nil)
        while true {
            let still = try running(among: waitedFor)
            if still.isEmpty { return largest }
            let waited = (MonotonicInstant.now().microseconds - started.microseconds) / 1_000
            guard waited < Int64(lockTimeoutMilliseconds) else {
                throw DatabaseError(
                    code: 0, message: "write transactions \(still) still open after \(waited) ms; \(table) is not settled yet",
                    sqlState: "55P03")
            }
            usleep(1_000)
        }
    }

    /// The version in the one-row `schema_version` table, 0 when there is none yet.
    func schemaVersion() throws -> Int64 {
        let exists = try queryFirst("SELECT to_regclass('schema_version') IS NOT NULL AS present", []) { $0.integer(0) } ?? 0
        guard exists == 1 else { return 0 }
        return try queryFirst("SELECT version FROM schema_version", []) { $0.integer(0) } ?? 0
    }
}

/// A statement prepared on one connection, with its result columns by name (read from its
/// first result, then kept for the connection's life).
final class PostgresStatement {
    let name: String
    let parameterCount: Int
    var columns: [String: Int32]?

    init(name: String, parameterCount: Int) {
        self.name = name
        self.parameterCount = parameterCount
    }
}

/// The rows of one result, read in text format.
final class PostgresRows {
    private let result: OpaquePointer
    private let statement: PostgresStatement

    init(result: OpaquePointer, statement: PostgresStatement) {
        self.result = result
        self.statement = statement
    }

    func columnIndex(_ name: String) -> Int32? {
        if let columns = statement.columns { return columns[name] }
        var columns: [String: Int32] = [:]
        for index in 0..<PQnfields(result) {
            guard let name = PQfname(result, index) else { continue }
            // A name that appears twice (a join) keeps its first column.
            let key = String(cString: name)
            if columns[key] == nil { columns[key] = index }
        }
        statement.columns = columns
        return columns[name]
    }

    func isNull(_ row: Int32, _ column: Int32) -> Bool { PQgetisnull(result, row, column) != 0 }

    private func bytes(_ row: Int32, _ column: Int32) -> UnsafeBufferPointer<UInt8> {
        guard let value = PQgetvalue(result, row, column) else { return UnsafeBufferPointer(start: nil, count: 0) }
        let count = Int(PQgetlength(result, row, column))
        return UnsafeRawPointer(value).withMemoryRebound(to: UInt8.self, capacity: count) { UnsafeBufferPointer(start: $0, count: count) }
    }

    /// An integer in text form; a boolean (`t`/`f`, what `EXISTS` and `IS NOT NULL` give on
    /// PostgreSQL) reads as 1 or 0, as SQLite gives them. Anything else in a column the
    /// store reads as an integer is a bug in its query.
    func integer(_ row: Int32, _ column: Int32) -> Int64 {
        let text = bytes(row, column)
        if text.count == 1 && text[0] == UInt8(ascii: "t") { return 1 }
        if text.count == 1 && text[0] == UInt8(ascii: "f") { return 0 }
        guard let value = PostgresSQL.parseInteger(text) else {
            preconditionFailure("column \(column) is not an integer: \(String(decoding: text, as: UTF8.self))")
        }
        return value
    }

    func text(_ row: Int32, _ column: Int32) -> String {
        String(decoding: bytes(row, column), as: UTF8.self)
    }

    /// A bytea in PostgreSQL's hex output (`\x0a1b...`).
    func blob(_ row: Int32, _ column: Int32) -> [UInt8] {
        let text = bytes(row, column)
        guard text.count >= 2, text[0] == UInt8(ascii: "\\"), text[1] == UInt8(ascii: "x") else { return Array(text) }
        var decoded: [UInt8] = []
        decoded.reserveCapacity((text.count - 2) / 2)
        var index = 2
        while index + 1 < text.count {
            guard let high = PostgresSQL.hexValue(text[index]), let low = PostgresSQL.hexValue(text[index + 1]) else {
                preconditionFailure("bytea column \(column) is not in hex format")
            }
            decoded.append(high << 4 | low)
            index += 2
        }
        return decoded
    }
}

/// Parameter values in libpq's text format: one buffer of NUL-terminated strings.
struct PostgresParameters {
    private var buffer: [CChar] = []
    /// Each value's offset in `buffer`, or nil for SQL NULL.
    private var offsets: [Int?] = []

    init(_ values: [SQLValue]) throws {
        for value in values {
            switch value {
            case .integer(let number): append(Array(String(number).utf8))
            case .text(let text):
                // A C string ends at the first NUL, and PostgreSQL's text cannot hold one:
                // refuse rather than store a shortened value.
                let bytes = Array(text.utf8)
                guard !bytes.contains(0) else {
                    throw DatabaseError(code: 0, message: "text values cannot contain a NUL character", sqlState: "22021")
                }
                append(bytes)
            case .blob(let bytes):
                var hex: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
                let digits = Array("0123456789abcdef".utf8)
                for byte in bytes {
                    hex.append(digits[Int(byte >> 4)])
                    hex.append(digits[Int(byte & 0xF)])
                }
                append(hex)
            case .null: offsets.append(nil)
            }
        }
    }

    private mutating func append(_ bytes: [UInt8]) {
        offsets.append(buffer.count)
        buffer.append(contentsOf: bytes.map { CChar(bitPattern: $0) })
        buffer.append(0)
    }

    func withPointers<T>(_ body: ([UnsafePointer<CChar>?]) -> T) -> T {
        buffer.withUnsafeBufferPointer { base in
            body(offsets.map { offset in offset.flatMap { base.baseAddress.map(UnsafePointer.init)?.advanced(by: $0) } })
        }
    }
}

/// The store's SQL made PostgreSQL's, and the text it reads back.
enum PostgresSQL {
    /// Rewrites SQLite's placeholders to PostgreSQL's: `?N` becomes `$N`, and a bare `?`
    /// takes the number after the largest so far (SQLite's rule), outside string literals,
    /// quoted identifiers and comments.
    static func numberedParameters(_ sql: String) -> String {
        let bytes = Array(sql.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count + 8)
        var largest = 0
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                // A literal or quoted identifier, to its closing quote (a doubled quote is
                // an escaped one and simply closes and reopens).
                let end = bytes[(index + 1)...].firstIndex(of: byte) ?? bytes.count - 1
                output.append(contentsOf: bytes[index...end])
                index = end + 1
            case UInt8(ascii: "-") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "-"):
                let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count - 1
                output.append(contentsOf: bytes[index...end])
                index = end + 1
            case UInt8(ascii: "/") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "*"):
                var end = index + 2
                while end + 1 < bytes.count && !(bytes[end] == UInt8(ascii: "*") && bytes[end + 1] == UInt8(ascii: "/")) { end += 1 }
                end = min(end + 1, bytes.count - 1)
                output.append(contentsOf: bytes[index...end])
                index = end + 1
            case UInt8(ascii: "?"):
                var end = index + 1
                var number = 0
                while end < bytes.count, let digit = digitValue(bytes[end]) {
                    number = number * 10 + digit
                    end += 1
                }
                if end == index + 1 { number = largest + 1 }
                largest = max(largest, number)
                output.append(UInt8(ascii: "$"))
                output.append(contentsOf: Array(String(number).utf8))
                index = end
            default:
                output.append(byte)
                index += 1
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func digitValue(_ byte: UInt8) -> Int? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? Int(byte - UInt8(ascii: "0")) : nil
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A decimal integer as PostgreSQL prints one (an optional minus, digits), nil otherwise
    /// or on overflow.
    static func parseInteger(_ text: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard !text.isEmpty else { return nil }
        let negative = text[0] == UInt8(ascii: "-")
        var index = negative ? 1 : 0
        guard index < text.count else { return nil }
        var value: Int64 = 0
        while index < text.count {
            guard let digit = digitValue(text[index]) else { return nil }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(Int64(digit)) : shifted.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        return String(scalars)
    }
}
