import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private let success = #"{"data": "success", "status": 200}"#
private let failed = #"{"data": "failed", "status": 503}"#

@Suite("PayoutOutcome")
struct PayoutOutcomeTests {
    @Test(
        "each bank answer is classified by the bank outcome rules",
        arguments: [
            // paid: HTTP 200 with exactly the success body.
            (200, success, "paid"),
            (200, #"{"status": 200, "data": "success"}"#, "paid"),
            (200, #" {"data":"success","status":200} "#, "paid"),
            // declined: exactly the failed body, whatever the HTTP status.
            (503, failed, "declined"),
            (200, failed, "declined"),
            (500, failed, "declined"),
            (409, failed, "declined"),
            (404, failed, "declined"),
            // refused: a bare 4xx other than 409, 425, 429.
            (400, "", "refused"),
            (400, #"{"data": "bad_request", "status": 400}"#, "refused"),
            (401, "", "refused"),
            (403, "denied", "refused"),
            (404, "", "refused"),
            (404, "<html><body>Not Found</body></html>", "refused"),
            (422, #"{"error": "x"}"#, "refused"),
            (499, "", "refused"),
            // unknown: 409, 425, 429, a 5xx without the failed body, any other body.
            (409, "", "unknown"),
            (425, "", "unknown"),
            (429, #"{"error": "slow down"}"#, "unknown"),
            (500, "", "unknown"),
            (500, #"{"error": "internal"}"#, "unknown"),
            (502, "<html>bad gateway</html>", "unknown"),
            (504, "", "unknown"),
            (200, "", "unknown"),
            (200, "ok", "unknown"),
            (200, #"{"data": "pending"}"#, "unknown"),
            (200, #"{"data": "success"}"#, "unknown"),
            (200, #"{"data": "success", "status": 201}"#, "unknown"),
            (200, #"{"data": "success", "status": "200"}"#, "unknown"),
            (200, #"{"data": "SUCCESS", "status": 200}"#, "unknown"),
            (200, #"{"data": "success", "status": 200, "data": "failed"}"#, "unknown"),
            (200, #"{"data": "success", "status": 200, "paid": false}"#, "unknown"),
            (201, success, "unknown"),
            (204, "", "unknown"),
            (302, "", "unknown"),
            (100, "", "unknown"),
            // The success body under another status is neither paid nor a bare refusal.
            (400, success, "unknown"),
            (404, success, "unknown"),
            // Only the exact failed body is the bank's word.
            (502, #"{"data": "failed", "status": 502}"#, "unknown"),
            (503, #"{"data": "failed"}"#, "unknown"),
            (503, #"{"data": "failed", "status": 503, "retry": true}"#, "unknown"),
            (404, #"{"data": "failed", "status": "503"}"#, "refused"),
        ] as [(Int, String, String)])
    func classifiesAnswers(status: Int, body: String, expected: String) {
        #expect(PayoutOutcome(.answered(status: status, body: Array(body.utf8))).name == expected)
    }

    @Test("nothing sent is unreachable, no answer is unknown")
    func transportFailures() {
        #expect(PayoutOutcome(.notSent("connection refused")) == .unreachable("connection refused"))
        #expect(PayoutOutcome(.noAnswer("timed out")) == .unknown("timed out"))
    }

    @Test(
        "an answer to libcurl's resend counts only if it is the bank's word",
        arguments: [
            (200, success, "paid"), (404, failed, "declined"), (503, failed, "declined"),
            (404, "", "unknown"), (401, "", "unknown"), (422, #"{"error": "x"}"#, "unknown"), (409, "", "unknown"),
            (500, "", "unknown"), (200, "ok", "unknown"),
        ] as [(Int, String, String)])
    func resentAnswers(status: Int, body: String, expected: String) {
        #expect(PayoutOutcome(.answeredAfterResend(status: status, body: Array(body.utf8))).name == expected)
    }

    @Test("names and details describe the outcome")
    func namesAndDetails() {
        #expect(PayoutOutcome.paid.name == "paid")
        #expect(PayoutOutcome.paid.detail == "the bank paid")
        #expect(PayoutOutcome.declined("r").detail == "r")
        #expect(PayoutOutcome.refused("f").name == "refused")
        #expect(PayoutOutcome.unreachable("u").name == "unreachable")
        #expect(PayoutOutcome.unknown("k").detail == "k")
        #expect(PayoutOutcome(.answered(status: 404, body: [])).detail.contains("404"))
    }

    @Test("only paid and declined are the bank's own word")
    func banksWord() {
        #expect(PayoutOutcome.paid.isBanksWord)
        #expect(PayoutOutcome.declined("x").isBanksWord)
        #expect(!PayoutOutcome.refused("x").isBanksWord)
        #expect(!PayoutOutcome.unreachable("x").isBanksWord)
        #expect(!PayoutOutcome.unknown("x").isBanksWord)
    }

    @Test("every attempt of one withdrawal sends its stored key and the same body")
    func payoutKeyAndBody() throws {
        let wallet = try #require(WalletID("3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"))
        let amount = try #require(Amount(minorUnits: 5_000))
        let lease = Timestamp(microseconds: 1)
        let first = Payout(withdrawalID: 42, wallet: wallet, amount: amount, bankKey: "wd_k", attempt: 1, bankMayHavePaid: false, leaseUntil: lease)
        let later = Payout(withdrawalID: 42, wallet: wallet, amount: amount, bankKey: "wd_k", attempt: 4, bankMayHavePaid: true, leaseUntil: lease)
        #expect(first.requestBody == later.requestBody)
        let body = try JSONParser.parse(Array(first.requestBody.utf8))
        #expect(body == .object(["reference": .string("withdrawal-42"), "wallet": .string(wallet.text), "amount": .number("5000")]))
    }

    @Test("bank keys are wd_ and 32 hex digits, a new one each time")
    func bankKeys() {
        let keys = (0..<1_000).map { _ in BankKey.random() }
        #expect(Set(keys).count == keys.count)
        for key in keys.prefix(20) {
            #expect(key.hasPrefix("wd_") && key.count == 35)
            #expect(key.dropFirst(3).allSatisfy { $0.isHexDigit && !$0.isUppercase })
        }
    }
}
