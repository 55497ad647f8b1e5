import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletServices
import ArgumentParser

/// `walletctl migrate --from FILE --to URI`: moves a deployment from its SQLite file to an
/// empty PostgreSQL database (README, "More than one machine").
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy an SQLite database into an empty PostgreSQL one, then verify both.",
        discussion: """
            Stop the service first: the copy holds the file's write lock while it runs (a \
            responder still running answers 503 meanwhile), but what is written after it stays \
            behind. The source must pass its audit. The target is migrated to this program's schema and must hold no \
            row; every row of every table is copied with its id and hash in one transaction, so a \
            copy that fails leaves the target empty. Afterwards every table is compared row by row \
            (a digest of each side), and the audit (balances against the ledger, both hash chains, \
            the checkpoints) must pass on both sides with the same heads. The copy is recorded in \
            the target's admin trail. Exits 1 if anything differs.
            """)
    @Flag(name: .long, help: "Print JSON instead of text.") var json = false
    @Option(name: .long, help: "The SQLite database file to copy.") var from: String
    @Option(name: .long, help: "The PostgreSQL database: a postgresql:// URI or a conninfo (no password in it).") var to: String

    func validate() throws {
        guard !DatabaseLocation(from).isPostgres else { throw ValidationError("--from is the SQLite file to copy") }
        guard DatabaseLocation(to).isPostgres else { throw ValidationError("--to is a PostgreSQL URI or conninfo") }
    }

    func run() throws {
        let source: Store
        let target: Store
        do {
            // Opened writable (never created), so that a file from an older version is first
            // brought to this version's schema, as any program of the service does at start.
            source = try Store.open(location: from, create: false)
        } catch {
            throw Failed(description: "cannot open \(from): \(error)")
        }
        do {
            target = try Store.open(location: to)
        } catch {
            throw Failed(description: "cannot open \(Store.describe(location: to)): \(error)")
        }
        // A source that does not pass its own audit is not moved: what is wrong with it
        // must be seen where it happened.
        let sourceAudit = try Auditor(store: source).verify()
        guard sourceAudit.passed else {
            for discrepancy in sourceAudit.discrepancies { Log.writeLine("walletctl: source: \(discrepancy)") }
            throw Failed(description: "the source fails its audit (walletctl audit verify); nothing was copied")
        }
        // The copy and its row in the admin trail commit together. A copy that fails is not
        // recorded in the target (that row would make it non-empty, and a second try would be
        // refused): it goes to syslog only, and the target stays as it was.
        let command = AdminCommand("migrate", ["from": .text(from)])
        let actor = AdminActor.current()
        let copied: [Store.CopiedTable]
        do {
            let action: AdminAction
            (copied, action) = try target.write {
                let copied = try target.copyRows(from: source)
                let action = try target.appendAdminAction(
                    actor: actor, command: command.name, arguments: command.argumentsJSON, result: "ok", now: Timestamp.now())
                return (copied, action)
            }
            AdminTrailLog.write(action)
        } catch {
            AdminTrailLog.writeUnrecorded(
                actor: actor, command: command, result: "failed", reason: "the copy failed and left the target empty: \(error)")
            if let refused = error as? Store.CopyRefused { throw Failed(description: "\(refused)") }
            throw error
        }
        let targetAudit = try Auditor(store: target).verify()
        var problems = sourceAudit.discrepancies.map { "source: \($0)" }
        problems += targetAudit.discrepancies.map { "target: \($0)" }
        // The checkpoint of the last row covers every row (the last row's hash covers only
        // its wallet's chain).
        if sourceAudit.checkpoint != targetAudit.checkpoint {
            problems.append("the ledger checkpoints differ: \(sourceAudit.checkpoint) and \(targetAudit.checkpoint)")
        }
        report(copied, checkpoint: targetAudit.checkpoint, problems: problems)
        guard problems.isEmpty else { throw Failed(description: "the audit of the copy found problems") }
    }

    private func report(_ copied: [Store.CopiedTable], checkpoint: LedgerCheckpoint, problems: [String]) {
        if json {
            var object = JSONObject()
            object.add("from", from)
            object.add("to", Store.describe(location: to))
            object.add(
                "tables",
                json: jsonArray(
                    copied.map { table in
                        var item = JSONObject()
                        item.add("name", table.name)
                        item.add("rows", table.rows)
                        return item.result
                    }))
            object.add("ledger_checkpoint", checkpoint.anchor)
            object.add("problems", json: jsonArray(problems.map(JSONWriter.quoted)))
            object.add("verified", json: problems.isEmpty ? "true" : "false")
            print(object.result)
            return
        }
        var table = Table("TABLE", "ROWS")
        for item in copied { table.add(item.name, String(item.rows)) }
        print(table.rendered)
        print("ledger checkpoint \(checkpoint.anchor)")
        for problem in problems { print("problem: \(problem)") }
        if problems.isEmpty { print("copied into \(Store.describe(location: to)); every table matches, the audit passes on both sides") }
    }
}
