import CCurl
import WalletCore

/// The bank over HTTP through libcurl's multi interface: many attempts in flight on one
/// thread, each with its own time limit.
final class CurlBank: BankClient {
    /// One attempt's state, alive from `start` until `poll` returns it.
    private final class Transfer {
        let payout: Payout
        let handle: UnsafeMutableRawPointer
        let headers: UnsafeMutablePointer<curl_slist>?
        var body: [UInt8] = []

        init(payout: Payout, handle: UnsafeMutableRawPointer, headers: UnsafeMutablePointer<curl_slist>?) {
            self.payout = payout
            self.handle = handle
            self.headers = headers
        }
    }

    /// A bank answer larger than this is not an answer API.md knows; it is cut and then
    /// classified as unknown.
    static let responseBytesMax = 64 * 1024

    private let multi: UnsafeMutableRawPointer
    private let url: String
    private let timeoutMilliseconds: Int
    private var transfers: [UnsafeMutableRawPointer: Transfer] = [:]
    /// Easy handles between transfers. Reusing them keeps libcurl's buffers (a fresh
    /// handle allocates and faults in over 100 KB) and the options that never change.
    private var idleHandles: [UnsafeMutableRawPointer] = []

    init(url: String, timeoutMilliseconds: Int64, concurrency: Int64) throws {
        guard curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK, let multi = curl_multi_init() else {
            throw CurlError(description: "libcurl failed to initialise")
        }
        self.multi = multi
        self.url = url
        self.timeoutMilliseconds = Int(timeoutMilliseconds)
        // One connection per call in flight, reused across the pass.
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, Int(concurrency))
    }

    deinit {
        for transfer in transfers.values { release(transfer) }
        for handle in idleHandles { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
    }

    var inFlightCount: Int { transfers.count }

    func start(_ payout: Payout) {
        let handle = idleHandles.popLast() ?? newHandle()
        var headers: UnsafeMutablePointer<curl_slist>?
        headers = curl_slist_append(headers, "Content-Type: application/json")
        headers = curl_slist_append(headers, "Idempotency-Key: \(payout.idempotencyKey)")
        // Without this header libcurl waits for "100 Continue" on larger bodies.
        headers = curl_slist_append(headers, "Expect:")
        let transfer = Transfer(payout: payout, handle: handle, headers: headers)
        let body = payout.requestBody
        var ok = true
        ok = ok && ccurl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.utf8.count) == CURLE_OK
        // COPYPOSTFIELDS copies the body; plain POSTFIELDS would keep a pointer into a Swift string.
        ok = ok && ccurl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, body) == CURLE_OK
        ok = ok && ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers) == CURLE_OK
        ok = ok && ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(transfer).toOpaque()) == CURLE_OK
        precondition(ok, "libcurl refused an option it documents")
        transfers[handle] = transfer
        let added = curl_multi_add_handle(multi, handle)
        precondition(added == CURLM_OK, "curl_multi_add_handle failed: \(added.rawValue)")
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
        precondition(ok, "libcurl refused an option it documents")
        return handle
    }

    func poll(timeoutMilliseconds: Int) -> [(Payout, BankTransport)] {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        var finished = collect()
        if finished.isEmpty && !transfers.isEmpty {
            curl_multi_poll(multi, nil, 0, Int32(timeoutMilliseconds), nil)
            curl_multi_perform(multi, &running)
            finished = collect()
        }
        return finished
    }

    private func collect() -> [(Payout, BankTransport)] {
        var finished: [(Payout, BankTransport)] = []
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                  let transfer = transfers.removeValue(forKey: handle) else { continue }
            finished.append((transfer.payout, transport(of: transfer, result: message.pointee.data.result)))
            curl_multi_remove_handle(multi, handle)
            curl_slist_free_all(transfer.headers)
            // The handle goes back to the pool; its write target is set anew by the next start.
            _ = ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, nil)
            idleHandles.append(handle)
        }
        return finished
    }

    /// What happened on the wire. If libcurl failed before the request started going out
    /// (no pre-transfer time), nothing reached the bank.
    private func transport(of transfer: Transfer, result: CURLcode) -> BankTransport {
        if result == CURLE_OK {
            var status = 0
            _ = ccurl_getinfo_long(transfer.handle, CURLINFO_RESPONSE_CODE, &status)
            return .answered(status: status, body: transfer.body)
        }
        let detail = String(cString: curl_easy_strerror(result))
        var pretransfer: curl_off_t = 0
        let pointer = withUnsafeMutablePointer(to: &pretransfer) { UnsafeMutableRawPointer($0) }
        _ = ccurl_getinfo_off_t(transfer.handle, CURLINFO_PRETRANSFER_TIME_T, pointer)
        let nothingSent = pretransfer == 0 || result == CURLE_COULDNT_CONNECT || result == CURLE_COULDNT_RESOLVE_HOST
        return nothingSent ? .notSent(detail) : .noAnswer(detail)
    }

    private func release(_ transfer: Transfer) {
        curl_easy_cleanup(transfer.handle)
        curl_slist_free_all(transfer.headers)
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
    return CurlBank.append(data, count: size * count, to: context)
}
