/// What an operator must watch, read from the database when `/metrics` is scraped: the
/// gauges the alerting rules in `packaging/prometheus/wallet-alerts.yml` are written on.
public struct OperatorReadings: Sendable, Equatable {
    /// When the readings were taken; ages are measured from it.
    public var now: Timestamp
    /// Nil until the processor has recorded a pass.
    public var lastPass: ProcessorPassRecord?
    /// `PROCESSING` withdrawals held on `bank_outcome_unknown`.
    public var outcomeUnknownCount: Int64
    /// The earliest debit among them: when the payout of the oldest one began, the first
    /// moment its doubt could have begun. (Its `updated_at` would not do: every recheck
    /// that stays unknown moves it on.)
    public var outcomeUnknownOldestDebitedAt: Timestamp?
    /// The sum of `wallets.held`, exact.
    public var held: Int128
    /// Withdrawals due (`next_attempt_at <= now`) that no live lease holds.
    public var dueUnclaimed: Int64
    /// Webhook deliveries still pending whose last attempt did not deliver.
    public var webhookDeliveriesFailing: Int64
    /// Webhook deliveries given up (failed after the give-up age, or their endpoint deleted).
    public var webhookDeliveriesFailed: Int64

    public init(
        now: Timestamp, lastPass: ProcessorPassRecord?, outcomeUnknownCount: Int64, outcomeUnknownOldestDebitedAt: Timestamp?, held: Int128,
        dueUnclaimed: Int64, webhookDeliveriesFailing: Int64 = 0, webhookDeliveriesFailed: Int64 = 0
    ) {
        self.webhookDeliveriesFailing = webhookDeliveriesFailing
        self.webhookDeliveriesFailed = webhookDeliveriesFailed
        self.now = now
        self.lastPass = lastPass
        self.outcomeUnknownCount = outcomeUnknownCount
        self.outcomeUnknownOldestDebitedAt = outcomeUnknownOldestDebitedAt
        self.held = held
        self.dueUnclaimed = dueUnclaimed
    }
}

/// One row of `processor_passes`: when a pass ran and what it did. For `walletctl stats`
/// and the `/metrics` gauges alike.
public struct ProcessorPassRecord: Sendable, Equatable {
    public var startedAt: Timestamp
    public var finishedAt: Timestamp
    public var claimed: Int64
    public var completed: Int64
    public var failed: Int64
    public var retried: Int64

    public init(startedAt: Timestamp, finishedAt: Timestamp, claimed: Int64, completed: Int64, failed: Int64, retried: Int64) {
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.claimed = claimed
        self.completed = completed
        self.failed = failed
        self.retried = retried
    }
}
