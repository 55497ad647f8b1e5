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
        "\(previousHash)|\(id)|\(walletRowID)|\(transactionID)|\(kind)|\(delta)|\(balanceAfter)|\(createdAt)"
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
        let input = Store.ledgerHashInput(
            previousHash: last?.1 ?? Store.genesisHash, id: id, walletRowID: walletRowID, transactionID: transactionID,
            kind: kind.rawValue, delta: delta, balanceAfter: balanceAfter.minorUnits, createdAt: now.microseconds)
        try database.run(
            """
            INSERT INTO ledger (id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .integer(id), .integer(walletRowID), .integer(transactionID), .text(kind.rawValue), .integer(delta),
                .integer(balanceAfter.minorUnits), .integer(now.microseconds), .text(SHA256.hex(Array(input.utf8))),
            ])
        return LedgerEntry(wallet: wallet, transactionID: transactionID, kind: kind, delta: delta, balanceAfter: balanceAfter)
    }
}
