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

/// An error whose code the admin trail records as the command's result.
protocol AdminResultCode: Error {
    var resultCode: String { get }
}

extension APIError: AdminResultCode {
    var resultCode: String { code }
}

extension Failed: AdminResultCode {
    var resultCode: String { code }
}

/// The admin trail of a command that changes anything (README, "Operations"): every such
/// command runs its change through `administer`, which
/// - runs `change` and appends the command's row (`ok`) to `admin_actions` in the SAME write
///   transaction, so a change is never without its row nor a row without its change;
/// - when `change` throws, rolls it back and records the failure (the error's code) in a
///   transaction of its own, then rethrows;
/// - logs the row as one JSON line through syslog(3) (`Syslog`, facility authpriv).
///
/// Who ran it comes from the kernel (`AdminActor.current()`); the arguments are those the
/// command declares in `command`, each secret one as `.secret` (recorded as `[redacted]`).
func administer<T>(_ store: Store, _ command: AdminCommand, _ change: (Store, Timestamp) throws -> T) throws -> T {
    let actor = AdminActor.current()
    let arguments = command.argumentsJSON
    do {
        let (value, action) = try store.write {
            let now = Timestamp.now()
            let value = try change(store, now)
            let action = try store.appendAdminAction(actor: actor, command: command.name, arguments: arguments, result: "ok", now: now)
            return (value, action)
        }
        AdminTrailLog.write(action)
        return value
    } catch {
        let code = (error as? AdminResultCode)?.resultCode ?? (error is DatabaseError ? "database_error" : "error")
        do {
            let action = try store.write {
                try store.appendAdminAction(actor: actor, command: command.name, arguments: arguments, result: code, now: Timestamp.now())
            }
            AdminTrailLog.write(action)
        } catch let recordError {
            // The database refuses even the record of the failure: the log line is all
            // that is left of it.
            AdminTrailLog.writeUnrecorded(actor: actor, command: command, result: code, reason: "\(recordError)")
        }
        throw error
    }
}

/// The syslog side of the admin trail: one JSON line per action.
enum AdminTrailLog {
    private static let opened: Bool = {
        Syslog.open(identifier: "walletctl")
        return true
    }()

    static func write(_ action: AdminAction) {
        _ = opened
        Syslog.write(action.result == "ok" ? LOG_NOTICE : LOG_WARNING, line(action.json))
    }

    static func writeUnrecorded(actor: AdminActor, command: AdminCommand, result: String, reason: String) {
        _ = opened
        var object = JSONObject()
        object.add("time", Timestamp.now().rfc3339)
        object.add("uid", actor.uid)
        object.add("login_uid", actor.loginUID)
        object.add("sudo_uid", actor.sudoUID)
        object.add("command", command.name)
        object.add("arguments", json: command.argumentsJSON)
        object.add("result", result)
        object.add("unrecorded", reason)
        Syslog.write(LOG_ERR, line(object.result))
        Log.writeLine("walletctl: warning: the admin trail could not record this command: \(reason)")
    }

    /// `{"event": "admin_action", ...the row...}`.
    private static func line(_ json: String) -> String {
        "{\"event\": \"admin_action\", " + json.dropFirst()
    }
}
