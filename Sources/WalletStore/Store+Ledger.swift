import WalletDomain
import WalletJSON
import WalletPlatform

extension Store {
    /// The hash the first ledger row chains from.
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The text a ledger row's hash covers, after the previous row's hash (its wallet's
    /// previous row for a row with `wallet_chain = 1`, the ledger's previous row for one
    /// written before version 7). Any change to a field, or to the row's position, changes it.
    public static func ledgerHashInput(
        previousHash: String, id: Int64, walletRowID: Int64, transactionID: Int64,
        kind: String, delta: Int64, balanceAfter: Int64, createdAt: Int64
    ) -> String {
        String(
            decoding: ledgerHashBytes(
                previousHash: previousHash, id: id, walletRowID: walletRowID, transactionID: transactionID, kind: kind, delta: delta,
                balanceAfter: balanceAfter, createdAt: createdAt),
            as: UTF8.self)
    }

    /// The same text as UTF-8 bytes, as SHA-256 takes it: `previous|id|wallet|transaction|
    /// kind|delta|balance_after|created_at`, integers in decimal. Written field by field
    /// rather than interpolated: every balance change hashes it, and a first checkpoint
    /// hashes it for every row of the ledger.
    static func ledgerHashBytes(
        previousHash: String, id: Int64, walletRowID: Int64, transactionID: Int64,
        kind: String, delta: Int64, balanceAfter: Int64, createdAt: Int64
    ) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(previousHash.utf8.count + kind.utf8.count + 7 * 21)
        bytes.append(contentsOf: previousHash.utf8)
        for value in [id, walletRowID, transactionID] {
            bytes.append(UInt8(ascii: "|"))
            JSONWriter.appendDecimal(value, to: &bytes)
        }
        bytes.append(UInt8(ascii: "|"))
        bytes.append(contentsOf: kind.utf8)
        for value in [delta, balanceAfter, createdAt] {
            bytes.append(UInt8(ascii: "|"))
            JSONWriter.appendDecimal(value, to: &bytes)
        }
        return bytes
    }

    /// Appends one ledger row, chained to its wallet's previous row (or to the genesis hash,
    /// for a wallet's first), with `wallet_chain = 1`. Must run in the transaction that
    /// changed the balance, after that change: the wallet's row is then this transaction's
    /// until it ends (on PostgreSQL, locked by the update), so no other transaction can
    /// chain a row of this wallet from the same previous row.
    ///
    /// No row of another wallet is read: writers of different wallets never wait for each
    /// other here. The id comes from `Database.nextID(of:)` (a sequence on PostgreSQL),
    /// and the hash covers it, so a row cannot be moved within its chain.
    func appendLedger(
        walletRowID: Int64, wallet: WalletID, transactionID: Int64, kind: LedgerEntry.Kind,
        delta: Int64, balanceAfter: Money, now: Timestamp
    ) throws -> LedgerEntry {
        requireTransaction()
        let head = try database.queryFirst(
            """
            SELECT \(database.nextID(of: "ledger")), p.hash, p.created_at
            FROM (SELECT 1 AS one) AS o LEFT JOIN (SELECT hash, created_at FROM ledger WHERE wallet_id = ?1 ORDER BY id DESC LIMIT 1) AS p ON true
            """,
            [.integer(walletRowID)]
        ) { ($0.integer(0), $0.optionalText(1), $0.optionalInteger(2)) }
        guard let (id, previousHash, previousTime) = head else { preconditionFailure("a SELECT of one row returned none") }
        // A wallet's rows never go back in time: its deposits are stamped by a responder's
        // clock and its debits and refunds by the database's (PostgreSQL), and a clock can be
        // stepped back. The balance at a time, and statements, read rows in time order.
        let createdAt = max(now.microseconds, previousTime ?? now.microseconds)
        let input = Store.ledgerHashBytes(
            previousHash: previousHash ?? Store.genesisHash, id: id, walletRowID: walletRowID, transactionID: transactionID,
            kind: kind.rawValue, delta: delta, balanceAfter: balanceAfter.minorUnits, createdAt: createdAt)
        try database.run(
            """
            INSERT INTO ledger (id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash, wallet_chain)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
            """,
            [
                .integer(id), .integer(walletRowID), .integer(transactionID), .text(kind.rawValue), .integer(delta),
                .integer(balanceAfter.minorUnits), .integer(createdAt), .text(SHA256.hex(input)),
            ])
        return LedgerEntry(wallet: wallet, transactionID: transactionID, kind: kind, delta: delta, balanceAfter: balanceAfter)
    }
}
