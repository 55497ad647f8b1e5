import CFastCGI
import Synchronization
import WalletCore
#if canImport(Glibc)
import Glibc
#endif

/// Where the listening socket comes from.
enum ListenSource {
    /// A path: this process creates, owns and finally removes the socket file it made.
    case path(String, file: FileIdentity)
    /// A socket handed in by systemd or spawn-fcgi on fd 0 (`StandardInput=socket`, the
    /// FastCGI convention) or fd 3 (`LISTEN_FDS`). Others share it: never shut it down.
    case inherited(Int32)
}

/// A file's identity, to tell our socket file from a successor's at the same path.
struct FileIdentity {
    let device: UInt
    let inode: UInt
}

/// State shared by the accept threads, all of it thread-safe.
final class ServerContext: Sendable {
    let api: WalletAPI
    let settings: Settings
    let log: Log
    let listenFD: Int32
    let stopping = Atomic<Bool>(false)
    /// Requests between accept and finish; the drain waits for it to reach zero.
    let active = Atomic<Int>(0)
    /// Accept threads still running.
    let running = Atomic<Int>(0)

    init(api: WalletAPI, settings: Settings, log: Log, listenFD: Int32) {
        self.api = api
        self.settings = settings
        self.log = log
        self.listenFD = listenFD
    }
}

/// One accept thread: its own FastCGI request and its own query-only SQLite connection.
final class Worker: @unchecked Sendable {
    let context: ServerContext
    let reader: Store
    private var request = FCGX_Request()

    init(context: ServerContext, reader: Store) {
        self.context = context
        self.reader = reader
    }

    func start() {
        let unmanaged = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, workerMain, unmanaged)
        precondition(status == 0, "cannot start an accept thread: \(status)")
        pthread_detach(thread)
    }

    /// accept → handle → finish, until the server stops.
    func run() {
        FCGX_InitRequest(&request, context.listenFD, 0)
        while !context.stopping.load(ordering: .acquiring) {
            guard FCGX_Accept_r(&request) == 0 else {
                if context.stopping.load(ordering: .acquiring) { break }
                // A failed accept (a client that went away) is not fatal; a broken socket
                // would spin, so pause briefly before trying again.
                usleep(10_000)
                continue
            }
            context.active.add(1, ordering: .acquiringAndReleasing)
            serveOne()
            FCGX_Finish_r(&request)
            context.active.subtract(1, ordering: .acquiringAndReleasing)
        }
        FCGX_Free(&request, 0)
        context.running.subtract(1, ordering: .acquiringAndReleasing)
    }

    private func serveOne() {
        let started = Timestamp.now()
        let requestID = parameter("REQUEST_ID") ?? "-"
        let method = parameter("REQUEST_METHOD") ?? "GET"
        let handled: WalletAPI.Handled
        switch readRequest(method: method, requestID: requestID) {
        case .success(let request):
            handled = context.api.handle(request, reader: reader)
        case .failure(let error):
            handled = WalletAPI.Handled(response: error.response, route: Route(path: parameter("DOCUMENT_URI") ?? "")?.template ?? Route.unmatchedTemplate, ledgerEntries: [])
        }
        writeResponse(handled.response)
        for entry in handled.ledgerEntries { context.log.audit(entry, requestID: requestID) }
        let seconds = Double(Timestamp.now().microseconds - started.microseconds) / 1_000_000
        context.api.metrics.record(method: method, route: handled.route, status: handled.response.status, seconds: seconds)
        context.log.write(handled.response.status >= 500 ? .error : .info, "request", [
            "request_id": .string(requestID),
            "method": .string(method),
            "route": .string(handled.route),
            "status": .integer(Int64(handled.response.status)),
            "duration_ms": .number(seconds * 1000),
            "error": .string(handled.failure),
        ])
    }

    /// Copies every parameter out of libfcgi (its pointers die at `FCGX_Finish_r`) and reads
    /// the body, refusing one over the limit before reading it.
    private func readRequest(method: String, requestID: String) -> Result<Request, APIError> {
        let lengthText = parameter("CONTENT_LENGTH") ?? ""
        let length = lengthText.isEmpty ? 0 : Int(lengthText) ?? -1
        guard length >= 0 else {
            return .failure(APIError(status: 400, code: "bad_request", message: "invalid Content-Length"))
        }
        guard length <= Limits.requestBodyBytesMax else { return .failure(.payloadTooLarge) }
        var body = [UInt8](repeating: 0, count: length)
        var received = 0
        while received < length {
            let count = body.withUnsafeMutableBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: length) {
                    FCGX_GetStr($0 + received, Int32(length - received), request.in)
                }
            }
            guard count > 0 else { break }
            received += Int(count)
        }
        guard received == length else {
            return .failure(APIError(status: 400, code: "bad_request", message: "the request body ended early"))
        }
        return .success(Request(
            method: method, path: parameter("DOCUMENT_URI") ?? "/", query: parameter("QUERY_STRING") ?? "",
            contentType: parameter("CONTENT_TYPE").flatMap { $0.isEmpty ? nil : $0 },
            idempotencyKey: parameter("HTTP_IDEMPOTENCY_KEY"), body: body, requestID: requestID))
    }

    private func parameter(_ name: String) -> String? {
        guard let value = FCGX_GetParam(name, request.envp) else { return nil }
        return String(cString: value)
    }

    private func writeResponse(_ response: Response) {
        let body = Array(response.body.utf8)
        var head = "Status: \(response.status) \(Response.reason(for: response.status))\r\n"
        head += "Content-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\n"
        head += "Cache-Control: no-store\r\n"
        for header in response.headers { head += "\(header.name): \(header.value)\r\n" }
        head += "\r\n"
        put(Array(head.utf8))
        put(body)
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

/// The accept threads' entry point: a plain function, not a closure, so that Swift does not
/// infer main-actor isolation for it (PLATFORM.md pitfall 7).
private func workerMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let argument else { return nil }
    Unmanaged<Worker>.fromOpaque(argument).takeRetainedValue().run()
    return nil
}
