import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// The settings (README, "Configuration"), read from the environment (systemd units read them from
/// `/etc/wallet/wallet.env`, and the processor's also from `/etc/wallet/processor.env`). Every
/// program validates all of them at start and refuses to run with a clear message rather than
/// misbehave later. No message shows a URL's user information (`redactedURL`).
public struct Settings: Sendable, Equatable {
    /// `WALLET_DB`: an SQLite file's path, or a PostgreSQL URI or conninfo
    /// (`DatabaseLocation`). Logs show it through `Store.describe(location:)`, which keeps
    /// only a server's host, port and database name.
    public var databasePath = "var/wallet.db"
    public var bankURL = "http://127.0.0.1:8081/pay"
    /// `WALLET_BANK_ALLOW_HTTP=1`: a plain `http://` bank URL off this machine is accepted
    /// (a bank behind a TLS-terminating proxy on a private network). Off by default.
    public var bankAllowsHTTP = false
    /// `WALLET_BANK_TOKEN_FILE`: a file holding the bank's bearer token, for development and
    /// tests. Deployments use systemd's credential instead (see `BankToken`).
    public var bankTokenFile: String?
    public var maxRetries: Int64 = 3
    public var retryBaseSeconds: Int64 = 10
    public var bankTimeoutMilliseconds: Int64 = 5_000
    public var bankConcurrency: Int64 = 16
    public var unknownRecheckSeconds: Int64 = 600
    /// How long a processor's claim outlives its bank call's time limit. A processor that
    /// dies mid-pass leaves its claims for this long; a live one never outlasts it.
    public var leaseGraceSeconds: Int64 = 30
    /// `WALLET_WEBHOOK_KEY_FILE`: a file holding the webhook master key (development and
    /// tests; deployments use systemd's credential, see `WebhookMasterKey`).
    public var webhookKeyFile: String?
    /// `WALLET_WEBHOOK_ALLOW_HTTP=1`: `http://`, loopback and private webhook URLs are
    /// accepted (development and tests only).
    public var webhookAllowsHTTP = false
    /// One webhook delivery's time limit.
    public var webhookTimeoutMilliseconds: Int64 = 10_000
    /// How long a delivery is retried before it is marked failed and its endpoint moves on.
    public var webhookGiveUpSeconds: Int64 = 259_200
    /// Endpoints delivered to at once in one notifier pass (one delivery in flight each).
    public var webhookConcurrency: Int64 = 16
    /// The first retry delay of a delivery; doubles each retry (with jitter), at most an hour.
    public var webhookRetryBaseSeconds: Int64 = 10
    /// How long one notifier pass claims and sends before it records what is in flight and
    /// exits, the next pass going on: well under systemd's start timeout of the unit (10 min).
    public var notifyPassSeconds: Int64 = Limits.notifierPassSecondsMax
    /// Bench-only: `NORMAL` trades the last commits on power loss for speed, to measure
    /// what durability costs. Never set it in production.
    public var synchronous: Synchronous = .full

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// The documented defaults (README, "Configuration").
    public init() {}

    /// The settings of this process's environment.
    public static func fromEnvironment() throws(Invalid) -> Settings {
        try Settings(environment: processEnvironment())
    }

    /// Reads the settings from `environment` (the process environment by default).
    public init(environment: [String: String]) throws(Invalid) {
        if let path = environment["WALLET_DB"] {
            guard !path.isEmpty else {
                throw Invalid(description: "WALLET_DB is empty: set it to the database file's path or a PostgreSQL URI or conninfo")
            }
            databasePath = path
        }
        if let allow = environment["WALLET_BANK_ALLOW_HTTP"] {
            guard allow == "0" || allow == "1" else {
                throw Invalid(description: "WALLET_BANK_ALLOW_HTTP must be 1 (allow http:// to another host) or 0, not \"\(allow)\"")
            }
            bankAllowsHTTP = allow == "1"
        }
        if let url = environment["WALLET_BANK_URL"] {
            guard Settings.isHTTPURL(url) else {
                throw Invalid(
                    description: "WALLET_BANK_URL must be an http:// or https:// URL with a host, not \"\(Settings.redactedURL(url))\"")
            }
            guard bankAllowsHTTP || Settings.isHTTPSOrLoopback(url) else {
                throw Invalid(
                    description: "WALLET_BANK_URL must be https:// unless its host is this machine (127.0.0.0/8, ::1, localhost), "
                        + "not \"\(Settings.redactedURL(url))\"; set WALLET_BANK_ALLOW_HTTP=1 to send payouts unencrypted")
            }
            bankURL = url
        }
        if let path = environment["WALLET_BANK_TOKEN_FILE"] {
            guard !path.isEmpty else {
                throw Invalid(description: "WALLET_BANK_TOKEN_FILE is empty: unset it, or set it to the token file's path")
            }
            bankTokenFile = path
        }
        maxRetries = try Settings.integer(environment, "WALLET_MAX_RETRIES", default: maxRetries, range: 0...100)
        retryBaseSeconds = try Settings.integer(environment, "WALLET_RETRY_BASE_SECONDS", default: retryBaseSeconds, range: 0...86_400)
        bankTimeoutMilliseconds = try Settings.integer(environment, "WALLET_BANK_TIMEOUT_MS", default: bankTimeoutMilliseconds, range: 1...600_000)
        bankConcurrency = try Settings.integer(environment, "WALLET_BANK_CONCURRENCY", default: bankConcurrency, range: 1...1_024)
        unknownRecheckSeconds = try Settings.integer(
            environment, "WALLET_UNKNOWN_RECHECK_SECONDS", default: unknownRecheckSeconds, range: 0...604_800)
        leaseGraceSeconds = try Settings.integer(environment, "WALLET_LEASE_GRACE_SECONDS", default: leaseGraceSeconds, range: 1...3_600)
        if let path = environment["WALLET_WEBHOOK_KEY_FILE"] {
            guard !path.isEmpty else {
                throw Invalid(description: "WALLET_WEBHOOK_KEY_FILE is empty: unset it, or set it to the master key file's path")
            }
            webhookKeyFile = path
        }
        if let allow = environment["WALLET_WEBHOOK_ALLOW_HTTP"] {
            guard allow == "0" || allow == "1" else {
                throw Invalid(description: "WALLET_WEBHOOK_ALLOW_HTTP must be 1 (development: allow http:// and private URLs) or 0, not \"\(allow)\"")
            }
            webhookAllowsHTTP = allow == "1"
        }
        webhookTimeoutMilliseconds = try Settings.integer(
            environment, "WALLET_WEBHOOK_TIMEOUT_MS", default: webhookTimeoutMilliseconds, range: 1...600_000)
        webhookGiveUpSeconds = try Settings.integer(
            environment, "WALLET_WEBHOOK_GIVE_UP_SECONDS", default: webhookGiveUpSeconds, range: 0...31_536_000)
        webhookConcurrency = try Settings.integer(environment, "WALLET_WEBHOOK_CONCURRENCY", default: webhookConcurrency, range: 1...1_024)
        webhookRetryBaseSeconds = try Settings.integer(
            environment, "WALLET_WEBHOOK_RETRY_BASE_SECONDS", default: webhookRetryBaseSeconds, range: 0...86_400)
        notifyPassSeconds = try Settings.integer(
            environment, "WALLET_NOTIFY_PASS_SECONDS", default: notifyPassSeconds, range: 1...Limits.notifierPassSecondsMax)
        if let mode = environment["WALLET_SYNCHRONOUS"] {
            guard let parsed = Synchronous(rawValue: mode.uppercased()) else {
                throw Invalid(description: "WALLET_SYNCHRONOUS must be FULL (the default) or NORMAL (benchmarks only), not \"\(mode)\"")
            }
            synchronous = parsed
        }
    }

    private static func integer(_ environment: [String: String], _ name: String, default value: Int64, range: ClosedRange<Int64>) throws(Invalid)
        -> Int64
    {
        guard let text = environment[name] else { return value }
        guard let parsed = Int64(text), range.contains(parsed) else {
            throw Invalid(description: "\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        return parsed
    }

    static func isHTTPURL(_ text: String) -> Bool {
        let lowered = text.lowercased()
        for scheme in ["http://", "https://"] where lowered.hasPrefix(scheme) {
            let rest = lowered.dropFirst(scheme.count)
            let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            let host = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
            return !host.isEmpty && !host.hasPrefix(":") && !text.contains(where: { $0 == " " || $0.asciiValue.map { $0 < 0x20 } ?? false })
        }
        return false
    }

    /// The URL's host (lowercased, without brackets, user information or port), or nil
    /// when it has none.
    static func host(ofURL text: String) -> String? {
        guard let authorityStart = authorityStart(of: text) else { return nil }
        let rest = text[authorityStart...]
        var authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            return authority[authority.index(after: authority.startIndex)..<close].lowercased()
        }
        return authority.prefix { $0 != ":" }.lowercased()
    }

    /// True for an `https://` URL, or one whose host is this machine: 127.0.0.0/8, ::1 or
    /// localhost. Anything else would send payouts (and the bank token) in clear text.
    static func isHTTPSOrLoopback(_ text: String) -> Bool {
        if text.lowercased().hasPrefix("https://") { return true }
        guard let host = host(ofURL: text) else { return false }
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4, octets[0] == "127" else { return false }
        return octets.allSatisfy { octet in octet.count <= 3 && octet.allSatisfy { ("0"..."9").contains($0) } && UInt8(octet) != nil }
    }

    /// The URL without its user information (`https://user:pass@host/` becomes
    /// `https://host/`), so that no message shows a password written into the URL.
    public static func redactedURL(_ text: String) -> String {
        guard let authorityStart = authorityStart(of: text) else { return text }
        let rest = text[authorityStart...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return text }
        let scheme = String(text[..<authorityStart])
        return scheme + String(rest[rest.index(after: at)...])
    }

    /// Where the authority begins: just after the first `://`.
    private static func authorityStart(of text: String) -> String.Index? {
        var index = text.startIndex
        while index < text.endIndex {
            if text[index...].hasPrefix("://") { return text.index(index, offsetBy: 3) }
            index = text.index(after: index)
        }
        return nil
    }

    public static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let separator = text.firstIndex(of: "=") {
                result[String(text[..<separator])] = String(text[text.index(after: separator)...])
            }
            pointer += 1
        }
        return result
    }

    /// Checks the database's directory can be written (the WAL and `-shm` files live
    /// beside the database), so a misconfigured service says so at once. A PostgreSQL
    /// database has no directory here: connecting is its check.
    public func checkDatabaseDirectory() throws(Invalid) {
        guard !DatabaseLocation(databasePath).isPostgres else { return }
        let directory: String
        if let slash = databasePath.lastIndex(of: "/") {
            directory = slash == databasePath.startIndex ? "/" : String(databasePath[..<slash])
        } else {
            directory = "."
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw Invalid(description: "the database directory \(directory) does not exist or is not writable by this user")
        }
    }
}

extension RetryPolicy {
    /// The payout rules' numbers from the settings.
    public init(_ settings: Settings) {
        self.init(
            maxRetries: settings.maxRetries, baseSeconds: settings.retryBaseSeconds,
            unknownRecheckSeconds: settings.unknownRecheckSeconds)
    }
}

/// How durable a commit is. `full` syncs the WAL on every commit, so a committed deposit
/// survives power loss; `normal` may lose the last commits on an OS crash and exists only
/// so the benchmark can measure the price of durability.
public enum Synchronous: String, Sendable {
    case full = "FULL"
    case normal = "NORMAL"
}
