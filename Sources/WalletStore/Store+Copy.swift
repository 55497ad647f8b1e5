import WalletDomain
import WalletPlatform
import CSQLite

/// Moving a deployment from its SQLite file to PostgreSQL (`walletctl migrate`): every row
/// of every table, ids and hashes as they are, so that the ledger's chain, the admin trail's
/// chain and every checkpoint an operator holds still verify on the other side.
extension Store {
    /// The tables a copy moves, each parent before the tables that refer to it, with the
    /// columns that identify a row. `SchemaTests` checks that this is every table of both
    /// schemas, so a table added later cannot be left behind.
    public static let copiedTables: [(name: String, key: String)] = [
        ("api_keys", "id"),
        ("wallets", "id"),
        ("transactions", "id"),
        ("ledger", "id"),
        ("idempotency", "api_key_id, key"),
        ("processor_passes", "id"),
        ("admin_actions", "id"),
        ("ledger_checkpoints", "ledger_id"),
        ("events", "id"),
        ("webhook_endpoints", "id"),
        ("webhook_deliveries", "id"),
    ]

    /// Tables a copy leaves alone: their content is derived, and the target's own triggers
    /// keep it (the count of API key changes).
    public static let derivedTables: Set<String> = ["api_key_changes"]

    /// Rows per `INSERT` on the way in: one round trip to the server carries this many.
    static let copyBatchRows = 200

    public struct CopiedTable: Sendable, Equatable {
        public let name: String
        public let rows: Int64
    }

    public struct CopyRefused: Error, CustomStringConvertible {
        public let description: String
    }

    /// The tables of this database, by name (SQLite's own, PostgreSQL's schema table and the
    /// derived tables left out).
    public func tableNames() throws -> Set<String> {
        let sql =
            database.isPostgres
            ? "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            : "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        return Set(try database.query(sql) { $0.text("name") }).subtracting(["schema_version"]).subtracting(Store.derivedTables)
    }

    /// A table's columns, in their order in the table.
    func columnNames(of table: String) throws -> [String] {
        if database.isPostgres {
            return try database.query(
                """
                SELECT column_name AS name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position
                """, [.text(table)]
            ) { $0.text("name") }
        }
        return try database.query("SELECT name FROM pragma_table_info(?1) ORDER BY cid", [.text(table)]) { $0.text("name") }
    }

    /// Copies every row of `source` (an SQLite store) into this store (a PostgreSQL one,
    /// freshly migrated and empty), inside this store's write transaction and under the
    /// source's write lock (one snapshot, and no write to the source meanwhile), then reads every table back and compares it with the source's
    /// (`contentDigest`): a copy that fails or differs throws, and the transaction rolls back,
    /// leaving nothing behind. Ids are kept, and each table's id sequence then continues
    /// after the largest.
    public func copyRows(from source: Store) throws -> [CopiedTable] {
        requireTransaction()
        guard !source.database.isPostgres, database.isPostgres else {
            throw CopyRefused(description: "a copy goes from an SQLite file to a PostgreSQL database")
        }
        let version = try source.schemaVersion()
        guard version == (try schemaVersion()) else {
            throw CopyRefused(description: "the source's schema is version \(version), the target's \(try schemaVersion())")
        }
        try requireSameTables(as: source)
        for (table, _) in Store.copiedTables {
            if try database.queryFirst("SELECT 1 FROM \(table) LIMIT 1", [], { _ in true }) != nil {
                throw CopyRefused(description: "the target is not empty: \(table) has rows; migrate copies into an empty database only")
            }
        }
        // The source's write lock, held to the end: nothing is written to it while it is
        // copied (a responder still running waits, then answers 503).
        return try source.write {
            let copied = try Store.copiedTables.map { table, key in
                let columns = try source.columnNames(of: table)
                guard Set(columns) == Set(try columnNames(of: table)) else {
                    throw CopyRefused(description: "\(table) has different columns on the two sides")
                }
                let rows = try copyTable(table, columns: columns, orderedBy: key, from: source)
                if key == "id" { try continueIdentity(of: table) }
                return CopiedTable(name: table, rows: rows)
            }
            // Read back, before the commit, against the same state of the source: a copy
            // that does not match is rolled back and the target stays empty.
            let differing = try tablesDiffering(from: source)
            guard differing.isEmpty else {
                throw CopyRefused(description: "after the copy, \(differing.joined(separator: ", ")) differ from the source; nothing was kept")
            }
            return copied
        }
    }

    private func requireSameTables(as source: Store) throws {
        let expected = Set(Store.copiedTables.map(\.name))
        for (side, tables) in [("source", try source.tableNames()), ("target", try tableNames())] where tables != expected {
            let missing = expected.subtracting(tables).sorted()
            let unknown = tables.subtracting(expected).sorted()
            throw CopyRefused(
                description: "the \(side)'s tables are not the ones a copy moves (missing: \(missing), unknown: \(unknown))")
        }
    }

    /// Streams one table from the source's snapshot into this store, `copyBatchRows` rows per
    /// statement. Returns the number of rows.
    private func copyTable(_ table: String, columns: [String], orderedBy key: String, from source: Store) throws -> Int64 {
        let columnList = columns.joined(separator: ", ")
        let row = "(" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        var batch: [SQLValue] = []
        batch.reserveCapacity(Store.copyBatchRows * columns.count)
        var count: Int64 = 0
        func flush() throws {
            guard !batch.isEmpty else { return }
            let rows = batch.count / columns.count
            let values = Array(repeating: row, count: rows).joined(separator: ", ")
            try database.run("INSERT INTO \(table) (\(columnList)) VALUES \(values)", batch)
            batch.removeAll(keepingCapacity: true)
        }
        try source.database.query("SELECT \(columnList) FROM \(table) ORDER BY \(key)") { source in
            for column in 0..<Int32(columns.count) { batch.append(source.value(column)) }
            count += 1
            if batch.count == Store.copyBatchRows * columns.count { try flush() }
        }
        try flush()
        return count
    }

    /// After rows came in with their ids, the table's identity sequence (if it has one)
    /// continues after the largest, so the next row the service inserts gets a new id.
    private func continueIdentity(of table: String) throws {
        try database.run(
            """
            SELECT setval(sequence, largest) FROM (
                SELECT pg_get_serial_sequence(?1, 'id') AS sequence, (SELECT max(id) FROM \(table)) AS largest
            ) AS identity
            WHERE sequence IS NOT NULL AND largest IS NOT NULL
            """, [.text(table)])
    }

    /// A digest of a table's content, whatever the order of its rows: the number of rows and
    /// the sum, lane by lane, of each row's SHA-256 over its values as text. Two stores whose
    /// digests of every table agree hold the same rows. (It proves a copy, not an adversary's
    /// absence: the audit's hash chains do that.)
    public func contentDigest(of table: String, columns: [String]) throws -> TableDigest {
        var digest = TableDigest()
        try database.query("SELECT \(columns.joined(separator: ", ")) FROM \(table)") { row in
            var text: [UInt8] = []
            for column in 0..<Int32(columns.count) {
                if row.isNull(column) {
                    text.append(0)
                } else {
                    text.append(contentsOf: Array(row.text(column).utf8))
                }
                text.append(0x1F)
            }
            digest.add(SHA256.hash(text))
        }
        return digest
    }

    /// Compares every copied table of this store with `other`'s, row by row through their
    /// digests. Returns the tables that differ (none after a good copy).
    func tablesDiffering(from other: Store) throws -> [String] {
        try Store.copiedTables.compactMap { table, _ in
            let columns = try columnNames(of: table)
            return try contentDigest(of: table, columns: columns) == other.contentDigest(of: table, columns: columns) ? nil : table
        }
    }
}

/// See `Store.contentDigest(of:columns:)`.
public struct TableDigest: Sendable, Equatable {
    public private(set) var rows: Int64 = 0
    private var lanes: [UInt64] = [0, 0, 0, 0]

    mutating func add(_ hash: [UInt8]) {
        precondition(hash.count == 32, "a SHA-256 digest is 32 bytes")
        rows += 1
        for lane in 0..<4 {
            var value: UInt64 = 0
            for byte in hash[(lane * 8)..<(lane * 8 + 8)] { value = value << 8 | UInt64(byte) }
            lanes[lane] &+= value
        }
    }
}

extension Row {
    /// The column's value with SQLite's own type, as a copy binds it again. Reading typed
    /// values is what the copy's source needs, and the source is always SQLite.
    func value(_ column: Int32) -> SQLValue {
        guard case .sqlite(let statement) = source else { preconditionFailure("typed values are read from SQLite") }
        switch sqlite3_column_type(statement.pointer, column) {
        case SQLITE_NULL: return .null
        case SQLITE_INTEGER: return .integer(integer(column))
        case SQLITE_BLOB: return .blob(blob(column))
        default: return .text(text(column))
        }
    }
}
