import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private let uuid = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
private let wallet = WalletID(uuid)!

@Suite("Router")
struct RouterTests {
    @Test(
        "every route matches with and without its trailing slash",
        arguments: [
            ("/wallets", Route.wallets),
            ("/wallets/\(uuid)", .wallet(wallet)),
            ("/wallets/\(uuid.uppercased())", .wallet(wallet)),
            ("/wallets/\(uuid)/balance", .balance(wallet)),
            ("/wallets/\(uuid)/deposit", .deposit(wallet)),
            ("/wallets/\(uuid)/withdraw", .withdraw(wallet)),
            ("/wallets/\(uuid)/transactions", .transactions(wallet)),
            ("/wallets/\(uuid)/transactions/42", .transaction(wallet, 42)),
            ("/wallets/\(uuid)/transactions/1", .transaction(wallet, 1)),
            ("/wallets/\(uuid)/transactions/9223372036854775807", .transaction(wallet, Int64.max)),
            ("/wallets/\(uuid)/transactions/42/cancel", .cancel(wallet, 42)),
            ("/healthz", .health),
            ("/metrics", .metrics),
        ])
    func matches(path: String, route: Route) {
        #expect(Route(path: path) == route)
        #expect(Route(path: path + "/") == route)
    }

    @Test(
        "unknown paths, malformed uuids and malformed ids do not match",
        arguments: [
            "", "/", "//", "wallets", "wallets/", "/wallet", "/wallets//", "/wallets///", "/Wallets", "/WALLETS/", "/healthz/x",
            "/metrics/x", "/wallets/not-a-uuid", "/wallets/\(uuid)x", "/wallets/\(uuid.dropLast())",
            "/wallets/\(uuid)/Deposit", "/wallets/\(uuid)/deposits", "/wallets/\(uuid)/deposit/x", "/wallets/\(uuid)//",
            "/wallets/\(uuid)/Balance", "/wallets/\(uuid)/balance/x",
            "/wallets/\(uuid)/withdraw/1", "/wallets/\(uuid)/transactions/0", "/wallets/\(uuid)/transactions/042",
            "/wallets/\(uuid)/transactions/-1", "/wallets/\(uuid)/transactions/+1", "/wallets/\(uuid)/transactions/1.0",
            "/wallets/\(uuid)/transactions/1e3", "/wallets/\(uuid)/transactions/abc", "/wallets/\(uuid)/transactions/ 1",
            "/wallets/\(uuid)/transactions/9223372036854775808", "/wallets/\(uuid)/transactions/99999999999999999999",
            "/wallets/\(uuid)/transactions//cancel",
            "/wallets/\(uuid)/transactions/42/cancel/x", "/wallets/\(uuid)/transactions/42/Cancel",
            "/wallets/\(uuid)/transactions/0/cancel", "/wallets/\(uuid)/transactions/x/cancel",
            "/wallets/\(uuid)/transactions/42/refund", "/api/wallets/\(uuid)", "/wallets/\(uuid)/transactions/42//",
            "/wallets/\(uuid)/transactions/42/cancel/x/y", "/healthz//", "/\u{212A}", "/wallets/\(uuid)/d\u{E9}posit",
            "/wallets/\(uuid)/deposit\u{301}", "/wallets\u{301}/\(uuid)",
        ])
    func doesNotMatch(path: String) {
        #expect(Route(path: path) == nil)
    }

    @Test("the empty last segment of /wallets/{uuid}/transactions/ is the list, not an id")
    func listWithSlash() {
        #expect(Route(path: "/wallets/\(uuid)/transactions/") == .transactions(wallet))
    }

    @Test(
        "each route allows its methods (HEAD wherever GET) and has its template",
        arguments: [
            (Route.wallets, ["POST"], "/wallets/"),
            (.wallet(wallet), ["GET", "HEAD"], "/wallets/{uuid}/"),
            (.balance(wallet), ["GET", "HEAD"], "/wallets/{uuid}/balance"),
            (.deposit(wallet), ["POST"], "/wallets/{uuid}/deposit"),
            (.withdraw(wallet), ["POST"], "/wallets/{uuid}/withdraw"),
            (.transactions(wallet), ["GET", "HEAD"], "/wallets/{uuid}/transactions/"),
            (.transaction(wallet, 7), ["GET", "HEAD"], "/wallets/{uuid}/transactions/{id}/"),
            (.cancel(wallet, 7), ["POST"], "/wallets/{uuid}/transactions/{id}/cancel"),
            (.health, ["GET", "HEAD"], "/healthz"),
            (.metrics, ["GET", "HEAD"], "/metrics"),
        ])
    func methodsAndTemplates(route: Route, methods: [String], template: String) {
        #expect(route.allowedMethods == methods)
        // Every method a route serves is one of the API's, which nginx lets through.
        #expect(Set(methods).isSubset(of: Route.apiMethods))
        #expect(route.template == template)
        #expect(!route.template.contains(uuid))
    }

    @Test("canonical paths fold the trailing slash and the uuid's case")
    func canonicalPaths() throws {
        let spellings = ["/wallets/\(uuid)/deposit", "/wallets/\(uuid)/deposit/", "/wallets/\(uuid.uppercased())/deposit/"]
        let canonical = try spellings.map { try #require(Route(path: $0)).canonicalPath }
        #expect(Set(canonical) == ["/wallets/\(uuid)/deposit"])
        #expect(Route(path: "/wallets/")?.canonicalPath == "/wallets")
        #expect(Route(path: "/wallets/\(uuid.uppercased())/balance/")?.canonicalPath == "/wallets/\(uuid)/balance")
        #expect(Route(path: "/wallets/\(uuid)/transactions/5/cancel/")?.canonicalPath == "/wallets/\(uuid)/transactions/5/cancel")
    }

    @Test(
        "transaction ids are positive decimals without sign or leading zero",
        arguments: [
            ("1", Int64(1) as Int64?), ("10", 10), ("9223372036854775807", Int64.max),
            ("0", nil), ("00", nil), ("01", nil), ("-1", nil), ("+1", nil), ("", nil), ("1a", nil), ("١", nil),
            ("9223372036854775808", nil),
        ])
    func transactionIDs(text: String, id: Int64?) {
        #expect(Route.transactionID(Substring(text)) == id)
    }
}
