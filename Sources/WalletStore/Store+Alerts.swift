import WalletDomain

extension Store {
    /// The readings `/metrics` exposes for the alerting rules, taken at `now`. Every query
    /// but the held sum stays within the `transactions_due` index (only withdrawals not yet
    /// final have a `next_attempt_at`), so a scrape costs the work still to do, not the
    /// ledger's size; the held sum reads the wallets table, as `walletctl stats` does.
    public func operatorReadings(now: Timestamp) throws -> OperatorReadings {
        let unknown = try outcomeUnknownWithdrawals()
        let webhooks = try webhookDeliveryHealth()
        return OperatorReadings(
            now: now, lastPass: try lastProcessorPass(), outcomeUnknownCount: unknown.count,
            outcomeUnknownOldestDebitedAt: unknown.oldestDebitedAt, held: try totalHeld(),
            dueUnclaimed: try dueUnclaimedWithdrawals(now: now), webhookDeliveriesFailing: webhooks.failing,
            webhookDeliveriesFailed: webhooks.failed)
    }

    /// The processor's last recorded pass, nil before the first.
    func lastProcessorPass() throws -> ProcessorPassRecord? {
        try database.queryFirst(
            "SELECT started_at, finished_at, claimed, completed, failed, retried FROM processor_passes ORDER BY id DESC LIMIT 1"
        ) {
            ProcessorPassRecord(
                startedAt: Timestamp(microseconds: $0.integer("started_at")), finishedAt: Timestamp(microseconds: $0.integer("finished_at")),
                claimed: $0.integer("claimed"), completed: $0.integer("completed"), failed: $0.integer("failed"),
                retried: $0.integer("retried"))
        }
    }

    /// How many withdrawals are held on an unknown bank outcome, and the earliest time
    /// the money of one of them was debited: when its payout began, so the doubt cannot be
    /// older. Not `updated_at`, which every recheck that stays unknown moves on, so an age
    /// measured from it would never pass the recheck interval. Such a withdrawal keeps a
    /// `next_attempt_at` (its next recheck), so the `IS NOT NULL` term lets SQLite use the
    /// partial index `transactions_due`, and each debit is found by `ledger_by_transaction`.
    func outcomeUnknownWithdrawals() throws -> (count: Int64, oldestDebitedAt: Timestamp?) {
        try database.queryFirst(
            """
            SELECT count(*), min(l.created_at) FROM transactions t JOIN ledger l ON l.transaction_id = t.id AND l.kind = ?3
            WHERE t.next_attempt_at IS NOT NULL AND t.status = ?1 AND t.failure_reason = ?2
            """,
            [SQLValue(TransactionStatus.processing), SQLValue(FailureReason.bankOutcomeUnknown), SQLValue(LedgerEntry.Kind.debit)]
        ) { ($0.integer(0), $0.optionalInteger(1).map(Timestamp.init(microseconds:))) } ?? (0, nil)
    }

    /// The exact sum of `wallets.held`: money taken from balances and not yet paid or refunded.
    func totalHeld() throws -> Int128 {
        try database.queryFirst("SELECT \(Store.exactSum("held")) FROM wallets") { Store.exactSum($0, from: 0) } ?? 0
    }

    /// Withdrawals due by `now` that no live lease holds: what the next pass would claim.
    /// The same condition as `claimDue`'s.
    func dueUnclaimedWithdrawals(now: Timestamp) throws -> Int64 {
        try database.scalarInteger(
            """
            SELECT count(*) FROM transactions
            WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
            """,
            [.integer(now.microseconds)]) ?? 0
    }
}
