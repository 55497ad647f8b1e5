import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("Metrics")
struct MetricsTests {
    @Test("request counters are labelled by method, route template and status")
    func counters() {
        let metrics = Metrics()
        metrics.record(method: "POST", route: "/wallets/", status: 201, seconds: 0.001)
        metrics.record(method: "POST", route: "/wallets/", status: 201, seconds: 0.001)
        metrics.record(method: "POST", route: "/wallets/", status: 400, seconds: 0.001)
        metrics.record(method: "GET", route: "unmatched", status: 404, seconds: 0.001)
        let lines = metrics.render(transactionCounts: []).split(separator: "\n").map(String.init)
        #expect(lines.contains(#"wallet_http_requests_total{method="POST",route="/wallets/",status="201"} 2"#))
        #expect(lines.contains(#"wallet_http_requests_total{method="POST",route="/wallets/",status="400"} 1"#))
        #expect(lines.contains(#"wallet_http_requests_total{method="GET",route="unmatched",status="404"} 1"#))
    }

    @Test("only the API's methods become labels; any other method is counted as other")
    func methodLabels() {
        let metrics = Metrics()
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            metrics.record(method: method, route: "unmatched", status: 404, seconds: 0.001)
        }
        // What a client can send through nginx (and anything a misconfigured one passes).
        for method in ["FOOA", "FOOB", "get", "PUT", "TRACE", "", String(repeating: "X", count: 300)] {
            metrics.record(method: method, route: "unmatched", status: 404, seconds: 0.001)
        }
        let lines = metrics.render(transactionCounts: []).split(separator: "\n").map(String.init)
        let series = lines.filter { $0.hasPrefix("wallet_http_requests_total{") }
        #expect(series.count == 5, "\(series)")
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            #expect(lines.contains("wallet_http_requests_total{method=\"\(method)\",route=\"unmatched\",status=\"404\"} 1"))
        }
        #expect(lines.contains(#"wallet_http_requests_total{method="other",route="unmatched",status="404"} 7"#))
        #expect(!lines.contains { $0.contains("FOO") || $0.contains("XXX") })
    }

    @Test("the latency histogram is cumulative, ends with +Inf, and counts slow requests only there")
    func histogram() {
        let metrics = Metrics()
        for seconds in [0.0004, 0.0005, 0.002, 0.3, 7.0] {
            metrics.record(method: "GET", route: "/healthz", status: 200, seconds: seconds)
        }
        let lines = metrics.render(transactionCounts: []).split(separator: "\n").map(String.init)
        let buckets = lines.filter { $0.hasPrefix(#"wallet_http_request_duration_seconds_bucket{route="/healthz""#) }
        #expect(buckets.count == Metrics.latencyBucketsSeconds.count + 1)
        let counts = buckets.compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
        #expect(counts == counts.sorted())
        #expect(buckets.first == #"wallet_http_request_duration_seconds_bucket{route="/healthz",le="0.0005"} 2"#)
        #expect(buckets.contains(#"wallet_http_request_duration_seconds_bucket{route="/healthz",le="0.0025"} 3"#))
        #expect(buckets.contains(#"wallet_http_request_duration_seconds_bucket{route="/healthz",le="0.5"} 4"#))
        #expect(buckets.contains(#"wallet_http_request_duration_seconds_bucket{route="/healthz",le="2.5"} 4"#))
        #expect(buckets.last == #"wallet_http_request_duration_seconds_bucket{route="/healthz",le="+Inf"} 5"#)
        #expect(lines.contains(#"wallet_http_request_duration_seconds_count{route="/healthz"} 5"#))
    }

    @Test("group-commit batches and transaction gauges are rendered")
    func batchesAndGauges() {
        let metrics = Metrics()
        metrics.recordBatch(size: 3)
        metrics.recordBatch(size: 1)
        let text = metrics.render(transactionCounts: [TransactionGroup(type: .withdrawal, status: .failed, count: 4, amount: 40)])
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("wallet_write_batches_total 2"))
        #expect(lines.contains("wallet_write_requests_total 4"))
        #expect(lines.contains(#"wallet_transactions{type="WITHDRAWAL",status="FAILED"} 4"#))
        #expect(text.hasSuffix("\n"))
        // Every sample line belongs to a metric that has HELP and TYPE lines.
        let declared = Set(lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] })
        for line in lines where !line.hasPrefix("#") {
            let name = line.prefix { $0 != "{" && $0 != " " }
            let family = ["_bucket", "_sum", "_count"].reduce(Substring(name)) { name, suffix in
                name.hasSuffix(suffix) && declared.contains(Substring(name.dropLast(suffix.count))) ? name.dropLast(suffix.count) : name
            }
            #expect(declared.contains(family), "\(line)")
        }
    }

    @Test("the alert gauges read 0 before anything happened and the readings after")
    func alertGauges() {
        let metrics = Metrics()
        let quiet = OperatorReadings(
            now: Timestamp(seconds: 1_000), lastPass: nil, outcomeUnknownCount: 0, outcomeUnknownOldestDebitedAt: nil, held: 0, dueUnclaimed: 0)
        let quietLines = metrics.render(transactionCounts: [], readings: quiet).split(separator: "\n").map(String.init)
        #expect(quietLines.contains("wallet_processor_last_pass_timestamp_seconds 0"))
        #expect(quietLines.contains("wallet_withdrawals_outcome_unknown_oldest_age_seconds 0"))
        #expect(quietLines.contains("# TYPE wallet_held_minor_units gauge"))

        let busy = OperatorReadings(
            now: Timestamp(seconds: 10_000),
            lastPass: .init(
                startedAt: Timestamp(microseconds: 9_990_000_000), finishedAt: Timestamp(microseconds: 9_990_500_000), claimed: 5, completed: 2,
                failed: 1, retried: 2),
            outcomeUnknownCount: 3, outcomeUnknownOldestDebitedAt: Timestamp(seconds: 6_000),
            held: Int128(Int64.max) * 4, dueUnclaimed: 7)
        let lines = metrics.render(transactionCounts: [], readings: busy).split(separator: "\n").map(String.init)
        #expect(lines.contains("wallet_processor_last_pass_timestamp_seconds 9990"))
        #expect(lines.contains("wallet_processor_last_pass_claimed 5"))
        #expect(lines.contains("wallet_processor_last_pass_completed 2"))
        #expect(lines.contains("wallet_processor_last_pass_failed 1"))
        #expect(lines.contains("wallet_processor_last_pass_retried 2"))
        #expect(lines.contains("wallet_withdrawals_outcome_unknown 3"))
        #expect(lines.contains("wallet_withdrawals_outcome_unknown_oldest_age_seconds 4000"))
        #expect(lines.contains("wallet_held_minor_units \(Int128(Int64.max) * 4)"), "held is exact past Int64.max")
        #expect(lines.contains("wallet_withdrawals_due_unclaimed 7"))
    }

    @Test("the readings come from the database: a due withdrawal until a live lease holds it, then its amount held")
    func readingsFromTheDatabase() throws {
        let api = try TestAPI()
        let start = Timestamp.now()
        #expect(
            try api.reader.operatorReadings(now: start)
                == OperatorReadings(
                    now: start, lastPass: nil, outcomeUnknownCount: 0, outcomeUnknownOldestDebitedAt: nil, held: 0, dueUnclaimed: 0))
        let wallet = try api.createWallet()
        api.deposit(wallet, 1_000)
        _ = try api.dueWithdrawal(wallet, 300)
        let now = Timestamp.now().adding(seconds: 1)
        var readings = try api.reader.operatorReadings(now: now)
        #expect(readings.dueUnclaimed == 1)
        #expect(readings.held == 0)

        let store = api.database.store
        _ = try store.write {
            try store.claimDue(owner: "test", dueBy: now, now: now, leaseUntil: now.adding(seconds: 60), limit: 10)
        }
        readings = try api.reader.operatorReadings(now: now)
        #expect(readings.dueUnclaimed == 0, "a live lease holds it")
        #expect(readings.held == 300)
        #expect(readings.outcomeUnknownCount == 0)
        #expect(try api.reader.operatorReadings(now: now.adding(seconds: 61)).dueUnclaimed == 1, "the lease has run out")

        let text = api.send("GET", "/metrics").body
        #expect(text.contains("\nwallet_held_minor_units 300\n"))
        #expect(text.contains("\nwallet_processor_last_pass_timestamp_seconds 0\n"))
    }
}
