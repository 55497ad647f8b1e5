/// What becomes of a `PROCESSING` withdrawal after one attempt.
public enum PayoutDecision: Sendable, Equatable {
    /// Paid: `COMPLETED`.
    case complete
    /// Definitely not paid and no attempts left: `FAILED` with this reason, refunded.
    case fail(FailureReason)
    /// Try again at `after` microseconds from now, funds still held. `bankMayHavePaid` is
    /// the doubt carried forward; `reason` is `bank_outcome_unknown` once only a definite
    /// answer from the bank can settle the withdrawal.
    case retry(afterMicroseconds: Int64, bankMayHavePaid: Bool, reason: FailureReason?)
}

/// The withdrawal rules as a pure function: attempts, backoff with jitter, and
/// the rule that money which may have left is never refunded.
public struct RetryPolicy: Sendable, Equatable {
    public var maxRetries: Int64
    public var baseSeconds: Int64
    public var unknownRecheckSeconds: Int64

    public init(maxRetries: Int64, baseSeconds: Int64, unknownRecheckSeconds: Int64) {
        self.maxRetries = maxRetries
        self.baseSeconds = baseSeconds
        self.unknownRecheckSeconds = unknownRecheckSeconds
    }

    /// The first attempt and every retry.
    public var maxAttempts: Int64 { maxRetries + 1 }

    /// The delay after attempt `attempt` (1-based): base × 2^(attempt−1), plus up to a
    /// quarter more at random (`jitter` in 0..<1) so that withdrawals failed together do not
    /// retry together. Capped at a day: no doubling runs away.
    public func backoffMicroseconds(afterAttempt attempt: Int64, jitter: Double) -> Int64 {
        precondition(attempt >= 1 && (0..<1).contains(jitter), "backoff takes a 1-based attempt and a jitter in 0..<1")
        let dayMicroseconds: Int64 = 86_400_000_000
        let exponent = min(attempt - 1, 30)
        let (nominal, overflow) = (baseSeconds * 1_000_000).multipliedReportingOverflow(by: Int64(1) << exponent)
        let capped = overflow ? dayMicroseconds : min(nominal, dayMicroseconds)
        return capped + Int64(Double(capped) * 0.25 * jitter)
    }

    /// The delay before an unknown outcome is asked again: the recheck interval plus up to
    /// a quarter more at random, so that withdrawals left unknown by one outage are not all
    /// asked again in the same instant.
    public func recheckMicroseconds(jitter: Double) -> Int64 {
        precondition((0..<1).contains(jitter), "jitter is in 0..<1")
        let (nominal, overflow) = unknownRecheckSeconds.multipliedReportingOverflow(by: 1_000_000)
        let base = overflow ? Int64.max / 2 : nominal
        return base + Int64(Double(base) * 0.25 * jitter)
    }

    /// The decision after attempt number `attempt` had `outcome`: the payout rules table
    /// (`verify/payout-rules.tsv`, which the model checker reads too) as code.
    public func decide(attempt: Int64, bankMayHavePaid: Bool, outcome: PayoutOutcome, jitter: Double) -> PayoutDecision {
        let last = attempt >= maxAttempts
        switch outcome {
        case .paid:
            return .complete
        case .declined:
            // The bank's own word that it has not paid this key settles the last attempt.
            // Before that the doubt is kept: it only ever grows until the withdrawal is final.
            return last ? .fail(.bankRejected) : retry(attempt, doubt: bankMayHavePaid, jitter)
        case .refused where !bankMayHavePaid:
            return last ? .fail(.bankRejected) : retry(attempt, doubt: false, jitter)
        case .unreachable where !bankMayHavePaid:
            return last ? .fail(.bankUnreachable) : retry(attempt, doubt: false, jitter)
        case .refused, .unreachable, .unknown:
            // The money may have left (now, or in an earlier attempt that a refused request
            // or a refused connection says nothing about): hold it until the bank says paid
            // or not paid.
            return last
                ? .retry(afterMicroseconds: recheckMicroseconds(jitter: jitter), bankMayHavePaid: true, reason: .bankOutcomeUnknown)
                : retry(attempt, doubt: true, jitter)
        }
    }

    private func retry(_ attempt: Int64, doubt: Bool, _ jitter: Double) -> PayoutDecision {
        .retry(afterMicroseconds: backoffMicroseconds(afterAttempt: attempt, jitter: jitter), bankMayHavePaid: doubt, reason: nil)
    }
}
