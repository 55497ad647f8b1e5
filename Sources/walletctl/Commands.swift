import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP
import WalletServices
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

struct Wallets: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List wallets, show one, or give one to another API key.", subcommands: [List.self, Show.self, Assign.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List wallets in creation order.")
        @OptionGroup var common: Common
        @Option(help: "At most this many wallets.") var limit = 1000

        func run() throws {
            let wallets = try common.store().wallets(limit: limit)
            if common.json {
                print(jsonArray(wallets.map(\.json)))
                return
            }
            var table = Table("UUID", "BALANCE", "HELD", "API_KEY", "CREATED_AT", "UPDATED_AT")
            for wallet in wallets {
                table.add(
                    wallet.id.text, String(wallet.balance.minorUnits), String(wallet.held.minorUnits), String(wallet.owner.rawValue),
                    wallet.createdAt.rfc3339, wallet.updatedAt.rfc3339)
            }
            print(table.rendered)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one wallet and its latest transactions.")
        @OptionGroup var common: Common
        @Argument(help: "The wallet's uuid.") var uuid: String

        func run() throws {
            let store = try common.store()
            guard let wallet = try store.wallet(try parseWalletID(uuid)) else { throw Failed(description: "no wallet \(uuid)") }
            let recent = try store.transactions(matching: AdminTransactionFilter(wallet: wallet.id, limit: 20))
            if common.json {
                var object = JSONObject()
                object.add("wallet", json: wallet.json)
                object.add("held", wallet.held.minorUnits)
                object.add("recent_transactions", json: jsonArray(recent.map(\.json)))
                print(object.result)
                return
            }
            print("wallet   \(wallet.id)\nbalance  \(wallet.balance)\nheld     \(wallet.held)\napi_key  \(wallet.owner)")
            print("created  \(wallet.createdAt.rfc3339)\nupdated  \(wallet.updatedAt.rfc3339)\n")
            print(transactionTable(recent))
        }
    }
}

struct Transactions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List transactions.", subcommands: [List.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List transactions, newest first.")
        @OptionGroup var common: Common
        @Option(help: "Only this wallet's.") var wallet: String?
        @Option(help: "PENDING, PROCESSING, COMPLETED, FAILED or CANCELED.") var status: String?
        @Option(help: "DEPOSIT or WITHDRAWAL.") var type: String?
        @Option(help: "Created at or after this time (RFC 3339).") var since: String?
        @Option(help: "Created before this time (RFC 3339).") var until: String?
        @Option(help: "At most this many.") var limit = 100

        func run() throws {
            var filter = AdminTransactionFilter(limit: limit)
            filter.wallet = try wallet.map(parseWalletID)
            if let status {
                guard let parsed = TransactionStatus(rawValue: status.uppercased()) else { throw ValidationError("unknown status \(status)") }
                filter.status = parsed
            }
            if let type {
                guard let parsed = TransactionType(rawValue: type.uppercased()) else { throw ValidationError("unknown type \(type)") }
                filter.type = parsed
            }
            filter.createdFrom = try since.map(parseTimestamp)
            filter.createdBefore = try until.map(parseTimestamp)
            let transactions = try common.store().transactions(matching: filter)
            print(common.json ? jsonArray(transactions.map(\.json)) : transactionTable(transactions))
        }
    }
}

struct Withdrawals: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Act on withdrawals.", subcommands: [Cancel.self])

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a PENDING withdrawal.")
        @OptionGroup var common: Common
        @Argument(help: "The withdrawal's transaction id.") var id: Int64

        func run() throws {
            let store = try common.store(writable: true)
            let transaction: Transaction
            do {
                transaction = try administer(store, AdminCommand("withdrawals cancel", ["id": .integer(id)])) { store, now in
                    switch try store.cancelWithdrawal(id, now: now) {
                    case .success(let transaction):
                        return transaction
                    case .failure(let error):
                        var apiError = APIError(error)
                        if error == .transactionNotFound { apiError.message = "no transaction with id \(id)" }
                        throw apiError
                    }
                }
            } catch let apiError as APIError {
                if common.json { print(apiError.response.body) }
                throw Failed(description: apiError.message, code: apiError.code)
            }
            let actor = AdminActor.current()
            Log(component: "walletctl").write(
                .info, "withdrawal",
                [
                    "withdrawal": .integer(transaction.id), "wallet": .string(transaction.wallet.text),
                    "amount": .integer(transaction.amount.minorUnits), "status": .string(transaction.status.rawValue),
                    "failure_reason": .string(transaction.failureReason?.rawValue), "uid": .integer(actor.uid),
                    "login_uid": .integer(actor.loginUID), "sudo_uid": .integer(actor.sudoUID),
                ])
            print(common.json ? transaction.json : "withdrawal \(id) canceled")
        }
    }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Audit the ledger and the admin trail.", subcommands: [Verify.self, AuditLog.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every balance from the ledger, check every invariant, both hash chains and the anchors given.",
            discussion: """
                Exits 1 and names each discrepancy when anything is off. An anchor is a ledger checkpoint \
                ID:HASH as wallet-processor logs it (event ledger_checkpoint) or a statement ends with; \
                the check fails when the ledger no longer yields it.
                """)
        @OptionGroup var common: Common
        @Option(
            name: .customLong("anchor"), parsing: .singleValue,
            help: ArgumentHelp("A ledger checkpoint ID:HASH the ledger must still yield (repeatable).", valueName: "ID:HASH"))
        var anchors: [String] = []

        func run() throws {
            let parsed = try anchors.map { text in
                guard let anchor = LedgerCheckpoint(anchor: text) else {
                    throw ValidationError("\(text) is not an anchor: ID:HASH, a ledger row id and 64 hex digits")
                }
                return anchor
            }
            let report = try Auditor(store: try common.store()).verify(anchors: parsed)
            if common.json {
                var object = JSONObject()
                object.add("passed", json: report.passed ? "true" : "false")
                object.add("ledger_rows", report.ledgerRows)
                object.add("wallets", report.wallets)
                object.add("transactions", report.transactions)
                object.add("head_hash", report.headHash)
                object.add("checkpoint", json: checkpointJSON(report.checkpoint))
                object.add(
                    "anchors",
                    json: jsonArray(
                        report.anchors.map { anchor, held in
                            var item = JSONObject()
                            item.add("ledger_id", anchor.ledgerID)
                            item.add("hash", anchor.hash)
                            item.add("held", json: held ? "true" : "false")
                            return item.result
                        }))
                object.add("admin_actions", report.adminActions)
                object.add("admin_head_hash", report.adminHeadHash)
                object.add("discrepancies", json: jsonArray(report.discrepancies.map(\.json)))
                print(object.result)
            } else {
                print(
                    "checked \(report.ledgerRows) ledger rows, \(report.wallets) wallets, \(report.transactions) transactions, \(report.adminActions) admin actions"
                )
                print("ledger head \(report.headHash)")
                print("ledger checkpoint \(report.checkpoint.anchor)")
                print("admin trail head \(report.adminHeadHash)")
                for (anchor, held) in report.anchors { print("anchor \(anchor.anchor): \(held ? "holds" : "DOES NOT HOLD")") }
                for discrepancy in report.discrepancies { print(discrepancy) }
                print(report.passed ? "audit passed" : "audit FAILED: \(report.discrepancies.count) discrepancies")
            }
            if !report.passed { throw ExitCode(1) }
        }
    }

    struct AuditLog: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "log", abstract: "List the admin trail: who changed what with walletctl, newest first.")
        @OptionGroup var common: Common
        @Option(help: "At most this many actions.") var limit = 100

        func run() throws {
            let actions = try common.store().adminActions(limit: limit)
            if common.json {
                print(jsonArray(actions.map(\.json)))
                return
            }
            var table = Table("ID", "TIME", "UID", "LOGIN_UID", "SUDO_UID", "COMMAND", "ARGUMENTS", "RESULT")
            for action in actions {
                table.add(
                    String(action.id), action.createdAt.rfc3339, String(action.actor.uid), action.actor.loginUID.map(String.init) ?? "",
                    action.actor.sudoUID.map(String.init) ?? "", action.command, action.arguments, action.result)
            }
            print(table.rendered)
        }
    }
}

func checkpointJSON(_ checkpoint: LedgerCheckpoint) -> String {
    var object = JSONObject()
    object.add("ledger_id", checkpoint.ledgerID)
    object.add("hash", checkpoint.hash)
    return object.result
}

struct Reconcile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare COMPLETED withdrawals with the bank's record of payouts.",
        discussion: "The bank ledger is tab-separated: paid_at, idempotency key, wallet, amount, reference. Exits 1 on any finding.")
    @OptionGroup var common: Common
    @Option(name: .customLong("bank-ledger"), help: "The bank's payout ledger file.") var bankLedger: String

    func run() throws {
        guard let text = readFile(bankLedger) else { throw Failed(description: "cannot read \(bankLedger)") }
        let report = try Reconciler.reconcile(store: try common.store(), bankPayouts: try BankPayout.parseLedger(text))
        if common.json {
            var object = JSONObject()
            object.add("passed", json: report.passed ? "true" : "false")
            object.add("completed_here", Int64(report.completedHere))
            object.add("paid_by_bank", Int64(report.paidByBank))
            object.add("findings", json: jsonArray(report.findings.map(\.json)))
            print(object.result)
        } else {
            print("\(report.completedHere) withdrawals COMPLETED here, \(report.paidByBank) payouts in the bank ledger")
            for finding in report.findings { print(finding) }
            print(report.passed ? "reconciliation passed" : "reconciliation FAILED: \(report.findings.count) findings")
        }
        if !report.passed { throw ExitCode(1) }
    }
}

func readFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    return ferror(file) == 0 ? String(decoding: bytes, as: UTF8.self) : nil
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the live database to PATH, consistently, while the service runs.",
        discussion: """
            Uses SQLite's online backup: the copy is one snapshot of the database. PATH must not exist. \
            A PostgreSQL database is backed up with pg_dump (or the server's own tools) instead.
            """)
    @OptionGroup var common: Common
    @Argument(help: "Where to write the copy.") var path: String

    func run() throws {
        guard access(path, F_OK) != 0 else { throw Failed(description: "\(path) exists; choose a new file") }
        let store = try common.store()
        guard !store.isPostgres else {
            throw Failed(description: "walletctl backup copies an SQLite file; back a PostgreSQL database up with pg_dump")
        }
        try store.backup(to: path)
        let copy = try Database(path: path, queryOnly: true)
        guard try copy.scalarText("PRAGMA integrity_check") == "ok" else {
            throw Failed(description: "the copy at \(path) failed its integrity check")
        }
        print(common.json ? "{\"backup\": \(JSONWriter.quoted(path)), \"integrity\": \"ok\"}" : "backed up to \(path) (integrity ok)")
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counts and sums by status and type, what is due, the last processor pass.")
    @OptionGroup var common: Common

    func run() throws {
        let stats = try common.store().statistics(now: Timestamp.now())
        if common.json {
            var object = JSONObject()
            object.add("wallets", stats.wallets)
            object.add("total_balance", stats.totalBalance)
            object.add("total_held", stats.totalHeld)
            object.add(
                "transactions",
                json: jsonArray(
                    stats.groups.map { group in
                        var item = JSONObject()
                        item.add("type", group.type.rawValue)
                        item.add("status", group.status.rawValue)
                        item.add("count", group.count)
                        item.add("amount", group.amount)
                        return item.result
                    }))
            object.add("due", stats.dueCount)
            object.add("oldest_due", stats.oldestDue?.rfc3339)
            object.add("outcome_unknown", stats.outcomeUnknownCount)
            if let pass = stats.lastPass {
                var item = JSONObject()
                item.add("started_at", pass.startedAt.rfc3339)
                item.add("finished_at", pass.finishedAt.rfc3339)
                item.add("claimed", pass.claimed)
                item.add("completed", pass.completed)
                item.add("failed", pass.failed)
                item.add("retried", pass.retried)
                object.add("last_pass", json: item.result)
            } else {
                object.add("last_pass", json: "null")
            }
            print(object.result)
            return
        }
        print("wallets \(stats.wallets), total balance \(stats.totalBalance), held for the bank \(stats.totalHeld)\n")
        var table = Table("TYPE", "STATUS", "COUNT", "AMOUNT")
        for group in stats.groups { table.add(group.type.rawValue, group.status.rawValue, String(group.count), String(group.amount)) }
        print(table.rendered)
        print("\ndue now: \(stats.dueCount)" + (stats.oldestDue.map { ", oldest due since \($0.rfc3339)" } ?? ""))
        print("held with an unknown bank outcome: \(stats.outcomeUnknownCount)")
        if let pass = stats.lastPass {
            print(
                "last processor pass: \(pass.startedAt.rfc3339) to \(pass.finishedAt.rfc3339), claimed \(pass.claimed), completed \(pass.completed), failed \(pass.failed), retried \(pass.retried)"
            )
        } else {
            print("last processor pass: none yet")
        }
    }
}
