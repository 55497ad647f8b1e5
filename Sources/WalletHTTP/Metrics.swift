import WalletDomain
import WalletJSON
import WalletPlatform

/// Request counters and latency histograms by route, kept in memory and rendered in the
/// Prometheus text format. Updated once per request under a lock (a few dozen nanoseconds,
/// uncontended most of the time). Every label value is bounded: methods by the API's
/// methods, routes by the route templates, statuses by the few the API answers.
///
/// `@unchecked Sendable`: every counter is read and written under `lock`.
public final class Metrics: @unchecked Sendable {
    /// Upper bounds of the latency buckets, in seconds: fine below 10 ms, where a healthy
    /// responder answers, coarse above, where only trouble goes.
    public static let latencyBucketsSeconds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    private struct RequestKey: Hashable {
        let method: String
        let route: String
        let status: Int
    }

    private struct Histogram {
        var buckets = [Int64](repeating: 0, count: Metrics.latencyBucketsSeconds.count)
        var count: Int64 = 0
        var sum: Double = 0

        /// Counts one request; `bucket` is the first bucket whose bound it is within, nil past the last.
        mutating func add(_ seconds: Double, bucket: Int?) {
            if let bucket { buckets[bucket] += 1 }
            count += 1
            sum += seconds
        }
    }

    /// Everything `record` and `recordBatch` update, kept under `lock`.
    private struct Counters {
        var requests: [RequestKey: Int64] = [:]
        var latency: [String: Histogram] = [:]
        var batches: Int64 = 0
        var batchedWrites: Int64 = 0
    }

    /// Taken by every request (`record`); a scrape holds it only to copy the counters.
    private let lock = Lock()
    private var counters = Counters()

    public init() {}

    /// The `method` label: one of the API's methods, or `other`. The raw method comes from
    /// the client, and every distinct label value is a series kept forever, so a client
    /// sending `FOOA`, `FOOB`, ... must not be able to grow them without bound (nginx
    /// answers such methods itself; this holds even if a request gets past it).
    static func methodLabel(_ method: String) -> String {
        Route.apiMethods.contains(method) ? method : "other"
    }

    public func record(method: String, route: String, status: Int, seconds: Double) {
        let key = RequestKey(method: Metrics.methodLabel(method), route: route, status: status)
        let bucket = Metrics.latencyBucketsSeconds.firstIndex(where: { seconds <= $0 })
        lock.withLock {
            counters.requests[key, default: 0] += 1
            counters.latency[route, default: Histogram()].add(seconds, bucket: bucket)
        }
    }

    public func recordBatch(size: Int) {
        lock.withLock {
            counters.batches += 1
            counters.batchedWrites += Int64(size)
        }
    }

    /// The text of `/metrics`; `transactionCounts` and `readings` come from the database at
    /// scrape time.
    public func render(transactionCounts: [TransactionGroup], readings: OperatorReadings? = nil) -> String {
        // Copied into new arrays under the lock, so the dictionaries stay uniquely owned
        // (the next `record` does not copy them) and sorting and formatting, the slow part,
        // happen after the requests waiting on the lock have gone on.
        let (requests, latency, batches, batchedWrites) = lock.withLock {
            (Array(counters.requests), Array(counters.latency), counters.batches, counters.batchedWrites)
        }
        var out = ""
        out += "# HELP wallet_http_requests_total HTTP requests answered, by method, route and status.\n"
        out += "# TYPE wallet_http_requests_total counter\n"
        for (key, count) in requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status) }) {
            out += "wallet_http_requests_total{method=\"\(key.method)\",route=\"\(key.route)\",status=\"\(key.status)\"} \(count)\n"
        }
        out += "# HELP wallet_http_request_duration_seconds Time from a request's arrival at the responder to its answer.\n"
        out += "# TYPE wallet_http_request_duration_seconds histogram\n"
        for (route, histogram) in latency.sorted(by: { $0.key < $1.key }) {
            var cumulative: Int64 = 0
            for (bound, count) in zip(Metrics.latencyBucketsSeconds, histogram.buckets) {
                cumulative += count
                out += "wallet_http_request_duration_seconds_bucket{route=\"\(route)\",le=\"\(bound)\"} \(cumulative)\n"
            }
            out += "wallet_http_request_duration_seconds_bucket{route=\"\(route)\",le=\"+Inf\"} \(histogram.count)\n"
            out += "wallet_http_request_duration_seconds_sum{route=\"\(route)\"} \(histogram.sum)\n"
            out += "wallet_http_request_duration_seconds_count{route=\"\(route)\"} \(histogram.count)\n"
        }
        out += "# HELP wallet_write_batches_total Group-commit transactions, each made durable by one sync.\n"
        out += "# TYPE wallet_write_batches_total counter\nwallet_write_batches_total \(batches)\n"
        out += "# HELP wallet_write_requests_total Write requests applied through group commit.\n"
        out += "# TYPE wallet_write_requests_total counter\nwallet_write_requests_total \(batchedWrites)\n"
        out += "# HELP wallet_transactions Transactions in the database, by type and status.\n"
        out += "# TYPE wallet_transactions gauge\n"
        for row in transactionCounts {
            out += "wallet_transactions{type=\"\(row.type.rawValue)\",status=\"\(row.status.rawValue)\"} \(row.count)\n"
        }
        if let readings { out += Metrics.render(readings) }
        return out
    }

    /// The gauges the alerting rules read. A gauge with nothing to measure is 0 (no pass
    /// yet, no withdrawal in doubt), so every series is always present and a rule never
    /// has to tell a missing series from a quiet one.
    static func render(_ readings: OperatorReadings) -> String {
        func gauge(_ name: String, _ help: String, _ value: String) -> String {
            "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(value)\n"
        }
        let pass = readings.lastPass
        let oldestAgeSeconds = readings.outcomeUnknownOldestDebitedAt.map { max(0, readings.now.microseconds - $0.microseconds) / 1_000_000 } ?? 0
        var out = ""
        out += gauge(
            "wallet_processor_last_pass_timestamp_seconds", "Unix time the processor's last recorded pass finished; 0 before the first.",
            "\((pass?.finishedAt.microseconds ?? 0) / 1_000_000)")
        out += gauge("wallet_processor_last_pass_claimed", "Withdrawals the last pass claimed.", "\(pass?.claimed ?? 0)")
        out += gauge("wallet_processor_last_pass_completed", "Withdrawals the last pass completed.", "\(pass?.completed ?? 0)")
        out += gauge("wallet_processor_last_pass_failed", "Withdrawals the last pass failed.", "\(pass?.failed ?? 0)")
        out += gauge("wallet_processor_last_pass_retried", "Withdrawals the last pass left for another attempt.", "\(pass?.retried ?? 0)")
        out += gauge(
            "wallet_withdrawals_outcome_unknown", "PROCESSING withdrawals held on bank_outcome_unknown.", "\(readings.outcomeUnknownCount)")
        out += gauge(
            "wallet_withdrawals_outcome_unknown_oldest_age_seconds",
            "Seconds since the oldest withdrawal held on bank_outcome_unknown was debited; 0 when none is.", "\(oldestAgeSeconds)")
        out += gauge("wallet_held_minor_units", "Sum of the wallets' held amounts, in minor units.", "\(readings.held)")
        out += gauge(
            "wallet_withdrawals_due_unclaimed", "Withdrawals due now that no processor holds a live lease on.", "\(readings.dueUnclaimed)")
        out += gauge(
            "wallet_webhook_deliveries_failing", "Webhook deliveries still pending whose last attempt did not deliver.",
            "\(readings.webhookDeliveriesFailing)")
        out += gauge(
            "wallet_webhook_deliveries_failed", "Webhook deliveries given up (past the give-up age, or endpoint deleted).",
            "\(readings.webhookDeliveriesFailed)")
        return out
    }
}
