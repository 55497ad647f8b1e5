import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// Who ran an admin command, as the kernel tells it, never as `$USER` says.
///
/// - `uid`: `getuid()`, the real uid the process runs as (`wallet` under `sudo -u wallet`).
/// - `loginUID`: `/proc/self/loginuid`, set by pam_loginuid when the person logged in and
///   kept through `su` and `sudo`; only a process with CAP_AUDIT_CONTROL can change it. nil
///   when unset (4294967295: a daemon, a container without PAM).
/// - `sudoUID`: `$SUDO_UID`, the uid that ran `sudo`. It comes from the environment, so it
///   is a hint, not proof (whoever can run walletctl as the service user can set it);
///   the login uid is the proof where there is one.
public struct AdminActor: Sendable, Equatable {
    public var uid: Int64
    public var loginUID: Int64?
    public var sudoUID: Int64?

    public init(uid: Int64, loginUID: Int64?, sudoUID: Int64?) {
        self.uid = uid
        self.loginUID = loginUID
        self.sudoUID = sudoUID
    }

    /// The login uid meaning "never set".
    public static let unsetLoginUID: Int64 = 4_294_967_295

    /// This process's actor.
    public static func current() -> AdminActor {
        AdminActor(
            uid: Int64(getuid()), loginUID: AdminActor.parseLoginUID(AdminActor.readSmallFile("/proc/self/loginuid")),
            sudoUID: AdminActor.parseUID(getenv("SUDO_UID").map { String(cString: $0) }))
    }

    /// The content of `/proc/self/loginuid`: a decimal uid, 4294967295 when unset.
    public static func parseLoginUID(_ text: String?) -> Int64? {
        guard let uid = parseUID(text), uid != unsetLoginUID else { return nil }
        return uid
    }

    /// A uid in decimal, 0 to 2^32 - 1, surrounding white space allowed; nil for anything else.
    public static func parseUID(_ text: String?) -> Int64? {
        guard let text else { return nil }
        let words = text.utf8.split { $0 == 0x20 || $0 == 0x0A || $0 == 0x09 }
        guard words.count == 1, let digits = words.first, digits.count <= 10, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let value = Int64(String(decoding: digits, as: UTF8.self)), value <= 4_294_967_295
        else { return nil }
        return value
    }

    static func readSmallFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(descriptor, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}

/// An admin command as the trail records it: its name and its arguments, each one given
/// by the command itself. A secret argument is declared `.secret` and carries no value at
/// all, so it cannot reach the trail or the log by mistake; the record shows only that it
/// was given. An argument the command does not declare is not recorded (the safe way to
/// forget one).
public struct AdminCommand: Sendable {
    public enum Argument: Sendable, Equatable {
        case text(String?)
        case integer(Int64?)
        case flag(Bool)
        /// Given, and not to be shown.
        case secret
    }

    /// What a secret argument is recorded as.
    public static let redacted = "[redacted]"

    /// The subcommand path, e.g. `withdrawals cancel`.
    public var name: String
    public var arguments: KeyValuePairs<String, Argument>

    public init(_ name: String, _ arguments: KeyValuePairs<String, Argument> = [:]) {
        self.name = name
        self.arguments = arguments
    }

    /// The arguments as one JSON object, in the order given, secrets redacted.
    public var argumentsJSON: String {
        var object = JSONObject()
        for (name, value) in arguments {
            switch value {
            case .text(let text): object.add(name, text)
            case .integer(let number): object.add(name, number)
            case .flag(let on): object.add(name, json: on ? "true" : "false")
            case .secret: object.add(name, AdminCommand.redacted)
            }
        }
        return object.result
    }
}

/// syslog(3) for the admin trail. Facility `LOG_AUTHPRIV`: the trail answers "who did
/// what" like sudo's and sshd's lines, which go there; rsyslog's default rules keep authpriv
/// in a file only root reads (/var/log/auth.log) and a forwarding rule for it is where a
/// remote log collector usually already listens, while journald keeps it whatever the
/// facility (`journalctl SYSLOG_IDENTIFIER=walletctl`).
public enum Syslog {
    /// `openlog(ident, LOG_PID, LOG_AUTHPRIV)`. The identifier is copied and kept for the
    /// life of the process, as openlog requires.
    public static func open(identifier: String) {
        openlog(strdup(identifier), LOG_PID, LOG_AUTHPRIV)
    }

    /// One message at `priority` (`LOG_NOTICE`, `LOG_WARNING`, ...), passed as `%s` so that
    /// no `%` in it is read as a format.
    public static func write(_ priority: Int32, _ message: String) {
        message.withCString { text in
            withVaList([text]) { arguments in vsyslog(priority, "%s", arguments) }
        }
    }
}
