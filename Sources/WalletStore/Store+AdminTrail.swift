import WalletDomain
import WalletJSON
import WalletPlatform

/// One row of the admin trail, as stored.
public struct AdminAction: Sendable, Equatable {
    public var id: Int64
    public var createdAt: Timestamp
    public var actor: AdminActor
    public var command: String
    /// A JSON object, secrets redacted.
    public var arguments: String
    /// `ok`, or the code of the error that stopped the command.
    public var result: String
    public var hash: String

    /// The row as one JSON object: for `walletctl audit log --json` and the syslog line.
    public var json: String {
        var object = JSONObject()
        object.add("id", id)
        object.add("time", createdAt.rfc3339)
        object.add("uid", actor.uid)
        object.add("login_uid", actor.loginUID)
        object.add("sudo_uid", actor.sudoUID)
        object.add("command", command)
        object.add("arguments", json: arguments)
        object.add("result", result)
        object.add("hash", hash)
        return object.result
    }
}

extension Store {
    /// The text an admin row's hash covers, after the previous row's hash (the ledger's
    /// scheme, `ledgerHashInput`). Text fields are JSON-quoted, so no value can pass for a
    /// separator; an absent uid is `-`.
    public static func adminHashInput(
        previousHash: String, id: Int64, createdAt: Int64, actor: AdminActor, command: String, arguments: String, result: String
    ) -> String {
        let login = actor.loginUID.map(String.init) ?? "-"
        let sudo = actor.sudoUID.map(String.init) ?? "-"
        return "\(previousHash)|\(id)|\(createdAt)|\(actor.uid)|\(login)|\(sudo)|"
            + "\(JSONWriter.quoted(command))|\(JSONWriter.quoted(arguments))|\(JSONWriter.quoted(result))"
    }

    /// Appends one row to the admin trail, chained to the last one. Must run in the write
    /// transaction of the change it records (or, for a command that failed, in one of its
    /// own).
    @discardableResult
    public func appendAdminAction(actor: AdminActor, command: String, arguments: String, result: String, now: Timestamp) throws
        -> AdminAction
    {
        requireTransaction()
        // One chain, so one appender at a time (on PostgreSQL; SQLite's writers take turns).
        try database.lockForAppending("admin_actions")
        let last = try database.queryFirst("SELECT id, hash FROM admin_actions ORDER BY id DESC LIMIT 1") { ($0.integer(0), $0.text(1)) }
        let id = (last?.0 ?? 0) + 1
        let hash = SHA256.hex(
            Array(
                Store.adminHashInput(
                    previousHash: last?.1 ?? Store.genesisHash, id: id, createdAt: now.microseconds, actor: actor, command: command,
                    arguments: arguments, result: result
                ).utf8))
        try database.run(
            """
            INSERT INTO admin_actions (id, created_at, uid, login_uid, sudo_uid, command, arguments, result, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .integer(id), .integer(now.microseconds), .integer(actor.uid), SQLValue(actor.loginUID), SQLValue(actor.sudoUID),
                .text(command), .text(arguments), .text(result), .text(hash),
            ])
        return AdminAction(
            id: id, createdAt: now, actor: actor, command: command, arguments: arguments, result: result, hash: hash)
    }

    static let adminColumns = "id, created_at, uid, login_uid, sudo_uid, command, arguments, result, hash"

    static func adminAction(from row: Row) -> AdminAction {
        AdminAction(
            id: row.integer("id"), createdAt: Timestamp(microseconds: row.integer("created_at")),
            actor: AdminActor(uid: row.integer("uid"), loginUID: row.optionalInteger("login_uid"), sudoUID: row.optionalInteger("sudo_uid")),
            command: row.text("command"), arguments: row.text("arguments"), result: row.text("result"), hash: row.text("hash"))
    }

    /// The latest admin actions, newest first.
    public func adminActions(limit: Int) throws -> [AdminAction] {
        try database.query(
            "SELECT \(Store.adminColumns) FROM admin_actions ORDER BY id DESC LIMIT ?", [.integer(Int64(limit))], Store.adminAction)
    }

    /// Every admin action in id order, for the auditor.
    public func allAdminActions() throws -> [AdminAction] {
        try database.query("SELECT \(Store.adminColumns) FROM admin_actions ORDER BY id", [], Store.adminAction)
    }
}
