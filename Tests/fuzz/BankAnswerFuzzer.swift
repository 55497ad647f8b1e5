// The `bank-answer` fuzz target: one input is one bank attempt as the processor saw it on
// the wire, classified by `PayoutOutcome(_:)`.
//
// Input format (text, so that the seed corpus can be written by hand):
//
//     200
//     {"data": "success", "status": 200}
//
// The first line is the HTTP status the bank answered with (any integer), and everything
// after it is the body, byte for byte. A first line `not-sent` or `no-answer` stands for
// the transport failures, whatever follows being their detail text. Any other first line
// is not an attempt and is skipped.
//
// Only `PayoutOutcome(_ transport:)` and `.name` are used, so the target holds whatever
// cases the classifier grows. The property is the one money rests on: "paid" only for
// HTTP 200 with the bank's success body, a JSON object whose "data" is "success" and
// whose "status" is 200.

import WalletDomain
import WalletJSON

/// The attempt an input stands for, or nil when its first line names none.
func transport(_ data: [UInt8]) -> BankTransport? {
    let end = data.firstIndex(of: UInt8(ascii: "\n")) ?? data.count
    let first = String(decoding: data[..<end], as: UTF8.self)
    let rest = end < data.count ? Array(data[(end + 1)...]) : []
    switch first {
    case "not-sent": return .notSent(String(decoding: rest, as: UTF8.self))
    case "no-answer": return .noAnswer(String(decoding: rest, as: UTF8.self))
    default: return Int(first).map { .answered(status: $0, body: rest) }
    }
}

/// Whether the body is the bank's success body: a JSON object whose "data" is the string
/// "success" (however it is escaped) and whose "status" is the integer 200.
func isSuccessBody(_ body: [UInt8]) -> Bool {
    guard case .object(let members)? = try? JSONParser.parse(body) else { return false }
    return members["data"] == .string("success") && members["status"]?.integer == 200
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBankAnswer(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    guard let attempt = transport(data) else { return -1 }
    let name = PayoutOutcome(attempt).name
    let input = String(decoding: data.prefix(2048), as: UTF8.self)

    // One answer, one meaning: classifying it again gives the same outcome.
    guard PayoutOutcome(attempt).name == name else { fatalError("two outcomes for one answer\n\(input)") }
    guard !name.isEmpty, name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F }) else {
        fatalError("outcome name \"\(name)\" is not snake_case\n\(input)")
    }
    if name == "paid" {
        guard case .answered(200, let body) = attempt, isSuccessBody(body) else {
            fatalError("paid without HTTP 200 and the success body\n\(input)")
        }
    }
    return 0
}
