import WalletDomain
import WalletJSON
import WalletPlatform

extension Store {
    /// The hash the first ledger row chains from.
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The text a ledger row's hash covers, after the previous row's hash. Any change to
    /// a field, or to the row's position, changes it.
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

    /// Appends one ledger row, chained to the last one. Must run in the transaction that
    /// changed the balance.
    func appendLedger(
        walletRowID: Int64, wallet: WalletID, transactionID: Int64, kind: LedgerEntry.Kind,
        delta: Int64, balanceAfter: Money, now: Timestamp
    ) throws -> LedgerEntry {
        requireTransaction()
        let last = try database.queryFirst("SELECT id, hash FROM ledger ORDER BY id DESC LIMIT 1") { ($0.integer(0), $0.text(1)) }
        let id = (last?.0 ?? 0) + 1
        let input = Store.ledgerHashBytes(
            previousHash: last?.1 ?? Store.genesisHash, id: id, walletRowID: walletRowID, transactionID: transactionID,
            kind: kind.rawValue, delta: delta, balanceAfter: balanceAfter.minorUnits, createdAt: now.microseconds)
        try database.run(
            """
            INSERT INTO ledger (id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .integer(id), .integer(walletRowID), .integer(transactionID), .text(kind.rawValue), .integer(delta),
                .integer(balanceAfter.minorUnits), .integer(now.microseconds), .text(SHA256.hex(input)),
            ])
        return LedgerEntry(wallet: wallet, transactionID: transactionID, kind: kind, delta: delta, balanceAfter: balanceAfter)
    }
}
