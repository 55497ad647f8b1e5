import WalletDomain
import WalletJSON
import WalletPlatform

/// A ledger checkpoint: a ledger row id and a hash of every ledger row up to and including
/// it (docs/CHECKPOINTS.md). Written somewhere the database's owner cannot rewrite (the
/// journal, a remote syslog, a statement sent out), it is an anchor: `walletctl audit verify
/// --anchor ID:HASH` fails once any row up to `ID` was changed, removed or inserted, even if
/// whoever did it recomputed the ledger's own hash chain.
///
/// The hash is a function of the rows' contents alone, never of their stored `hash`
/// column, so anchors keep working whatever becomes of the chain:
///
///     c(0) = "0" × 64
///     c(n) = hex(SHA-256(c(n-1) "|" id "|" wallet_id "|" transaction_id "|" kind "|" delta
///                        "|" balance_after "|" created_at))   for the rows in id order
///
/// with integers in decimal. (For the rows written before schema version 7, which form one
/// chain through the ledger, this is the chain's own formula, so on an intact ledger `c(n)`
/// equals row `n`'s stored hash; later rows chain per wallet and have hashes of their own.)
///
/// Ids may skip (on PostgreSQL a rolled-back transaction leaves its drawn id unused): the
/// fold takes the rows there are. A checkpoint is taken only up to a settled id
/// (`Store.settledLedgerID()`), below which no row can still appear.
public struct LedgerCheckpoint: Sendable, Equatable, CustomStringConvertible {
    public var ledgerID: Int64
    public var hash: String

    public init(ledgerID: Int64, hash: String) {
        self.ledgerID = ledgerID
        self.hash = hash
    }

    /// Before the first row.
    public static let genesis = LedgerCheckpoint(ledgerID: 0, hash: Store.genesisHash)

    /// `ID:HASH`, as logged and as `--anchor` takes it: a non-negative decimal id and 64 hex
    /// digits (either case).
    public init?(anchor text: String) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 19, parts[0].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let id = Int64(parts[0]), parts[1].utf8.count == 64,
            parts[1].utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) })
        else { return nil }
        ledgerID = id
        hash = String(decoding: parts[1].utf8.map { $0 >= 65 && $0 <= 70 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    public var anchor: String { "\(ledgerID):\(hash)" }
    public var description: String { anchor }

    /// The checkpoint after `row`, from the one before it.
    public func next(_ row: StoredLedgerRow) -> LedgerCheckpoint {
        LedgerCheckpoint(ledgerID: row.id, hash: LedgerCheckpoint.step(hash, row))
    }

    /// c(n) from c(n-1) and row n.
    public static func step(_ previous: String, _ row: StoredLedgerRow) -> String {
        SHA256.hex(stepBytes(previous, row))
    }

    /// What c(n) hashes.
    public static func stepInput(_ previous: String, _ row: StoredLedgerRow) -> String {
        String(decoding: stepBytes(previous, row), as: UTF8.self)
    }

    /// The same as UTF-8 bytes (the text the single chain of rows before version 7 hashes too).
    static func stepBytes(_ previous: String, _ row: StoredLedgerRow) -> [UInt8] {
        Store.ledgerHashBytes(
            previousHash: previous, id: row.id, walletRowID: row.walletRowID, transactionID: row.transactionID, kind: row.kind,
            delta: row.delta, balanceAfter: row.balanceAfter, createdAt: row.createdAt)
    }
}

extension Store {
    /// How many ledger rows a checkpoint reads at a time.
    static let checkpointChunkRows = 10_000

    /// The columns `ledgerRow` reads, in this order: every query it decodes starts with them.
    static let ledgerColumns = "id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash, wallet_chain"

    /// Read by position rather than by name (a name is a lookup per column per row): a first
    /// checkpoint decodes every row of the ledger.
    static func ledgerRow(from row: Row) -> StoredLedgerRow {
        StoredLedgerRow(
            id: row.integer(0), walletRowID: row.integer(1), transactionID: row.integer(2), kind: row.text(3), delta: row.integer(4),
            balanceAfter: row.integer(5), createdAt: row.integer(6), hash: row.text(7), walletChain: row.integer(8))
    }

    /// The checkpoints the processor stored, in id order.
    public func storedCheckpoints() throws -> [LedgerCheckpoint] {
        try database.query("SELECT ledger_id, hash FROM ledger_checkpoints ORDER BY ledger_id") {
            LedgerCheckpoint(ledgerID: $0.integer(0), hash: $0.text(1))
        }
    }

    /// Keeps a checkpoint, for the next pass to continue from (a second copy of one already
    /// kept is ignored).
    public func storeCheckpoint(_ checkpoint: LedgerCheckpoint, now: Timestamp) throws {
        requireTransaction()
        guard checkpoint.ledgerID > 0 else { return }
        try database.run(
            "INSERT INTO ledger_checkpoints (ledger_id, hash, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [.integer(checkpoint.ledgerID), .text(checkpoint.hash), .integer(now.microseconds)])
    }

    /// The checkpoint through row `id`, continued from the nearest stored checkpoint at or
    /// before it (so its cost is the rows since then, not the ledger). nil when there is no
    /// row `id`; the genesis checkpoint for 0.
    public func checkpoint(through id: Int64) throws -> LedgerCheckpoint? {
        guard id > 0 else { return id == 0 ? .genesis : nil }
        let start =
            try database.queryFirst(
                "SELECT ledger_id, hash FROM ledger_checkpoints WHERE ledger_id <= ? ORDER BY ledger_id DESC LIMIT 1", [.integer(id)]
            ) { LedgerCheckpoint(ledgerID: $0.integer(0), hash: $0.text(1)) } ?? .genesis
        let reached = try fold(from: start, through: id)
        return reached.ledgerID == id ? reached : nil
    }

    /// The id of the last ledger row a checkpoint may cover now: below it no row can still
    /// appear (`Database.settledMaxID(of:)`). Outside any transaction.
    public func settledLedgerID() throws -> Int64 {
        try database.settledMaxID(of: "ledger")
    }

    /// The checkpoint of the last row up to `settled` (`settledLedgerID()`), continued from
    /// the last stored checkpoint; nil while the ledger has no row up to it. Throws when the
    /// ledger ends before that checkpoint: rows were removed.
    public func latestCheckpoint(settled: Int64) throws -> LedgerCheckpoint? {
        guard let last = try database.scalarInteger("SELECT max(id) FROM ledger WHERE id <= ?", [.integer(settled)]) else { return nil }
        let start =
            try database.queryFirst("SELECT ledger_id, hash FROM ledger_checkpoints ORDER BY ledger_id DESC LIMIT 1") {
                LedgerCheckpoint(ledgerID: $0.integer(0), hash: $0.text(1))
            } ?? .genesis
        guard start.ledgerID <= last else {
            throw DatabaseError(
                code: 0, message: "the ledger ends at row \(last), before its stored checkpoint at row \(start.ledgerID): rows were removed")
        }
        return try fold(from: start, through: last)
    }

    /// Continues `start` over the rows after it up to `id`, a chunk at a time.
    private func fold(from start: LedgerCheckpoint, through id: Int64) throws -> LedgerCheckpoint {
        var current = start
        while current.ledgerID < id {
            let rows = try database.query(
                "SELECT \(Store.ledgerColumns) FROM ledger WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                [.integer(current.ledgerID), .integer(id), .integer(Int64(Store.checkpointChunkRows))], Store.ledgerRow)
            guard !rows.isEmpty else { break }
            for row in rows { current = current.next(row) }
        }
        return current
    }

    /// The id of the last ledger row, of any wallet, written before `time`; 0 if none.
    public func lastLedgerID(before time: Timestamp) throws -> Int64 {
        try database.scalarInteger("SELECT coalesce(max(id), 0) FROM ledger WHERE created_at < ?", [.integer(time.microseconds)]) ?? 0
    }
}
