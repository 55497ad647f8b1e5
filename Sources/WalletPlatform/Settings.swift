import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// The settings (README, "Configuration"), read from the environment (systemd units read them from
/// `EnvironmentFile=/etc/wallet/wallet.env`). Every program validates all of them at start
/// and refuses to run with a clear message rather than misbehave later.
public struct Settings: Sendable, Equatable {
    public var databasePath = "var/wallet.db"
    public var bankURL = "http://127.0.0.1:8081/pay"
    public var maxRetries: Int64 = 3
    public var retryBaseSeconds: Int64 = 10
    public var bankTimeoutMilliseconds: Int64 = 5_000
    public var bankConcurrency: Int64 = 16
    public var unknownRecheckSeconds: Int64 = 600
    /// How long a processor's claim outlives its bank call's time limit. A processor that
    /// dies mid-pass leaves its claims for this long; a live one never outlasts it.
    public var leaseGraceSeconds: Int64 = 30
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
            guard !path.isEmpty else { throw Invalid(description: "WALLET_DB is empty: set it to the database file's path") }
            databasePath = path
        }
        if let url = environment["WALLET_BANK_URL"] {
            guard Settings.isHTTPURL(url) else {
                throw Invalid(description: "WALLET_BANK_URL must be an http:// or https:// URL with a host, not \"\(url)\"")
            }
            bankURL = url
        }
        maxRetries = try Settings.integer(environment, "WALLET_MAX_RETRIES", default: maxRetries, range: 0...100)
        retryBaseSeconds = try Settings.integer(environment, "WALLET_RETRY_BASE_SECONDS", default: retryBaseSeconds, range: 0...86_400)
        bankTimeoutMilliseconds = try Settings.integer(environment, "WALLET_BANK_TIMEOUT_MS", default: bankTimeoutMilliseconds, range: 1...600_000)
        bankConcurrency = try Settings.integer(environment, "WALLET_BANK_CONCURRENCY", default: bankConcurrency, range: 1...1_024)
        unknownRecheckSeconds = try Settings.integer(
            environment, "WALLET_UNKNOWN_RECHECK_SECONDS", default: unknownRecheckSeconds, range: 0...604_800)
        leaseGraceSeconds = try Settings.integer(environment, "WALLET_LEASE_GRACE_SECONDS", default: leaseGraceSeconds, range: 1...3_600)
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
            let host = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            return !host.isEmpty && !host.hasPrefix(":") && !text.contains(where: { $0 == " " || $0.asciiValue.map { $0 < 0x20 } ?? false })
        }
        return false
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
    /// beside the database), so a misconfigured service says so at once.
    public func checkDatabaseDirectory() throws(Invalid) {
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
