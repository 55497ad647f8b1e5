import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletServices
import ArgumentParser

struct Statement: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A wallet's statement for [FROM, TO): opening balance, every ledger row, closing balance, ledger checkpoint.",
        discussion: """
            The opening balance is the balance before FROM, the closing one the balance before TO, so that one \
            statement's closing balance is the next one's opening. The checkpoint ID:HASH covers every ledger \
            row (of every wallet) written before TO: `walletctl audit verify --anchor ID:HASH` checks that the \
            ledger still yields it. CSV (RFC 4180, a header row, CRLF line ends) unless --format json (or --json).
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case csv, json
    }

    @OptionGroup var common: Common
    @Argument(help: "The wallet's uuid.") var uuid: String
    @Option(help: "The start of the period, included (RFC 3339).") var from: String
    @Option(help: "The end of the period, excluded (RFC 3339).") var to: String
    @Option(help: "The output format.") var format: Format = .csv

    func run() throws {
        let wallet = try parseWalletID(uuid)
        let start = try parseTimestamp(from)
        let end = try parseTimestamp(to)
        guard start <= end else { throw ValidationError("--from must not be after --to") }
        let store = try common.store()
        let settled = try store.settledLedgerID()
        let statement = try store.read {
            guard let found = try store.wallet(wallet) else { throw Failed(description: "no wallet \(uuid)") }
            return try WalletStatement(store: store, wallet: found, from: start, to: end, settled: settled)
        }
        if common.json || format == .json {
            print(statement.json)
        } else {
            print(statement.csv, terminator: "")
        }
    }
}

/// One wallet's statement for a period, read in one snapshot.
struct WalletStatement {
    var wallet: WalletID
    var from: Timestamp
    var to: Timestamp
    var opening: Int64
    var closing: Int64
    var rows: [StoredLedgerRow]
    var checkpoint: LedgerCheckpoint

    /// `settled`: `Store.settledLedgerID()`, taken before the read transaction; the
    /// checkpoint covers no row past it, whose smaller ids might still be in flight.
    init(store: Store, wallet: Wallet, from: Timestamp, to: Timestamp, settled: Int64) throws {
        self.wallet = wallet.id
        self.from = from
        self.to = to
        opening = try store.balance(ofWalletRow: wallet.rowID, through: from, inclusive: false)
        rows = try store.ledgerRows(ofWalletRow: wallet.rowID, from: from, to: to)
        closing = try store.balance(ofWalletRow: wallet.rowID, through: to, inclusive: false)
        let last = min(try store.lastLedgerID(before: to), settled)
        guard let checkpoint = try store.checkpoint(through: last) else {
            throw Failed(description: "the ledger has no row \(last) to checkpoint: rows were removed (run walletctl audit verify)")
        }
        self.checkpoint = checkpoint
    }

    /// The columns of the CSV form, in order. A new column is a name here and a value in
    /// each record below (empty where it does not apply).
    static let columns = ["record", "wallet", "time", "ledger_id", "transaction_id", "kind", "amount", "balance_after", "hash"]

    /// The records: `opening`, one `entry` per ledger row, `closing`, `checkpoint`.
    var records: [[String: String]] {
        var records: [[String: String]] = [
            ["record": "opening", "wallet": wallet.text, "time": from.rfc3339, "balance_after": String(opening)]
        ]
        for row in rows {
            records.append([
                "record": "entry", "wallet": wallet.text, "time": Timestamp(microseconds: row.createdAt).rfc3339,
                "ledger_id": String(row.id), "transaction_id": String(row.transactionID), "kind": row.kind,
                "amount": String(row.delta), "balance_after": String(row.balanceAfter),
            ])
        }
        records.append(["record": "closing", "wallet": wallet.text, "time": to.rfc3339, "balance_after": String(closing)])
        records.append([
            "record": "checkpoint", "time": to.rfc3339, "ledger_id": String(checkpoint.ledgerID), "hash": checkpoint.hash,
        ])
        return records
    }

    /// RFC 4180: a header row, CRLF after every record, a field quoted when it holds a
    /// comma, a quote, CR or LF, its quotes doubled.
    var csv: String {
        var text = CSV.record(WalletStatement.columns)
        for record in records { text += CSV.record(WalletStatement.columns.map { record[$0] ?? "" }) }
        return text
    }

    var json: String {
        var object = JSONObject()
        object.add("wallet", wallet.text)
        object.add("from", from.rfc3339)
        object.add("to", to.rfc3339)
        object.add("opening_balance", opening)
        object.add(
            "entries",
            json: jsonArray(
                rows.map { row in
                    var entry = JSONObject()
                    entry.add("time", Timestamp(microseconds: row.createdAt).rfc3339)
                    entry.add("ledger_id", row.id)
                    entry.add("transaction_id", row.transactionID)
                    entry.add("kind", row.kind)
                    entry.add("amount", row.delta)
                    entry.add("balance_after", row.balanceAfter)
                    return entry.result
                }))
        object.add("closing_balance", closing)
        object.add("checkpoint", json: checkpointJSON(checkpoint))
        return object.result
    }
}

enum CSV {
    static func record(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",") + "\r\n"
    }

    static func field(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0D || $0 == 0x0A }) else {
            return text
        }
        return "\"" + text.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
    }
}
