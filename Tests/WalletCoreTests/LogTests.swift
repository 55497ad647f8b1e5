import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("Log")
struct LogTests {
    @Test(
        "durations are written with three decimals",
        arguments: [
            (0.0, "0.000"), (1.0, "1.000"), (1.2345, "1.235"), (0.0004, "0.000"), (0.0005, "0.001"), (12.5, "12.500"),
            (-0.25, "-0.250"), (1_234_567.891, "1234567.891"),
        ] as [(Double, String)])
    func format(number: Double, text: String) {
        #expect(Log.format(number) == text)
    }

    @Test("numbers that are not finite are written as null", arguments: [Double.nan, .infinity, -.infinity])
    func nonFinite(number: Double) {
        #expect(Log.format(number) == "null")
    }
}
