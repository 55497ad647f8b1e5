import Testing
@testable import WalletCore

private let success = #"{"data": "success", "status": 200}"#
private let failed = #"{"data": "failed", "status": 503}"#

@Suite("PayoutOutcome")
struct PayoutOutcomeTests {
    @Test("each bank answer is classified as API.md says", arguments: [
        // paid: HTTP 200 with the success body, nothing else.
        (200, success, "paid"),
        (200, #"{"status": 200, "data": "success"}"#, "paid"),
        (200, #" {"data":"success","status":200} "#, "paid"),
        // not paid: the failed body, whatever the HTTP status.
        (503, failed, "rejected"),
        (200, failed, "rejected"),
        (500, failed, "rejected"),
        (409, failed, "rejected"),
        (502, #"{"data": "failed", "status": 502}"#, "rejected"),
        // not paid: a 4xx other than 409, 425, 429.
        (400, "", "rejected"),
        (400, #"{"data": "bad_request", "status": 400}"#, "rejected"),
        (401, "", "rejected"),
        (403, "denied", "rejected"),
        (404, "", "rejected"),
        (422, #"{"error": "x"}"#, "rejected"),
        (499, "", "rejected"),
        (400, success, "rejected"),
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
        (201, success, "unknown"),
        (204, "", "unknown"),
        (302, "", "unknown"),
        (100, "", "unknown"),
    ] as [(Int, String, String)])
    func classifiesAnswers(status: Int, body: String, expected: String) {
        #expect(PayoutOutcome(.answered(status: status, body: Array(body.utf8))).name == expected)
    }

    @Test("nothing sent is unreachable, no answer is unknown")
    func transportFailures() {
        #expect(PayoutOutcome(.notSent("connection refused")) == .unreachable("connection refused"))
        #expect(PayoutOutcome(.noAnswer("timed out")) == .unknown("timed out"))
    }

    @Test("names and details describe the outcome")
    func namesAndDetails() {
        #expect(PayoutOutcome.paid.name == "paid")
        #expect(PayoutOutcome.paid.detail == "the bank paid")
        #expect(PayoutOutcome.rejected("r").detail == "r")
        #expect(PayoutOutcome.unreachable("u").name == "unreachable")
        #expect(PayoutOutcome.unknown("k").detail == "k")
        #expect(PayoutOutcome(.answered(status: 404, body: [])).detail.contains("404"))
    }

    @Test("only paid and rejected are definite answers from the bank")
    func definiteOutcomes() {
        #expect(PayoutOutcome.paid.isDefinite)
        #expect(PayoutOutcome.rejected("x").isDefinite)
        #expect(!PayoutOutcome.unreachable("x").isDefinite)
        #expect(!PayoutOutcome.unknown("x").isDefinite)
    }

    @Test("every attempt of one withdrawal sends the same key and body; another withdrawal another key")
    func payoutKeyAndBody() throws {
        let wallet = try #require(WalletID("3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"))
        let amount = try #require(Amount(minorUnits: 5_000))
        let first = Payout(withdrawalID: 42, wallet: wallet, amount: amount, attempt: 1, bankMayHavePaid: false)
        let later = Payout(withdrawalID: 42, wallet: wallet, amount: amount, attempt: 4, bankMayHavePaid: true)
        let other = Payout(withdrawalID: 43, wallet: wallet, amount: amount, attempt: 1, bankMayHavePaid: false)
        #expect(first.idempotencyKey == later.idempotencyKey)
        #expect(first.idempotencyKey != other.idempotencyKey)
        #expect(first.idempotencyKey == "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b:42")
        #expect(first.requestBody == later.requestBody)
        let body = try JSONParser.parse(Array(first.requestBody.utf8))
        #expect(body == .object(["reference": .string("withdrawal-42"), "wallet": .string(wallet.text), "amount": .number("5000")]))
    }
}
