import WalletDomain
import WalletPlatform
import CCurl
#if canImport(Glibc)
import Glibc
#endif

/// Webhook deliveries over HTTP through libcurl's multi interface, on the pass's own thread.
///
/// Every transfer: `POST` of the event's JSON, no redirect followed, only https (and http
/// when development allows it),
/// the answer's body read up to 64 KiB (a longer one aborts the transfer: not delivered),
/// and, unless development allows it, no request sent to a loopback, link-local or private
/// address, whatever the URL's name resolved to (checked on the connected address, before a
/// byte of the request leaves).
final class CurlWebhooks {
    private final class Transfer {
        let delivery: ClaimedDelivery
        let handle: UnsafeMutableRawPointer
        let headers: UnsafeMutablePointer<curl_slist>?
        var received = 0
        var refusedAddress: String?
        let allowPrivate: Bool

        init(delivery: ClaimedDelivery, handle: UnsafeMutableRawPointer, headers: UnsafeMutablePointer<curl_slist>?, allowPrivate: Bool) {
            self.delivery = delivery
            self.handle = handle
            self.headers = headers
            self.allowPrivate = allowPrivate
        }
    }

    static let responseBytesMax = 64 * 1024
    static let userAgent = "wallet-notifier/1"

    private let multi: UnsafeMutableRawPointer
    private let timeoutMilliseconds: Int
    private let allowPrivate: Bool
    private var transfers: [UnsafeMutableRawPointer: Transfer] = [:]

    var inFlightCount: Int { transfers.count }

    init(timeoutMilliseconds: Int64, concurrency: Int64, allowPrivate: Bool) throws {
        guard curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK, let multi = curl_multi_init() else {
            throw NotifierError(description: "libcurl failed to initialise")
        }
        self.multi = multi
        self.timeoutMilliseconds = Int(timeoutMilliseconds)
        self.allowPrivate = allowPrivate
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, Int(concurrency))
    }

    deinit {
        for transfer in transfers.values { release(transfer) }
        curl_multi_cleanup(multi)
    }

    /// Starts one delivery, signed with `secret` at the current time.
    func start(_ delivery: ClaimedDelivery, secret: String) {
        guard let handle = curl_easy_init() else { preconditionFailure("curl_easy_init failed: out of memory") }
        let body = Array(delivery.body.utf8)
        let signature = WebhookSigning.signature(secret: secret, timestamp: Timestamp.now().microseconds / 1_000_000, body: body)
        var headers: UnsafeMutablePointer<curl_slist>?
        headers = curl_slist_append(headers, "Content-Type: application/json")
        headers = curl_slist_append(headers, "Wallet-Event-Id: \(delivery.eventID)")
        headers = curl_slist_append(headers, "Wallet-Signature: \(signature)")
        headers = curl_slist_append(headers, "Expect:")
        let transfer = Transfer(delivery: delivery, handle: handle, headers: headers, allowPrivate: allowPrivate)
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        var ok = true
        ok = ok && ccurl_setopt_string(handle, CURLOPT_URL, delivery.url) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_POST, 1) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count) == CURLE_OK
        ok = ok && ccurl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, delivery.body) == CURLE_OK
        ok = ok && ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers) == CURLE_OK
        ok = ok && ccurl_setopt_string(handle, CURLOPT_USERAGENT, CurlWebhooks.userAgent) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMilliseconds) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1) == CURLE_OK
        ok = ok && ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0) == CURLE_OK
        // Straight to the receiver, never through a proxy from the environment: the peer
        // address checked before sending must be the receiver's own.
        ok = ok && ccurl_setopt_string(handle, CURLOPT_PROXY, "") == CURLE_OK
        // https only, unless development allows plain http (WALLET_WEBHOOK_ALLOW_HTTP=1).
        ok = ok && ccurl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, allowPrivate ? "http,https" : "https") == CURLE_OK
        ok = ok && ccurl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK
        ok = ok && ccurl_setopt_write_function(handle, receiveWebhookAnswer) == CURLE_OK
        ok = ok && ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context) == CURLE_OK
        ok = ok && ccurl_setopt_prereq_function(handle, checkWebhookAddress) == CURLE_OK
        ok = ok && ccurl_setopt_pointer(handle, CURLOPT_PREREQDATA, context) == CURLE_OK
        precondition(ok, "libcurl refused an option it documents")
        transfers[handle] = transfer
        let added = curl_multi_add_handle(multi, handle)
        precondition(added == CURLM_OK, "curl_multi_add_handle failed: \(added.rawValue)")
    }

    /// Moves every transfer, waits up to `milliseconds` for one to need attention, and
    /// returns those that finished.
    func poll(milliseconds: Int) -> [(ClaimedDelivery, DeliveryResult)] {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        var finished = collect()
        if finished.isEmpty && !transfers.isEmpty {
            curl_multi_poll(multi, nil, 0, Int32(milliseconds), nil)
            curl_multi_perform(multi, &running)
            finished = collect()
        }
        return finished
    }

    private func collect() -> [(ClaimedDelivery, DeliveryResult)] {
        var finished: [(ClaimedDelivery, DeliveryResult)] = []
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                let transfer = transfers.removeValue(forKey: handle)
            else { continue }
            finished.append((transfer.delivery, result(of: transfer, code: message.pointee.data.result)))
            curl_multi_remove_handle(multi, handle)
            release(transfer)
        }
        return finished
    }

    private func result(of transfer: Transfer, code: CURLcode) -> DeliveryResult {
        var status = 0
        _ = ccurl_getinfo_long(transfer.handle, CURLINFO_RESPONSE_CODE, &status)
        let answered: Int64? = status > 0 ? Int64(status) : nil
        if let address = transfer.refusedAddress {
            return .notDelivered(status: nil, error: "refused: the URL's host is a private or loopback address (\(address))")
        }
        guard code == CURLE_OK else {
            if code == CURLE_WRITE_ERROR {
                return .notDelivered(status: answered, error: "the answer's body is longer than \(CurlWebhooks.responseBytesMax) bytes")
            }
            return .notDelivered(status: answered, error: String(cString: curl_easy_strerror(code)))
        }
        guard (200...299).contains(status) else { return .notDelivered(status: answered, error: "HTTP \(status)") }
        return .delivered(status: Int64(status))
    }

    private func release(_ transfer: Transfer) {
        curl_easy_cleanup(transfer.handle)
        curl_slist_free_all(transfer.headers)
    }

    fileprivate static func receive(count: Int, context: UnsafeMutableRawPointer) -> Int {
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        transfer.received += count
        // Fewer bytes than offered aborts the transfer (CURLE_WRITE_ERROR).
        return transfer.received > responseBytesMax ? 0 : count
    }

    fileprivate static func mayConnect(to address: String, context: UnsafeMutableRawPointer) -> Bool {
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        guard !transfer.allowPrivate, WebhookURL.isPrivate(address.lowercased()) else { return true }
        transfer.refusedAddress = address
        return false
    }
}

struct NotifierError: Error, CustomStringConvertible {
    let description: String
}

private func receiveWebhookAnswer(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let context else { return 0 }
    return CurlWebhooks.receive(count: size * count, context: context)
}

/// Before the request leaves on a connection: refuse a private or loopback peer.
private func checkWebhookAddress(
    _ context: UnsafeMutableRawPointer?, _ primaryIP: UnsafeMutablePointer<CChar>?,
    _ localIP: UnsafeMutablePointer<CChar>?, _ primaryPort: Int32, _ localPort: Int32
) -> Int32 {
    guard let context, let primaryIP else { return CURL_PREREQFUNC_OK }
    return CurlWebhooks.mayConnect(to: String(cString: primaryIP), context: context) ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT
}
