import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

private let policy = RetryPolicy(maxRetries: 3, baseSeconds: 10, unknownRecheckSeconds: 600)
private let second: Int64 = 1_000_000
private let day: Int64 = 86_400 * second

/// One row of the decision table: what becomes of a withdrawal after one attempt.
struct DecisionCase: Sendable, CustomTestStringConvertible {
    var outcome: PayoutOutcome
    var last: Bool
    var doubt: Bool
    var expected: PayoutDecision

    var testDescription: String { "\(outcome.name), \(last ? "last" : "not last"), \(doubt ? "may have paid" : "no doubt")" }
}

/// Attempt 2 is not the last of four; attempt 4 is. Backoff after attempt 2 is 20 s.
private let backoff = PayoutDecision.retry(afterMicroseconds: 20 * second, bankMayHavePaid: false, reason: nil)
private let backoffInDoubt = PayoutDecision.retry(afterMicroseconds: 20 * second, bankMayHavePaid: true, reason: nil)
private let recheck = PayoutDecision.retry(afterMicroseconds: 600 * second, bankMayHavePaid: true, reason: .bankOutcomeUnknown)

private let decisionTable: [DecisionCase] = [
    DecisionCase(outcome: .paid, last: false, doubt: false, expected: .complete),
    DecisionCase(outcome: .paid, last: false, doubt: true, expected: .complete),
    DecisionCase(outcome: .paid, last: true, doubt: false, expected: .complete),
    DecisionCase(outcome: .paid, last: true, doubt: true, expected: .complete),
    // A definite "not paid" settles the last attempt; before it, the doubt is carried on.
    DecisionCase(outcome: .declined("failed"), last: false, doubt: false, expected: backoff),
    DecisionCase(outcome: .declined("failed"), last: false, doubt: true, expected: backoffInDoubt),
    DecisionCase(outcome: .declined("failed"), last: true, doubt: false, expected: .fail(.bankRejected)),
    DecisionCase(outcome: .declined("failed"), last: true, doubt: true, expected: .fail(.bankRejected)),
    // A bare 4xx: this request was not paid; it says nothing about an earlier attempt.
    DecisionCase(outcome: .refused("404"), last: false, doubt: false, expected: backoff),
    DecisionCase(outcome: .refused("404"), last: false, doubt: true, expected: backoffInDoubt),
    DecisionCase(outcome: .refused("404"), last: true, doubt: false, expected: .fail(.bankRejected)),
    DecisionCase(outcome: .refused("404"), last: true, doubt: true, expected: recheck),
    // Nothing sent: not paid, unless an earlier attempt may have been.
    DecisionCase(outcome: .unreachable("refused"), last: false, doubt: false, expected: backoff),
    DecisionCase(outcome: .unreachable("refused"), last: false, doubt: true, expected: backoffInDoubt),
    DecisionCase(outcome: .unreachable("refused"), last: true, doubt: false, expected: .fail(.bankUnreachable)),
    DecisionCase(outcome: .unreachable("refused"), last: true, doubt: true, expected: recheck),
    // The money may have left: held until the bank answers.
    DecisionCase(outcome: .unknown("timeout"), last: false, doubt: false, expected: backoffInDoubt),
    DecisionCase(outcome: .unknown("timeout"), last: false, doubt: true, expected: backoffInDoubt),
    DecisionCase(outcome: .unknown("timeout"), last: true, doubt: false, expected: recheck),
    DecisionCase(outcome: .unknown("timeout"), last: true, doubt: true, expected: recheck),
]

@Suite("RetryPolicy")
struct RetryPolicyTests {
    @Test(
        "backoff is base × 2^(n−1) without jitter",
        arguments: [
            (1, 10 * second), (2, 20 * second), (3, 40 * second), (4, 80 * second), (10, 5_120 * second),
        ] as [(Int64, Int64)])
    func backoffWithoutJitter(attempt: Int64, microseconds: Int64) {
        #expect(policy.backoffMicroseconds(afterAttempt: attempt, jitter: 0) == microseconds)
    }

    @Test(
        "jitter adds up to a quarter more, never a full quarter",
        arguments: [
            (1, 0.5, 10 * second + 1_250_000), (1, 0.999, 10 * second + 2_497_500), (2, 0.999, 20 * second + 4_995_000),
            (3, 0.25, 40 * second + 2_500_000),
        ] as [(Int64, Double, Int64)])
    func backoffWithJitter(attempt: Int64, jitter: Double, microseconds: Int64) {
        let delay = policy.backoffMicroseconds(afterAttempt: attempt, jitter: jitter)
        #expect(delay == microseconds)
        let nominal = policy.backoffMicroseconds(afterAttempt: attempt, jitter: 0)
        #expect(delay >= nominal && delay < nominal + nominal / 4)
    }

    @Test(
        "backoff is capped at a day, plus jitter, even for huge attempts and bases",
        arguments: [
            (10, 14, 0.0, 81_920 * second), (10, 15, 0.0, day), (10, 100, 0.0, day), (10, Int64.max, 0.0, day), (86_400, 31, 0.0, day),
            (86_400, 2, 0.999, day + day * 999 / 4_000),
            (10, 13, 0.0, 40_960 * second),
        ] as [(Int64, Int64, Double, Int64)])
    func backoffCap(base: Int64, attempt: Int64, jitter: Double, microseconds: Int64) {
        let capped = RetryPolicy(maxRetries: 3, baseSeconds: base, unknownRecheckSeconds: 600)
        #expect(capped.backoffMicroseconds(afterAttempt: attempt, jitter: jitter) == microseconds)
    }

    @Test("a zero base retries at once")
    func zeroBase() {
        let immediate = RetryPolicy(maxRetries: 3, baseSeconds: 0, unknownRecheckSeconds: 0)
        #expect(immediate.backoffMicroseconds(afterAttempt: 1, jitter: 0.999) == 0)
        #expect(immediate.backoffMicroseconds(afterAttempt: 30, jitter: 0.5) == 0)
    }

    @Test("the decision table: outcome × last attempt × bank may have paid", arguments: decisionTable)
    func decisions(row: DecisionCase) {
        let attempt: Int64 = row.last ? 4 : 2
        #expect(policy.decide(attempt: attempt, bankMayHavePaid: row.doubt, outcome: row.outcome, jitter: 0) == row.expected)
    }

    @Test(
        "rechecks after the last attempt keep following the table",
        arguments: [
            (PayoutOutcome.paid, PayoutDecision.complete), (.declined("failed"), .fail(.bankRejected)),
            (.unknown("timeout"), recheck), (.unreachable("refused"), recheck),
        ])
    func rechecks(outcome: PayoutOutcome, expected: PayoutDecision) {
        #expect(policy.decide(attempt: 9, bankMayHavePaid: true, outcome: outcome, jitter: 0) == expected)
    }

    @Test(
        "after doubt, only the bank's own word settles: a bare 4xx or a refused connection is just another try",
        arguments: [PayoutOutcome.refused("HTTP 404"), .refused("HTTP 401"), .unreachable("refused"), .unknown("other body")])
    func onlyTheBanksWordSettlesDoubt(outcome: PayoutOutcome) {
        for attempt in Int64(1)...9 {
            let decision = policy.decide(attempt: attempt, bankMayHavePaid: true, outcome: outcome, jitter: 0.3)
            guard case .retry(_, let doubt, _) = decision, doubt else {
                Issue.record("attempt \(attempt) after doubt, \(outcome.name): \(decision) instead of a retry that keeps the doubt")
                continue
            }
        }
        #expect(policy.decide(attempt: 9, bankMayHavePaid: true, outcome: .declined("failed"), jitter: 0.3) == .fail(.bankRejected))
        #expect(policy.decide(attempt: 9, bankMayHavePaid: true, outcome: .paid, jitter: 0.3) == .complete)
    }

    @Test("rechecks are spread by jitter: up to a quarter of the interval more")
    func recheckJitter() {
        #expect(policy.recheckMicroseconds(jitter: 0) == 600 * second)
        #expect(policy.recheckMicroseconds(jitter: 0.5) == 675 * second)
        #expect(
            policy.decide(attempt: 4, bankMayHavePaid: false, outcome: .unknown("x"), jitter: 0.999)
                == .retry(afterMicroseconds: 600 * second + 149_850_000, bankMayHavePaid: true, reason: .bankOutcomeUnknown))
        let huge = RetryPolicy(maxRetries: 0, baseSeconds: 1, unknownRecheckSeconds: Int64.max)
        #expect(huge.recheckMicroseconds(jitter: 0.999) > 0)
    }

    @Test("the last attempt is the first plus maxRetries", arguments: [0, 1, 3, 5] as [Int64])
    func lastAttempt(maxRetries: Int64) {
        let custom = RetryPolicy(maxRetries: maxRetries, baseSeconds: 1, unknownRecheckSeconds: 60)
        #expect(custom.maxAttempts == maxRetries + 1)
        #expect(custom.decide(attempt: maxRetries + 1, bankMayHavePaid: false, outcome: .declined("x"), jitter: 0) == .fail(.bankRejected))
        if maxRetries > 0 {
            #expect(
                custom.decide(attempt: maxRetries, bankMayHavePaid: false, outcome: .declined("x"), jitter: 0)
                    == .retry(afterMicroseconds: custom.backoffMicroseconds(afterAttempt: maxRetries, jitter: 0), bankMayHavePaid: false, reason: nil)
            )
        }
    }

    @Test("the retry delay carries the jitter")
    func decisionUsesJitter() {
        #expect(
            policy.decide(attempt: 1, bankMayHavePaid: false, outcome: .unreachable("x"), jitter: 0.999)
                == .retry(afterMicroseconds: 10 * second + 2_497_500, bankMayHavePaid: false, reason: nil))
    }

    @Test("an unknown outcome is never a failure, whatever the attempt", arguments: Array(Int64(1)...12))
    func unknownNeverFails(attempt: Int64) {
        for doubt in [false, true] {
            for outcome in [PayoutOutcome.unknown("x"), .unreachable("y"), .refused("z")] where doubt || outcome == .unknown("x") {
                if case .fail = policy.decide(attempt: attempt, bankMayHavePaid: doubt, outcome: outcome, jitter: 0) {
                    Issue.record("attempt \(attempt) \(outcome.name) failed a withdrawal the bank may have paid")
                }
            }
        }
    }

    @Test("settings map onto the policy")
    func fromSettings() {
        var settings = Settings()
        settings.maxRetries = 7
        settings.retryBaseSeconds = 3
        settings.unknownRecheckSeconds = 90
        #expect(RetryPolicy(settings) == RetryPolicy(maxRetries: 7, baseSeconds: 3, unknownRecheckSeconds: 90))
    }
}
