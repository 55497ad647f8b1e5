import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices
#if canImport(Glibc)
import Glibc
#endif

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
            ("WALLET_BANK_URL", "file:///etc/passwd"), ("WALLET_BANK_URL", "https://user@/pay"),
        ])
    func invalidRefused(name: String, value: String) {
        let error = #expect(throws: Settings.Invalid.self) { try settings([name: value]) }
        #expect(error?.description.contains(name) == true)
    }

    @Test(
        "http and https URLs with a host are accepted",
        arguments: [
            "http://127.0.0.1:8081/pay", "https://bank.example/pay", "HTTPS://BANK/pay", "https://bank", "http://[::1]:8081/pay",
            "https://bank.example?x=1", "http://localhost/pay", "HTTP://LOCALHOST:8081", "http://127.255.0.9/pay",
            "http://user:pass@127.0.0.1/pay",
        ])
    func urlsAccepted(url: String) throws {
        #expect(try settings(["WALLET_BANK_URL": url]).bankURL == url)
    }

    @Test(
        "http:// to another host is refused, naming the rule and the way out",
        arguments: [
            "http://203.0.113.1/pay", "http://bank", "HTTP://BANK/pay", "http://128.0.0.1/pay", "http://127.0.0.1.example/pay",
            "http://localhost.example/pay", "http://[::2]/pay", "http://[::ffff:127.0.0.1]/pay", "http://127.0.0.1@bank.example/pay",
            "http://127.1/pay", "http://127.0.0.256/pay", "http://127.+0.0.1/pay",
        ])
    func plainHTTPRefused(url: String) {
        let error = #expect(throws: Settings.Invalid.self) { try settings(["WALLET_BANK_URL": url]) }
        #expect(error?.description.contains("WALLET_BANK_URL must be https://") == true)
        #expect(error?.description.contains("WALLET_BANK_ALLOW_HTTP=1") == true)
    }

    @Test("WALLET_BANK_ALLOW_HTTP=1 accepts http:// to another host; 0 or unset does not")
    func plainHTTPAllowed() throws {
        let url = "http://203.0.113.1/pay"
        let allowed = try settings(["WALLET_BANK_URL": url, "WALLET_BANK_ALLOW_HTTP": "1"])
        #expect(allowed.bankURL == url && allowed.bankAllowsHTTP)
        #expect(throws: Settings.Invalid.self) { try settings(["WALLET_BANK_URL": url, "WALLET_BANK_ALLOW_HTTP": "0"]) }
        for value in ["yes", "true", "", "2"] {
            let error = #expect(throws: Settings.Invalid.self) { try settings(["WALLET_BANK_ALLOW_HTTP": value]) }
            #expect(error?.description.contains("WALLET_BANK_ALLOW_HTTP") == true)
        }
    }

    @Test(
        "a URL's user information is left out of every message",
        arguments: [
            ("https://user:s3cret-pw@/pay", "https:///pay"),
            ("http://user:s3cret-pw@203.0.113.1/pay", "http://203.0.113.1/pay"),
            ("ftp://user:s3cret-pw@bank.example/pay", "ftp://bank.example/pay"),
            ("http://user:s3cret-pw@bank example/pay", "http://bank example/pay"),
        ])
    func userInformationRedacted(url: String, shown: String) {
        #expect(Settings.redactedURL("https://user:s3cret-pw@bank.example/pay") == "https://bank.example/pay")
        #expect(Settings.redactedURL(url) == shown)
        let error = #expect(throws: Settings.Invalid.self) { try settings(["WALLET_BANK_URL": url]) }
        #expect(error?.description.contains("s3cret-pw") == false)
        #expect(error?.description.contains("user:") == false)
        #expect(error?.description.contains(shown) == true)
    }

    @Test(
        "URLs without user information are shown as they are",
        arguments: ["https://bank.example/pay", "https://bank.example/pay?to=a@b", "https://bank.example/a@b", "not a url"])
    func nothingToRedact(url: String) {
        #expect(Settings.redactedURL(url) == url)
    }

    @Test("the bank token file setting is read, and refused when empty")
    func bankTokenFileSetting() throws {
        #expect(try settings([:]).bankTokenFile == nil)
        #expect(try settings(["WALLET_BANK_TOKEN_FILE": "/run/token"]).bankTokenFile == "/run/token")
        let error = #expect(throws: Settings.Invalid.self) { try settings(["WALLET_BANK_TOKEN_FILE": ""]) }
        #expect(error?.description.contains("WALLET_BANK_TOKEN_FILE") == true)
    }

    @Test(
        "a bank token is trimmed of one final newline and must be visible ASCII of 1 to 4096 bytes",
        arguments: [
            ("abc.DEF-123_~+/=", "abc.DEF-123_~+/="), ("tok\n", "tok"), ("tok\r\n", "tok"),
            (String(repeating: "t", count: 4_096) + "\n", String(repeating: "t", count: 4_096)),
        ])
    func bankTokenAccepted(content: String, token: String) throws {
        #expect(try BankToken.token(fromBytes: Array(content.utf8), path: "/t") == token)
    }

    @Test(
        "a bank token that is empty, too long or not a header value is refused without showing it",
        arguments: [
            "", "\n", "\r\n", "tok\n\n", "to k", "tok\tx", "tok\u{7F}", "tök", "tok\r\nX-Evil: 1", " xyz",
            String(repeating: "t", count: 4_097),
        ])
    func bankTokenRefused(content: String) {
        let error = #expect(throws: Settings.Invalid.self) { try BankToken.token(fromBytes: Array(content.utf8), path: "/t") }
        #expect(error?.description.contains("bank token file /t") == true)
        if content.count > 3 { #expect(error?.description.contains(content) == false) }
    }

    @Test("the credential directory comes before WALLET_BANK_TOKEN_FILE, and a missing file is an error")
    func bankTokenSources() throws {
        let directory = "/tmp/wallet-settings-test-\(getpid())"
        mkdir(directory, 0o700)
        defer {
            unlink(directory + "/bank-token")
            unlink(directory + "/other")
            rmdir(directory)
        }
        func write(_ name: String, _ text: String) {
            let descriptor = open(directory + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            _ = text.withCString { Glibc.write(descriptor, $0, strlen($0)) }
            close(descriptor)
        }
        write("other", "from-setting\n")
        let fromSetting = try settings(["WALLET_BANK_TOKEN_FILE": directory + "/other"])
        #expect(try BankToken.read(environment: [:], settings: Settings()) == nil)
        #expect(try BankToken.read(environment: [:], settings: fromSetting) == "from-setting")
        // A credential directory without the credential: the setting still counts.
        #expect(try BankToken.read(environment: ["CREDENTIALS_DIRECTORY": directory], settings: fromSetting) == "from-setting")
        // The unit's fallback when /etc/wallet/bank-token is missing: no token from there.
        write("bank-token", "no bank token")
        #expect(try BankToken.read(environment: ["CREDENTIALS_DIRECTORY": directory], settings: Settings()) == nil)
        #expect(try BankToken.read(environment: ["CREDENTIALS_DIRECTORY": directory], settings: fromSetting) == "from-setting")
        write("bank-token", "no bank token\n")
        #expect(throws: Settings.Invalid.self) {
            try BankToken.read(environment: ["CREDENTIALS_DIRECTORY": directory], settings: Settings())
        }
        write("bank-token", "from-credential\n")
        #expect(try BankToken.read(environment: ["CREDENTIALS_DIRECTORY": directory], settings: fromSetting) == "from-credential")
        var missing = Settings()
        missing.bankTokenFile = directory + "/none"
        let error = #expect(throws: Settings.Invalid.self) { try BankToken.read(environment: [:], settings: missing) }
        #expect(error?.description.contains("cannot be read") == true)
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
