import WalletDomain
import WalletPlatform
import WalletStore
import WalletServices
import CCurl
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The bank over HTTP through libcurl's multi interface, driven by a thread of its own.
///
/// The pass hands attempts over (`start`) and collects answers (`poll`); in between it works
/// on the database, and meanwhile the network thread keeps every transfer moving: requests
/// go out and answers come in while a batch commits. An attempt still starts only after
/// the pass calls `start`, that is after its claim committed.
final class CurlBank: BankClient {
    private let network: NetworkLoop
    private let thread: OSThread
    /// Attempts started and not yet returned by `poll` (the pass thread's count).
    private(set) var inFlightCount = 0

    /// `sendMarginMicroseconds`: how much of its lease an attempt must have left beyond the
    /// call's time limit to be sent at all. `bearerToken`: sent as `Authorization: Bearer`
    /// with every call when set (`BankToken`).
    init(url: String, bearerToken: String?, timeoutMilliseconds: Int64, concurrency: Int64, sendMarginMicroseconds: Int64) throws {
        let network = NetworkLoop(
            transfers: try CurlTransfers(
                url: url, bearerToken: bearerToken, timeoutMilliseconds: timeoutMilliseconds, concurrency: concurrency,
                sendMarginMicroseconds: sendMarginMicroseconds),
            answersWaiting: try SignalPipe())
        self.network = network
        thread = try OSThread.start(name: "bank-network") { network.run() }
    }

    deinit {
        // Stop the network thread before what it uses goes.
        network.stop()
        thread.join()
    }

    func start(_ payout: Payout) {
        inFlightCount += 1
        network.enqueue(payout)
    }

    func poll(timeoutMilliseconds: Int) -> [(Payout, BankTransport)] {
        network.answersWaiting.clear()
        var finished = network.takeFinished()
        if finished.isEmpty && inFlightCount > 0 {
            var descriptor = pollfd(fd: network.answersWaiting.readFD, events: Int16(POLLIN), revents: 0)
            _ = Glibc.poll(&descriptor, 1, Int32(timeoutMilliseconds))
            network.answersWaiting.clear()
            finished = network.takeFinished()
        }
        inFlightCount -= finished.count
        return finished
    }
}

/// What the pass thread and the network thread share.
///
/// `@unchecked Sendable`: `mailbox` is a `Mutex` and `answersWaiting` a pipe, both safe
/// from any thread; `transfers` is used by the network thread alone while it runs (the
/// pass thread only calls its thread-safe `wake`).
private final class NetworkLoop: @unchecked Sendable {
    /// What the two threads exchange, under one lock.
    private struct Mailbox {
        var toStart: [Payout] = []
        var finished: [(Payout, BankTransport)] = []
        var stopping = false
    }

    private let transfers: CurlTransfers
    private let mailbox = Mutex(Mailbox())
    /// Raised when answers are waiting in the mailbox; the pass thread polls it.
    let answersWaiting: SignalPipe

    init(transfers: CurlTransfers, answersWaiting: SignalPipe) {
        self.transfers = transfers
        self.answersWaiting = answersWaiting
    }

    func enqueue(_ payout: Payout) {
        let wasIdle = mailbox.withLock { mailbox in
            mailbox.toStart.append(payout)
            return mailbox.toStart.count == 1
        }
        // One wake-up per batch: the network thread takes everything queued at once.
        if wasIdle { transfers.wake() }
    }

    func takeFinished() -> [(Payout, BankTransport)] {
        mailbox.withLock { mailbox in
            defer { mailbox.finished.removeAll(keepingCapacity: true) }
            return mailbox.finished
        }
    }

    func stop() {
        mailbox.withLock { $0.stopping = true }
        transfers.wake()
    }

    /// The network thread: start what was handed over, move every transfer, hand back what
    /// finished, then sleep until a socket or the pass needs attention.
    func run() {
        while true {
            let (toStart, stopping) = mailbox.withLock { mailbox in
                defer { mailbox.toStart.removeAll(keepingCapacity: true) }
                return (mailbox.toStart, mailbox.stopping)
            }
            if stopping { return }
            var finished: [(Payout, BankTransport)] = []
            for payout in toStart {
                if let unsent = transfers.start(payout) { finished.append((payout, unsent)) }
            }
            finished += transfers.perform()
            if !finished.isEmpty {
                let wasEmpty = mailbox.withLock { mailbox in
                    defer { mailbox.finished += finished }
                    return mailbox.finished.isEmpty
                }
                if wasEmpty { answersWaiting.raise() }
            }
            transfers.wait(milliseconds: 1000)
        }
    }
}

/// libcurl's multi handle and its transfers.
///
/// `@unchecked Sendable`: one thread at a time uses it (the network thread while it runs,
/// the pass thread before it starts and after it is joined), except `wake`, which libcurl
/// allows from any thread.
final class CurlTransfers: @unchecked Sendable {
    /// One attempt's state, alive from `start` until `perform` returns it.
    private final class Transfer {
        let payout: Payout
        let handle: UnsafeMutableRawPointer
        let headers: UnsafeMutablePointer<curl_slist>?
        var body: [UInt8] = []
        /// How many times a connection was ready to carry the request (libcurl's pre-request
        /// callback). From the first, the bank may have it; a second means libcurl resent it
        /// on a new connection after a reused one died.
        var requestStarts = 0

        init(payout: Payout, handle: UnsafeMutableRawPointer, headers: UnsafeMutablePointer<curl_slist>?) {
            self.payout = payout
            self.handle = handle
            self.headers = headers
        }
    }

    /// A bank answer larger than this is not an answer the bank contract knows; it is cut and then
    /// classified as unknown.
    static let responseBytesMax = 64 * 1024

    private let multi: UnsafeMutableRawPointer
    private let url: String
    /// The whole `Authorization:` header line, or nil. Never logged: libcurl's verbose
    /// mode stays off, and no error message is built from the request's headers.
    private let authorizationHeader: String?
    private let timeoutMilliseconds: Int
    private let sendMarginMicroseconds: Int64
    private var transfers: [UnsafeMutableRawPointer: Transfer] = [:]
    /// Easy handles between transfers. Reusing them keeps libcurl's buffers (a fresh
    /// handle allocates and faults in over 100 KB) and the options that never change.
    private var idleHandles: [UnsafeMutableRawPointer] = []

    init(url: String, bearerToken: String?, timeoutMilliseconds: Int64, concurrency: Int64, sendMarginMicroseconds: Int64) throws {
        guard curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK, let multi = curl_multi_init() else {
            throw CurlError(description: "libcurl failed to initialise")
        }
        self.multi = multi
        self.url = url
        authorizationHeader = bearerToken.map { "Authorization: Bearer \($0)" }
        self.timeoutMilliseconds = Int(timeoutMilliseconds)
        self.sendMarginMicroseconds = sendMarginMicroseconds
        // One connection per call in flight, reused across the pass.
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, Int(concurrency))
    }

    deinit {
        for transfer in transfers.values { release(transfer) }
        for handle in idleHandles { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
    }

    /// Wakes `wait`; the one call any thread may make at any time.
    func wake() {
        curl_multi_wakeup(multi)
    }

    /// Starts the attempt, or returns at once what became of it without starting it. An
    /// attempt is sent only while its lease outlasts the call's time limit by a margin: a
    /// processor that stalled after its claim (a paused process, a long busy wait) could
    /// otherwise send after its lease ran out, while another processor holds the withdrawal,
    /// and the bank could pay a call whose withdrawal the other has already settled. The
    /// margin covers libcurl's own resend and the clock between the check and the send. (The
    /// check and the send are still not one atomic step; closing the gap entirely would take
    /// the bank refusing stale attempts.) The lease is the database's time; the check is
    /// made against its deadline on this machine's monotonic clock (`Payout.leaseDeadline`),
    /// so a wall clock ahead of or behind the database's neither stretches nor cuts it.
    func start(_ payout: Payout) -> BankTransport? {
        let callMicroseconds = Int64(timeoutMilliseconds) * 1_000 + sendMarginMicroseconds
        guard MonotonicInstant.now().leavesRoom(forCallOf: callMicroseconds, before: payout.leaseDeadline) else {
            return .notSent("not sent: the lease would run out before the call's time limit")
        }
        let handle = idleHandles.popLast() ?? newHandle()
        var headers: UnsafeMutablePointer<curl_slist>?
        headers = curl_slist_append(headers, "Content-Type: application/json")
        headers = curl_slist_append(headers, "Idempotency-Key: \(payout.bankKey)")
        if let authorizationHeader { headers = curl_slist_append(headers, authorizationHeader) }
        // Without this header libcurl waits for "100 Continue" on larger bodies.
        headers = curl_slist_append(headers, "Expect:")
        let transfer = Transfer(payout: payout, handle: handle, headers: headers)
        let body = payout.requestBody
        var ok = true
        ok = ok && ccurl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.utf8.count) == CURLE_OK
        // COPYPOSTFIELDS copies the body; plain POSTFIELDS would keep a pointer into a Swift string.
        ok = ok && ccurl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, body) == CURLE_OK
        ok = ok && ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers) == CURLE_OK
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        ok = ok && ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context) == CURLE_OK
        ok = ok && ccurl_setopt_pointer(handle, CURLOPT_PREREQDATA, context) == CURLE_OK
        precondition(ok, "libcurl refused an option it documents")
        transfers[handle] = transfer
        let added = curl_multi_add_handle(multi, handle)
        precondition(added == CURLM_OK, "curl_multi_add_handle failed: \(added.rawValue)")
        return nil
    }

    /// A handle with the options every attempt shares.
    private func newHandle() -> UnsafeMutableRawPointer {
        guard let handle = curl_easy_init() else { preconditionFailure("curl_easy_init failed: out of memory") }
        var ok = true
        ok = ok && ccurl_setopt_string(handle, CURLOPT_URL, url) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_POST, 1) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMilliseconds) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0) == CURLE_OK
        ok = ok && ccurl_setopt_write_function(handle, receive) == CURLE_OK
        ok = ok && ccurl_setopt_prereq_function(handle, requestMayLeave) == CURLE_OK
        precondition(ok, "libcurl refused an option it documents")
        return handle
    }

    /// Moves every transfer as far as it can go now; returns those that finished.
    func perform() -> [(Payout, BankTransport)] {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        return collect()
    }

    /// Sleeps until a transfer's socket is ready, `wake` is called, or the time is up.
    func wait(milliseconds: Int) {
        curl_multi_poll(multi, nil, 0, Int32(milliseconds), nil)
    }

    private func collect() -> [(Payout, BankTransport)] {
        var finished: [(Payout, BankTransport)] = []
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                let transfer = transfers.removeValue(forKey: handle)
            else { continue }
            finished.append((transfer.payout, transport(of: transfer, result: message.pointee.data.result)))
            curl_multi_remove_handle(multi, handle)
            curl_slist_free_all(transfer.headers)
            // The handle goes back to the pool; its callbacks' target is set anew by the next start.
            _ = ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, nil)
            _ = ccurl_setopt_pointer(handle, CURLOPT_PREREQDATA, nil)
            idleHandles.append(handle)
        }
        return finished
    }

    /// What happened on the wire. A transfer without an answer is "not sent" only when no
    /// connection was ever ready to carry its request. libcurl resends a request on a new
    /// connection when a reused one closes without a byte of answer; if that connection is
    /// then refused, the error is "couldn't connect" although the first request may have
    /// reached the bank, which may have paid. The pre-request callback ran for that first
    /// connection, so the transfer counts as sent; the request size libcurl counted is a
    /// second witness.
    private func transport(of transfer: Transfer, result: CURLcode) -> BankTransport {
        if result == CURLE_OK {
            var status = 0
            _ = ccurl_getinfo_long(transfer.handle, CURLINFO_RESPONSE_CODE, &status)
            return transfer.requestStarts > 1
                ? .answeredAfterResend(status: status, body: transfer.body)
                : .answered(status: status, body: transfer.body)
        }
        let detail = String(cString: curl_easy_strerror(result))
        var requestBytes = 0
        _ = ccurl_getinfo_long(transfer.handle, CURLINFO_REQUEST_SIZE, &requestBytes)
        let nothingSent = transfer.requestStarts == 0 && requestBytes == 0
        return nothingSent ? .notSent(detail) : .noAnswer(detail)
    }

    private func release(_ transfer: Transfer) {
        curl_easy_cleanup(transfer.handle)
        curl_slist_free_all(transfer.headers)
    }

    fileprivate static func noteRequestMayLeave(_ context: UnsafeMutableRawPointer) {
        Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue().requestStarts += 1
    }

    fileprivate static func append(_ data: UnsafeMutablePointer<CChar>, count: Int, to context: UnsafeMutableRawPointer) -> Int {
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        let room = max(0, responseBytesMax - transfer.body.count)
        data.withMemoryRebound(to: UInt8.self, capacity: count) {
            transfer.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: min(count, room)))
        }
        return count
    }
}

struct CurlError: Error, CustomStringConvertible {
    let description: String
}

/// libcurl's write callback: a plain function, so it is a C function pointer.
private func receive(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let data, let context else { return 0 }
    return CurlTransfers.append(data, count: size * count, to: context)
}

/// libcurl's pre-request callback: a plain function, so it is a C function pointer.
private func requestMayLeave(
    _ context: UnsafeMutableRawPointer?, _ primaryIP: UnsafeMutablePointer<CChar>?,
    _ localIP: UnsafeMutablePointer<CChar>?, _ primaryPort: Int32, _ localPort: Int32
) -> Int32 {
    if let context { CurlTransfers.noteRequestMayLeave(context) }
    return CURL_PREREQFUNC_OK
}
