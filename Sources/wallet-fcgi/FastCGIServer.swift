import WalletDomain
import WalletJSON
import WalletPlatform
import WalletHTTP
import WalletStore
import WalletServices
import CFastCGI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where the listening socket comes from.
enum ListenSource {
    /// A path: this process creates, owns and finally removes the socket file it made.
    case path(String, file: FileIdentity)
    /// A TCP address (`--listen`): this process creates and owns the socket; there is no
    /// file to remove.
    case tcp(ListenAddress)
    /// A socket handed in by systemd or spawn-fcgi on fd 0 (`StandardInput=socket`, the
    /// FastCGI convention) or fd 3 (`LISTEN_FDS`). Others share it: never shut it down.
    case inherited(Int32)

    /// Created by this process, and so shut down by it at the stop (never a shared one).
    var isOwned: Bool {
        if case .inherited = self { return false }
        return true
    }
}

/// A file's identity, to tell our socket file from a successor's at the same path.
struct FileIdentity {
    let device: UInt
    let inode: UInt
}

/// State shared by the accept threads, all of it thread-safe.
///
/// nginx keeps its FastCGI connections open between requests (`fastcgi_keep_conn on` with an
/// upstream `keepalive` pool), and libfcgi serves one connection per thread: a thread whose
/// connection sits idle in nginx's pool is taken until nginx uses or closes it. A fixed
/// number of threads could then all be waiting on idle connections while a new one queues
/// unserved (and a stop would wait on a thread that never returns). So the pool grows instead: whenever a thread leaves
/// `accept()` with a connection and no other thread is left in `accept()`, one more thread
/// starts, up to `maxThreads`. Threads are never retired; each costs a stack and a read
/// connection, and a pool that has grown is the size the next burst needs.
final class ServerContext: Sendable {
    let api: WalletAPI
    let settings: Settings
    let log: Log
    let listenFD: Int32
    /// On a TCP socket, the peers served; nil on a unix socket (its mode guards it).
    let peers: PeerAllowList?
    let maxThreads: Int
    /// Raised once the server is stopping, and never cleared: threads waiting on an idle
    /// kept connection poll it, close their connection and leave.
    let stopSignal: SignalPipe
    let stopping = Atomic<Bool>(false)
    /// Requests between accept and finish; the drain waits for it to reach zero.
    let active = Atomic<Int>(0)
    /// Threads started and not yet ended.
    let running = Atomic<Int>(0)
    /// Threads blocked in (or about to enter) `accept()` for a new connection.
    let accepting = Atomic<Int>(0)
    /// Slots taken in the pool, counted before a thread starts so that two threads growing
    /// the pool at once cannot pass `maxThreads`.
    private let slots = Atomic<Int>(0)

    init(api: WalletAPI, settings: Settings, log: Log, listenFD: Int32, peers: PeerAllowList?, maxThreads: Int) throws {
        self.stopSignal = try SignalPipe()
        self.api = api
        self.settings = settings
        self.log = log
        self.listenFD = listenFD
        self.peers = peers
        self.maxThreads = maxThreads
    }

    /// Starts one accept thread with `reader` as its database connection, or opens one.
    /// False when the pool is full or no connection could be opened.
    @discardableResult
    func addThread(reader: Store? = nil) -> Bool {
        guard !stopping.load(ordering: .acquiring) else { return false }
        var taken = slots.load(ordering: .relaxed)
        while true {
            guard taken < maxThreads else { return false }
            let (exchanged, original) = slots.compareExchange(expected: taken, desired: taken + 1, ordering: .acquiringAndReleasing)
            if exchanged { break }
            taken = original
        }
        let store: Store
        do {
            store = try reader ?? Store.open(location: settings.databasePath, queryOnly: true)
        } catch {
            slots.subtract(1, ordering: .acquiringAndReleasing)
            log.write(.warning, "accept_thread_failed", ["message": .string("\(error)")])
            return false
        }
        running.add(1, ordering: .acquiringAndReleasing)
        let worker = Worker(context: self, reader: store)
        do {
            try OSThread.start(name: "fcgi-accept", detached: true) { worker.run() }
        } catch {
            running.subtract(1, ordering: .acquiringAndReleasing)
            slots.subtract(1, ordering: .acquiringAndReleasing)
            log.write(.warning, "accept_thread_failed", ["message": .string("\(error)")])
            return false
        }
        if reader == nil {
            let threads = Int64(taken + 1)
            log.write(
                threads == maxThreads ? .warning : .info, "accept_threads",
                ["threads": .integer(threads), "max_threads": .integer(Int64(maxThreads))])
        }
        return true
    }

}

/// One accept thread: its own FastCGI request and its own query-only SQLite connection.
///
/// `@unchecked Sendable`: it is handed to its thread once, at start, and from then on only
/// that thread touches `request` and `reader`; `context` is shared through atomics.
final class Worker: @unchecked Sendable {
    let context: ServerContext
    let reader: Store
    private var request = FCGX_Request()

    init(context: ServerContext, reader: Store) {
        self.context = context
        self.reader = reader
    }

    /// (accept, or wait on the kept connection) → handle → finish, until the server stops.
    func run() {
        FCGX_InitRequest(&request, context.listenFD, 0)
        serving: while true {
            let fresh = request.ipcFd < 0
            if fresh {
                guard !context.stopping.load(ordering: .acquiring) else { break serving }
                context.accepting.add(1, ordering: .acquiringAndReleasing)
            } else {
                switch awaitKeptConnection() {
                case .request: break
                case .closed:
                    FCGX_Free(&request, 1)
                    continue serving
                case .stopping: break serving
                }
            }
            let status = FCGX_Accept_r(&request)
            let othersAccepting =
                fresh
                ? context.accepting.subtract(1, ordering: .acquiringAndReleasing).newValue
                : context.accepting.load(ordering: .acquiring)
            guard status == 0 else {
                if context.stopping.load(ordering: .acquiring) { break serving }
                // A failed accept (a client that went away) is not fatal; a broken socket
                // would spin, so pause briefly before trying again.
                usleep(10_000)
                continue serving
            }
            if fresh, !admitPeer() {
                // Unanswered and unread: the parameters libfcgi has read are dropped.
                FCGX_Free(&request, 0)
                Glibc.close(request.ipcFd)
                request.ipcFd = -1
                continue serving
            }
            // This thread now holds a connection; keep one thread in accept().
            if othersAccepting == 0 { context.addThread() }
            context.active.add(1, ordering: .acquiringAndReleasing)
            let served = serveOne()
            discardUnreadInput()
            FCGX_Finish_r(&request)
            // The answer is on its way to nginx; the log lines do not hold it up.
            report(served)
            context.active.subtract(1, ordering: .acquiringAndReleasing)
        }
        // Closes a kept connection; nginx drops it from its pool.
        FCGX_Free(&request, 1)
        context.running.subtract(1, ordering: .acquiringAndReleasing)
    }

    /// Whether the new connection's peer may be served: always on a unix socket; on TCP,
    /// only an address of the allow list. libfcgi's own check (FCGI_WEB_SERVER_ADDRS, in its
    /// accept) looks at IPv4 peers only and lets every IPv6 peer through, so this one is
    /// made here, for both families, whoever created the socket. An IPv6 connection also
    /// gets TCP_NODELAY here, which libfcgi sets for IPv4 only: answers go out in small
    /// records that must not wait for an acknowledgement.
    private func admitPeer() -> Bool {
        guard let peers = context.peers else { return true }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(request.ipcFd, $0, &length) }
        }
        // A peer that is already gone has nothing to be answered.
        guard named == 0, let peer = IPAddress(peer: storage) else { return false }
        guard peers.allows(peer) else {
            context.log.write(.warning, "peer_refused", ["peer": .string(peer.description), "allow": .string(peers.description)])
            return false
        }
        if peer.family == .v6 {
            var on: Int32 = 1
            _ = setsockopt(request.ipcFd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        return true
    }

    private enum KeptConnection {
        /// Bytes arrived: the next request (libfcgi reads and checks it).
        case request
        /// nginx closed the connection.
        case closed
        /// The server is stopping and nothing arrived.
        case stopping
    }

    /// Blocks until nginx sends the next request on the kept connection, closes it, or the
    /// server stops. A request that has already arrived is served even when stopping.
    private func awaitKeptConnection() -> KeptConnection {
        // A tuple on the stack, not an array: this runs for every request.
        var fds = (
            pollfd(fd: request.ipcFd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: context.stopSignal.readFD, events: Int16(POLLIN), revents: 0)
        )
        while withUnsafeMutableBytes(of: &fds, { poll($0.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, -1) }) < 0 {
            guard errno == EINTR else { return .closed }
        }
        let connection = Int32(fds.0.revents)
        if connection & (POLLHUP | POLLERR | POLLNVAL) != 0 { return .closed }
        if connection & POLLIN != 0 { return .request }
        return .stopping
    }

    /// What `report` needs of a request once its answer has gone out.
    private struct Served {
        let requestID: String
        let method: String
        let handled: WalletAPI.Handled
        let seconds: Double
    }

    private func serveOne() -> Served {
        let started = Timestamp.now()
        let received = FastCGIRequest(parameter: parameter)
        let requestID = received.requestID
        let method = received.method
        let handled: WalletAPI.Handled
        switch readRequest(received) {
        case .success(let request):
            handled = context.api.handle(request, reader: reader)
        case .failure(let error):
            handled = context.api.refuse(received.withoutBody, with: error, reader: reader)
        }
        writeResponse(handled.response)
        let seconds = Double(Timestamp.now().microseconds - started.microseconds) / 1_000_000
        // Counted before the answer goes out: a client that reads /metrics next sees it.
        context.api.metrics.record(method: method, route: handled.route, status: handled.response.status, seconds: seconds)
        return Served(requestID: requestID, method: method, handled: handled, seconds: seconds)
    }

    /// The request's audit and request log lines, in one `write`. Balance
    /// changes were committed before the answer was written, so these lines follow the
    /// fact; the ledger in the database is the record, the log its readable trail.
    private func report(_ served: Served) {
        let handled = served.handled
        var lines = Log.Lines()
        for entry in handled.ledgerEntries { lines.append(context.log.auditLine(entry, requestID: served.requestID)) }
        lines.append(
            context.log.line(
                handled.response.status >= 500 ? .error : .info, "request",
                [
                    "request_id": .string(served.requestID),
                    "method": .string(served.method),
                    "route": .string(handled.route),
                    "status": .integer(Int64(handled.response.status)),
                    "api_key": .integer(handled.apiKey?.rawValue),
                    "auth_failure": .string(handled.authenticationFailure?.rawValue),
                    "duration_ms": .number(served.seconds * 1000),
                    "error": .string(handled.failure),
                ]))
        lines.flush()
    }

    /// Reads the rest of the request's input up to its end-of-stream record, so that a kept
    /// connection starts clean for the next request (a body refused before it was read, or
    /// the empty record that ends every input). nginx has capped the body at 16 KiB.
    private func discardUnreadInput() {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 1024) { scratch in
            while FCGX_GetStr(scratch.baseAddress, Int32(scratch.count), request.in) > 0 {}
        }
    }

    /// Reads the body that the parameters announce, refusing one over the limit before
    /// reading it; `FastCGIRequest` decides everything else.
    private func readRequest(_ received: FastCGIRequest) -> Result<Request, APIError> {
        let length: Int
        switch received.bodyLength() {
        case .success(let value): length = value
        case .failure(let error): return .failure(error)
        }
        var body = [UInt8](repeating: 0, count: length)
        var count = 0
        while count < length {
            let read = body.withUnsafeMutableBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: length) {
                    FCGX_GetStr($0 + count, Int32(length - count), request.in)
                }
            }
            guard read > 0 else { break }
            count += Int(read)
        }
        // A stream that ended early gives fewer bytes, which `request(body:)` refuses.
        body.removeLast(length - count)
        return received.request(body: body)
    }

    private func parameter(_ name: String) -> String? {
        guard let value = FCGX_GetParam(name, request.envp) else { return nil }
        return String(cString: value)
    }

    private func writeResponse(_ response: Response) {
        let body = Array(response.body.utf8)
        var head = "Status: \(response.status) \(Response.reason(for: response.status))\r\n"
        // A 204 has no body and no Content-Length (RFC 9110 8.6).
        if response.status != 204 { head += "Content-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\n" }
        head += "Cache-Control: no-store\r\n"
        for header in response.headers { head += "\(header.name): \(header.value)\r\n" }
        head += "\r\n"
        put(Array(head.utf8))
        // An answer to HEAD: Content-Length above is the body's, the body stays here.
        if !response.omitsBody { put(body) }
    }

    private func put(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        _ = bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                FCGX_PutStr($0, Int32(buffer.count), request.out)
            }
        }
    }
}
