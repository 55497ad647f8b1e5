import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private func settings(_ environment: [String: String]) throws(Settings.Invalid) -> Settings {
    try Settings(environment: environment)
}

@Suite("Settings")
struct SettingsTests {
    @Test("an empty environment gives the documented defaults")
    func defaults() throws {
        let parsed = try settings([:])
        #expect(parsed == Settings())
        #expect(parsed.databasePath == "var/wallet.db")
        #expect(parsed.bankURL.hasPrefix("http://"))
        #expect(parsed.maxRetries == 3)
        #expect(parsed.retryBaseSeconds == 10)
        #expect(parsed.bankTimeoutMilliseconds == 5_000)
        #expect(parsed.bankConcurrency == 16)
        #expect(parsed.unknownRecheckSeconds == 600)
        #expect(parsed.leaseGraceSeconds == 30)
        #expect(parsed.synchronous == .full)
    }

    @Test("unrelated variables are ignored")
    func unrelatedIgnored() throws {
        #expect(try settings(["WALLET_HTTP_PORT": "9090", "WALLET_PROCESS_INTERVAL": "x", "PATH": "/bin"]) == Settings())
    }

    @Test("every variable is read")
    func everyVariable() throws {
        let parsed = try settings([
            "WALLET_DB": "/var/lib/wallet/wallet.db", "WALLET_BANK_URL": "https://bank.example:8443/pay?x=1",
            "WALLET_MAX_RETRIES": "5", "WALLET_RETRY_BASE_SECONDS": "2", "WALLET_BANK_TIMEOUT_MS": "750",
            "WALLET_BANK_CONCURRENCY": "64", "WALLET_UNKNOWN_RECHECK_SECONDS": "120", "WALLET_LEASE_GRACE_SECONDS": "9",
            "WALLET_SYNCHRONOUS": "normal",
        ])
        #expect(parsed.databasePath == "/var/lib/wallet/wallet.db")
        #expect(parsed.bankURL == "https://bank.example:8443/pay?x=1")
        #expect(parsed.maxRetries == 5)
        #expect(parsed.retryBaseSeconds == 2)
        #expect(parsed.bankTimeoutMilliseconds == 750)
        #expect(parsed.bankConcurrency == 64)
        #expect(parsed.unknownRecheckSeconds == 120)
        #expect(parsed.leaseGraceSeconds == 9)
        #expect(parsed.synchronous == .normal)
    }

    @Test(
        "numbers at the ends of their ranges are accepted",
        arguments: [
            ("WALLET_MAX_RETRIES", "0"), ("WALLET_MAX_RETRIES", "100"), ("WALLET_RETRY_BASE_SECONDS", "0"),
            ("WALLET_RETRY_BASE_SECONDS", "86400"), ("WALLET_BANK_TIMEOUT_MS", "1"), ("WALLET_BANK_TIMEOUT_MS", "600000"),
            ("WALLET_BANK_CONCURRENCY", "1"), ("WALLET_BANK_CONCURRENCY", "1024"), ("WALLET_UNKNOWN_RECHECK_SECONDS", "0"),
            ("WALLET_UNKNOWN_RECHECK_SECONDS", "604800"), ("WALLET_LEASE_GRACE_SECONDS", "1"), ("WALLET_LEASE_GRACE_SECONDS", "3600"),
        ])
    func numbersAccepted(name: String, value: String) throws {
        let parsed = try settings([name: value])
        let read: [String: Int64] = [
            "WALLET_MAX_RETRIES": parsed.maxRetries, "WALLET_RETRY_BASE_SECONDS": parsed.retryBaseSeconds,
            "WALLET_BANK_TIMEOUT_MS": parsed.bankTimeoutMilliseconds, "WALLET_BANK_CONCURRENCY": parsed.bankConcurrency,
            "WALLET_UNKNOWN_RECHECK_SECONDS": parsed.unknownRecheckSeconds, "WALLET_LEASE_GRACE_SECONDS": parsed.leaseGraceSeconds,
        ]
        #expect(read[name] == Int64(value))
    }

    @Test(
        "invalid values are refused with a message naming the variable",
        arguments: [
            ("WALLET_MAX_RETRIES", "-1"), ("WALLET_MAX_RETRIES", "101"), ("WALLET_MAX_RETRIES", "three"), ("WALLET_MAX_RETRIES", ""),
            ("WALLET_MAX_RETRIES", "3.0"), ("WALLET_MAX_RETRIES", " 3"), ("WALLET_MAX_RETRIES", "0x3"),
            ("WALLET_RETRY_BASE_SECONDS", "-10"), ("WALLET_RETRY_BASE_SECONDS", "86401"), ("WALLET_RETRY_BASE_SECONDS", "10s"),
            ("WALLET_BANK_TIMEOUT_MS", "0"), ("WALLET_BANK_TIMEOUT_MS", "-5000"), ("WALLET_BANK_TIMEOUT_MS", "600001"),
            ("WALLET_BANK_TIMEOUT_MS", "99999999999999999999"),
            ("WALLET_BANK_CONCURRENCY", "0"), ("WALLET_BANK_CONCURRENCY", "1025"), ("WALLET_BANK_CONCURRENCY", "many"),
            ("WALLET_UNKNOWN_RECHECK_SECONDS", "-1"), ("WALLET_UNKNOWN_RECHECK_SECONDS", "604801"),
            ("WALLET_LEASE_GRACE_SECONDS", "0"), ("WALLET_LEASE_GRACE_SECONDS", "3601"),
            ("WALLET_SYNCHRONOUS", "OFF"), ("WALLET_SYNCHRONOUS", ""), ("WALLET_SYNCHRONOUS", "EXTRA"),
            ("WALLET_DB", ""),
            ("WALLET_BANK_URL", "ftp://x"), ("WALLET_BANK_URL", "http://"), ("WALLET_BANK_URL", "https://"), ("WALLET_BANK_URL", ""),
            ("WALLET_BANK_URL", "bank.example/pay"), ("WALLET_BANK_URL", "http:/bank"), ("WALLET_BANK_URL", "http://:8080/pay"),
            ("WALLET_BANK_URL", "http:///pay"), ("WALLET_BANK_URL", "http://bank example/pay"), ("WALLET_BANK_URL", "http://bank/\npay"),
            ("WALLET_BANK_URL", "file:///etc/passwd"),
        ])
    func invalidRefused(name: String, value: String) {
        let error = #expect(throws: Settings.Invalid.self) { try settings([name: value]) }
        #expect(error?.description.contains(name) == true)
    }

    @Test(
        "http and https URLs with a host are accepted",
        arguments: [
            "http://127.0.0.1:8081/pay", "https://bank.example/pay", "HTTP://BANK/pay", "http://bank", "http://[::1]:8081/pay",
            "https://bank.example?x=1",
        ])
    func urlsAccepted(url: String) throws {
        #expect(try settings(["WALLET_BANK_URL": url]).bankURL == url)
    }

    @Test("the synchronous mode is read in any case", arguments: [("full", Synchronous.full), ("FULL", .full), ("Normal", .normal)])
    func synchronousModes(text: String, mode: Synchronous) throws {
        #expect(try settings(["WALLET_SYNCHRONOUS": text]).synchronous == mode)
    }

    @Test("the process environment is read")
    func processEnvironment() {
        let environment = Settings.processEnvironment()
        #expect(environment["PATH"] != nil)
    }

    @Test("the database directory must exist and be writable")
    func databaseDirectory() {
        var writable = Settings()
        writable.databasePath = "/tmp/wallet.db"
        #expect(throws: Never.self) { try writable.checkDatabaseDirectory() }
        var relative = Settings()
        relative.databasePath = "wallet.db"
        #expect(throws: Never.self) { try relative.checkDatabaseDirectory() }
        var missing = Settings()
        missing.databasePath = "/nonexistent-wallet-directory/wallet.db"
        let error = #expect(throws: Settings.Invalid.self) { try missing.checkDatabaseDirectory() }
        #expect(error?.description.contains("/nonexistent-wallet-directory") == true)
    }
}
