import WalletDomain
import WalletPlatform
import WalletStore
#if canImport(Glibc)
import Glibc
#endif

/// wallet-notifier: one pass over the webhook deliveries due, then exit (run by
/// wallet-notifier.timer, or `make run`'s loop). Exit 0 when the pass did its work (whatever
/// the receivers answered), 1 when it could not (database unreachable), 2 for an invalid
/// configuration.
///
/// A pass: (1) in one transaction, turns the events written since the last pass into
/// deliveries for every endpoint whose patterns match (`fanOutEvents`); (2) claims, per
/// endpoint, its head of line and the run of due deliveries behind it (a window), leased to
/// this pass, for up to `WALLET_WEBHOOK_CONCURRENCY` endpoints at once; (3) sends each
/// window's deliveries one after the other, in event order, stopping at the first that is not
/// delivered (the rest are released untried: the endpoint's later events wait behind it, and
/// no other endpoint's do); (4) records the results in batches and claims again, until
/// nothing is due. A notifier that dies leaves its leases to run out; the next pass sends
/// those deliveries again (delivery is at least once). Due times and leases are the
/// database's time (`Store.databaseNow`), read once per transaction, so that notifiers on
/// hosts whose clocks disagree still agree on them; the pass's own timing (its time limit,
/// its fan-out interval) keeps the local clock.
func run() -> Int32 {
    let log = Log(component: "wallet-notifier")
    let settings: Settings
    let masterKey: [UInt8]?
    do {
        let environment = Settings.processEnvironment()
        settings = try Settings(environment: environment)
        try settings.checkDatabaseDirectory()
        masterKey = try WebhookMasterKey.read(environment: environment, settings: settings)
    } catch {
        log.write(.error, "invalid_configuration", ["message": .string("\(error)")])
        return 2
    }
    signal(SIGPIPE, SIG_IGN)
    do {
        let store = try Store.open(location: settings.databasePath, synchronous: settings.synchronous)
        guard let masterKey else {
            // No endpoint can have been created without a key; nothing to sign with.
            log.write(.warning, "webhooks_off", ["message": .string("no webhook master key is configured; nothing sent")])
            return 0
        }
        let pass = NotifierPass(store: store, settings: settings, masterKey: masterKey, log: log, owner: ownerName())
        try pass.run()
        return 0
    } catch {
        log.write(.error, "pass_failed", ["message": .string("\(error)")])
        return 1
    }
}

final class NotifierPass {
    /// Deliveries of one endpoint claimed at once and sent one after another.
    static let window = 32
    /// How much of its lease a delivery must have left beyond the call's time limit to be sent.
    static let sendMarginMicroseconds: Int64 = 1_000_000
    /// A lease outlives its window's calls by this much, for a pass that dies mid-window.
    static let leaseGraceMicroseconds: Int64 = 30_000_000
    /// The longest retry delay: an endpoint that was down for a day is tried hourly.
    static let retryDelayMaxMicroseconds: Int64 = 3_600_000_000

    private let store: Store
    private let settings: Settings
    private let masterKey: [UInt8]
    private let log: Log
    private let owner: String
    private var secrets: [Int64: String] = [:]
    /// After this, the pass claims nothing and starts no send: it records what is in flight
    /// and ends, leaving the rest to the next pass (the timer runs one every few seconds).
    private var passEnds = Timestamp(microseconds: Int64.max)
    /// When events were last turned into deliveries: again every
    /// `Limits.notifierFanOutIntervalSeconds` while the pass goes on.
    private var fannedOutAt = Timestamp(microseconds: 0)
    private var generator = SystemRandomNumberGenerator()

    init(store: Store, settings: Settings, masterKey: [UInt8], log: Log, owner: String) {
        self.store = store
        self.settings = settings
        self.masterKey = masterKey
        self.log = log
        self.owner = owner
    }

    private struct Window {
        var deliveries: [ClaimedDelivery]
        /// The window's lease (one for all its deliveries) as a deadline on this machine's
        /// monotonic clock: no delivery starts that could outlive it.
        var leaseDeadline: MonotonicInstant
        var next = 0
    }

    func run() throws {
        let started = Timestamp.now()
        passEnds = started.adding(microseconds: settings.notifyPassSeconds * 1_000_000)
        guard try store.hasWebhookWork() else {
            log.write(
                .info, "pass",
                ["fanned_out": .integer(0), "delivered": .integer(0), "not_delivered": .integer(0), "duration_ms": .number(0)])
            return
        }
        // Events written since the last pass become deliveries, a bounded transaction at a time.
        var fannedOut = try fanOut()
        let web = try CurlWebhooks(
            timeoutMilliseconds: settings.webhookTimeoutMilliseconds, concurrency: settings.webhookConcurrency,
            allowPrivate: settings.webhookAllowsHTTP)
        let concurrency = Int(settings.webhookConcurrency)
        var windows: [Int64: Window] = [:]
        // Endpoints that had a delivery not delivered in this pass: not claimed again before
        // the next pass, whatever their retry delay.
        var failedEndpoints: Set<Int64> = []
        var finished: [(ClaimedDelivery, DeliveryResult)] = []
        var exhausted = false
        // A window ended since the last step: its endpoint may have more due, and its slot is free.
        var windowEnded = true
        var delivered = 0
        var notDelivered = 0
        while true {
            let now = Timestamp.now()
            // A long pass (many endpoints with backlogs, slow receivers) still picks up events
            // written meanwhile, and stops claiming once its time is up.
            if now.microseconds - fannedOutAt.microseconds >= Limits.notifierFanOutIntervalSeconds * 1_000_000, now < passEnds {
                fannedOut += try fanOut()
            }
            let free = now < passEnds ? concurrency - windows.count : 0
            // One transaction records what finished and claims for the free slots: when a
            // window has ended (not after every delivery: a window's deliveries are recorded
            // together), or when many answers wait in memory.
            let recordDue = !finished.isEmpty && (windows.isEmpty || finished.count >= 256)
            if recordDue || (free > 0 && windowEnded && !exhausted) || (free > 0 && windowEnded && !finished.isEmpty) {
                let (claimed, leaseDeadline) = try step(record: finished, claim: free, excluding: failedEndpoints.union(windows.keys))
                finished.removeAll()
                windowEnded = false
                if free > 0 { exhausted = claimed.isEmpty }
                for window in claimed {
                    guard let first = window.first else { continue }
                    windows[first.endpointID] = Window(deliveries: window, leaseDeadline: leaseDeadline)
                    if let unsent = send(&windows[first.endpointID]!, web) {
                        finished += unsent
                        windows[first.endpointID] = nil
                        windowEnded = true
                    }
                }
                continue
            }
            if windows.isEmpty { break }
            for (delivery, result) in web.poll(milliseconds: 200) {
                guard var window = windows[delivery.endpointID] else { continue }
                finished.append((delivery, result))
                if case .delivered = result {
                    delivered += 1
                    if let unsent = send(&window, web) {
                        finished += unsent
                        windows[delivery.endpointID] = nil
                        windowEnded = true
                    } else {
                        windows[delivery.endpointID] = window
                    }
                } else {
                    notDelivered += 1
                    failedEndpoints.insert(delivery.endpointID)
                    log.write(
                        .warning, "delivery_failed",
                        [
                            "delivery": .integer(delivery.id), "endpoint": .integer(delivery.endpointID), "event": .integer(delivery.eventID),
                            "attempt": .integer(delivery.attempts + 1), "detail": .string(describe(result)),
                        ])
                    finished += window.deliveries[window.next...].map { ($0, DeliveryResult.notTried) }
                    windows[delivery.endpointID] = nil
                    windowEnded = true
                }
            }
        }
        log.write(
            .info, "pass",
            [
                "fanned_out": .integer(Int64(fannedOut)), "delivered": .integer(Int64(delivered)),
                "not_delivered": .integer(Int64(notDelivered)),
                "duration_ms": .number(Double(Timestamp.now().microseconds - started.microseconds) / 1000),
            ])
    }

    /// Turns the events written since the last time into deliveries, a bounded transaction
    /// at a time. Returns how many deliveries it made.
    private func fanOut() throws -> Int {
        var created = 0
        while true {
            let settled = try store.settledEventID()
            // The deliveries are due from the database's now, as the claims see it.
            let step = try store.write { try store.fanOutEvents(now: try store.databaseNow(), settled: settled) }
            created += step.created
            if !step.behind { break }
        }
        fannedOutAt = Timestamp.now()
        return created
    }

    /// Starts the window's next delivery. Returns nil when one was started; otherwise the
    /// window is over (or the pass's time is up) and this returns its untried rest (empty
    /// when all were sent).
    private func send(_ window: inout Window, _ web: CurlWebhooks) -> [(ClaimedDelivery, DeliveryResult)]? {
        guard window.next < window.deliveries.count else { return [] }
        guard Timestamp.now() < passEnds else {
            return window.deliveries[window.next...].map { ($0, DeliveryResult.notTried) }
        }
        let delivery = window.deliveries[window.next]
        // The lease is the database's time; its deadline here is on the monotonic clock, so
        // this host's wall clock, ahead or behind, neither stretches nor cuts it.
        let callMicroseconds = settings.webhookTimeoutMilliseconds * 1_000 + NotifierPass.sendMarginMicroseconds
        guard MonotonicInstant.now().leavesRoom(forCallOf: callMicroseconds, before: window.leaseDeadline) else {
            return window.deliveries[window.next...].map { ($0, DeliveryResult.notTried) }
        }
        window.next += 1
        web.start(delivery, secret: secret(for: delivery))
        return nil
    }

    private func secret(for delivery: ClaimedDelivery) -> String {
        if let known = secrets[delivery.endpointID] { return known }
        let secret = WebhookSigning.secret(masterKey: masterKey, endpointID: delivery.endpointID, nonce: delivery.endpointNonce)
        secrets[delivery.endpointID] = secret
        return secret
    }

    /// One transaction: records finished deliveries, then claims windows for up to `claim`
    /// endpoints. Returns the windows and their lease's deadline on the monotonic clock.
    private func step(
        record finished: [(ClaimedDelivery, DeliveryResult)], claim: Int, excluding: Set<Int64>
    ) throws -> ([[ClaimedDelivery]], MonotonicInstant) {
        var jitter: [Double] = (0..<finished.count).map { _ in Double.random(in: 0.5..<1.5, using: &generator) }
        let base = settings.webhookRetryBaseSeconds * 1_000_000
        let lease =
            Int64(NotifierPass.window) * (settings.webhookTimeoutMilliseconds * 1_000 + NotifierPass.sendMarginMicroseconds)
            + NotifierPass.leaseGraceMicroseconds
        // Read before the transaction begins, so that a slow transaction only shortens the
        // local deadline (`MonotonicInstant.deadline`).
        let claimStarted = MonotonicInstant.now()
        let (claimed, now): ([[ClaimedDelivery]], Timestamp) = try store.write {
            // One read of the database's clock per transaction, inside it and after the
            // monotonic reading above.
            let now = try store.databaseNow()
            if !finished.isEmpty {
                try store.recordDeliveries(finished, owner: owner, now: now, giveUpMicroseconds: settings.webhookGiveUpSeconds * 1_000_000) {
                    attempts in
                    // base × 2^(attempts-1), at most an hour, times a jitter in [0.5, 1.5).
                    let exponent = min(max(attempts - 1, 0), 30)
                    let delay = min(base.multipliedReportingOverflow(by: 1 << exponent).partialValue, NotifierPass.retryDelayMaxMicroseconds)
                    return Int64(Double(max(delay, 0)) * (jitter.popLast() ?? 1))
                }
            }
            guard claim > 0 else { return ([], now) }
            let claimed = try store.claimDeliveries(
                owner: owner, now: now, leaseUntil: now.adding(microseconds: lease), endpoints: claim, window: NotifierPass.window,
                excluding: excluding)
            return (claimed, now)
        }
        return (claimed, MonotonicInstant.deadline(leaseUntil: now.adding(microseconds: lease), databaseNow: now, claimStarted: claimStarted))
    }

    private func describe(_ result: DeliveryResult) -> String {
        switch result {
        case .delivered(let status): "HTTP \(status)"
        case .notDelivered(_, let error): error
        case .notTried: "not tried"
        }
    }
}

/// Names this pass in leases: host, process and a random part.
func ownerName() -> String {
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count - 1)
    let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return "notifier:\(hostName):\(getpid()):\(UInt32.random(in: 0...UInt32.max))"
}

exit(run())
