import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletServices
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct WalletCTL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walletctl",
        abstract: "Inspect, audit, reconcile and back up the wallet service's database; manage its API keys and webhooks; print statements.",
        discussion: """
            Reads WALLET_DB (an SQLite file, default var/wallet.db, or a PostgreSQL URI or conninfo) and the other WALLET_* settings from the environment. \
            Every command that changes the database (withdrawals cancel, keys create and revoke, wallets \
            assign, webhooks redeliver) is recorded in the admin trail (audit log) with who ran it, and \
            logged through syslog (facility authpriv).
            """,
        subcommands: [
            Wallets.self, Keys.self, Transactions.self, Withdrawals.self, Audit.self, Statement.self, Reconcile.self, Backup.self,
            Stats.self, Webhooks.self, Migrate.self,
        ])
}

/// Options every command shares.
struct Common: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    @Option(name: .long, help: "The database: an SQLite file or a PostgreSQL URI or conninfo (default: $WALLET_DB, else var/wallet.db).")
    var database: String?

    /// Opens the store: query-only unless the command writes. Never creates a database:
    /// a mistyped path must fail, not start an empty ledger.
    func store(writable: Bool = false) throws -> Store {
        let settings = try Settings.fromEnvironment()
        let location = database ?? settings.databasePath
        do {
            return try Store.open(location: location, queryOnly: !writable, create: false)
        } catch {
            throw Failed(description: "cannot open the database \(Store.describe(location: location)): \(error)")
        }
    }
}

/// Exit codes: 0 all well, 1 the check found discrepancies or the operation failed,
/// 64 usage errors (ArgumentParser's own).
struct Failed: Error, CustomStringConvertible {
    let description: String
    /// What the admin trail records as the result of a command that failed so.
    var code = "failed"
}

func parseWalletID(_ text: String) throws -> WalletID {
    guard let id = WalletID(text) else { throw ValidationError("\(text) is not a wallet uuid") }
    return id
}

func parseTimestamp(_ text: String) throws -> Timestamp {
    guard let timestamp = Timestamp(rfc3339: text) else {
        throw ValidationError("\(text) is not an RFC 3339 time with an offset, such as 2026-02-15T15:00:00Z")
    }
    return timestamp
}

func jsonArray(_ items: [String]) -> String {
    "[" + items.joined(separator: ", ") + "]"
}

extension Transaction {
    var tableRow: [String] {
        [
            String(id), wallet.text, type.rawValue, status.rawValue, String(amount.minorUnits), String(attempts),
            failureReason?.rawValue ?? "", scheduledFor?.rfc3339 ?? "", createdAt.rfc3339,
        ]
    }

    static let tableHeaders = ["ID", "WALLET", "TYPE", "STATUS", "AMOUNT", "ATTEMPTS", "REASON", "SCHEDULED_FOR", "CREATED_AT"]
}

func transactionTable(_ transactions: [Transaction]) -> String {
    var table = Table(headers: Transaction.tableHeaders)
    table.rows = transactions.map(\.tableRow)
    return table.rendered
}
