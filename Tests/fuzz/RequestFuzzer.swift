// The `request` fuzz target: one input is one FastCGI request, followed from nginx's
// parameters to the response the responder would send.
//
// Input format (text, so that the seed corpus can be written by hand):
//
//     REQUEST_METHOD=POST
//     DOCUMENT_URI=/wallets/3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b/deposit
//     CONTENT_TYPE=application/json
//     CONTENT_LENGTH=15
//
//     {"amount": 100}
//
// Lines of NAME=VALUE up to the first empty line are the FastCGI parameters (the first of
// a name wins, as with FCGX_GetParam; a value ends at a NUL byte, as a C string does);
// what follows the empty line is the input stream the body is read from, which may be
// shorter or longer than CONTENT_LENGTH says. An input without HTTP_AUTHORIZATION is sent
// with the key that owns the fixture's wallet, so that inputs reach past authentication;
// one with it explores the header's parsing and the 401.
//
// The path it runs is the responder's: `FastCGIRequest` (parameters and body to a
// `Request` or an error), then `WalletAPI.handle` (router, JSON parser, validation of
// amount, scheduled_for, idempotency key, filters, cursor). The database behind it is a
// real SQLite file holding one wallet with two transactions; write work runs in a
// transaction that is always rolled back, so every input meets the same data and the
// fuzzer also finds any input the validation lets through but the schema refuses (that
// would be a 503).

#if canImport(Glibc)
import Glibc
#endif
import WalletDomain
import WalletHTTP
import WalletJSON
import WalletPlatform
import WalletServices
import WalletStore

/// The wallet the database holds; the seed corpus uses its id.
let knownWallet = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
/// The API key that owns it.
let knownKey = "wsk_fuzzFixtureKey0123456789abcdefghijklmnopqrs"

/// Runs write work like the responder's writer, on its own connection, but rolls every
/// transaction back: nothing an input does is seen by the next one.
final class RollbackWriter: WriteExecutor, @unchecked Sendable {
    private let store: Store

    init(store: Store) {
        self.store = store
    }

    func perform(_ work: @escaping WriteWork) -> Result<WriteOutcome, any Error> {
        // One write in a savepoint that is never kept: its answer comes back, its changes
        // are undone.
        store.writeBatch(1) { _ in (try work(store), false) }[0]
    }
}

/// The API over a fresh database file, made once per process.
final class Fixture {
    let path: String
    let api: WalletAPI
    let reader: Store

    init() {
        let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        path = "\(directory)/wallet-fuzz-request-\(getpid()).db"
        Fixture.remove(path)
        do {
            let writer = try Store.open(location: path, synchronous: .normal)
            try writer.write {
                let now = Timestamp.now()
                guard let id = WalletID(knownWallet), let amount = Amount(minorUnits: 5_000) else {
                    fatalError("the fixture's wallet id and amount are valid")
                }
                guard let key = APIKeySecret(knownKey) else { fatalError("the fixture's key has the shape of one") }
                let owner = try writer.createAPIKey(name: "fuzz", digest: key.digest, now: now).id
                _ = try writer.createWallet(id: id, owner: owner, now: now)
                _ = try writer.deposit(to: id, by: .operator, amount: amount, idempotencyKey: "fixture-deposit", now: now).get()
                _ = try writer.scheduleWithdrawal(
                    from: id, by: .operator, amount: amount, scheduledFor: now.adding(seconds: 86_400),
                    idempotencyKey: nil, now: now
                ).get()
            }
            reader = try Store.open(location: path, queryOnly: true)
            api = WalletAPI(writer: RollbackWriter(store: writer))
        } catch {
            fatalError("cannot set up the fuzz database at \(path): \(error)")
        }
    }

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
    }
}

// libFuzzer calls the entry point from one thread only, so one unsynchronised fixture is safe.
nonisolated(unsafe) let fixture = Fixture()

/// The parameters and the input stream of one fuzz input.
func split(_ data: [UInt8]) -> (parameters: [String: String], stream: [UInt8]) {
    var parameters: [String: String] = [:]
    var index = 0
    while index < data.count {
        let end = data[index...].firstIndex(of: UInt8(ascii: "\n")) ?? data.count
        let line = data[index..<end]
        index = end + 1
        if line.isEmpty { return (parameters, index < data.count ? Array(data[index...]) : []) }
        guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else { continue }
        let name = String(decoding: line[..<equals], as: UTF8.self)
        var value = line[(equals + 1)...]
        if let nul = value.firstIndex(of: 0) { value = value[..<nul] }
        // libfcgi hands out C strings; the responder reads them with String(cString:), which
        // repairs invalid UTF-8 the same way.
        if parameters[name] == nil { parameters[name] = String(decoding: value, as: UTF8.self) }
    }
    return (parameters, [])
}

/// An error body as the contract shows it: `{"error": {"code": snake_case, "message": text}}`.
func checkError(_ response: Response, _ input: String) {
    guard case .object(let outer)? = try? JSONParser.parse(Array(response.body.utf8)),
        case .object(let error)? = outer["error"], case .string(let code)? = error["code"],
        case .string? = error["message"]
    else {
        fatalError("error response \(response.status) is not in the contract's shape: \(response.body)\n\(input)")
    }
    let snakeCase =
        !code.isEmpty && code.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F }
        && code.utf8.first != 0x5F && code.utf8.last != 0x5F
    guard snakeCase else { fatalError("error code \"\(code)\" is not snake_case\n\(input)") }
    if response.status == 405, !response.headers.contains(where: { $0.name == "Allow" }) {
        fatalError("405 without Allow\n\(input)")
    }
    if response.status == 401, !response.headers.contains(where: { $0.name == "WWW-Authenticate" }) {
        fatalError("401 without WWW-Authenticate\n\(input)")
    }
}

/// Whatever the input, the answer is a 2xx or a 4xx in the contract's shape: a 5xx from a
/// healthy database means a request got past validation that should not have.
func check(_ response: Response, _ input: String) {
    guard response.status < 500 else { fatalError("\(response.status) for a request: \(response.body)\n\(input)") }
    guard Response.reason(for: response.status) != "Status" else {
        fatalError("status \(response.status) has no reason phrase\n\(input)")
    }
    if response.status >= 400 {
        checkError(response, input)
    } else if response.contentType == "application/json" {
        guard let body = try? JSONParser.parse(Array(response.body.utf8)) else {
            fatalError("a \(response.status) body is not JSON: \(response.body)\n\(input)")
        }
        checkTimestamps(in: body, response, input)
    }
}

/// Every time a response shows (`created_at`, `scheduled_for`, ...) is RFC 3339 that the
/// service itself would accept back.
func checkTimestamps(in value: JSONValue, _ response: Response, _ input: String) {
    switch value {
    case .object(let members):
        for (name, member) in members {
            if name.hasSuffix("_at") || name == "scheduled_for", case .string(let text) = member,
                Timestamp(rfc3339: text) == nil
            {
                fatalError("\(name) \(text) in a \(response.status) response is not RFC 3339: \(response.body)\n\(input)")
            }
            checkTimestamps(in: member, response, input)
        }
    case .array(let elements):
        for element in elements { checkTimestamps(in: element, response, input) }
    default:
        break
    }
}

/// A timestamp that parses prints as one that parses back to the same instant.
func checkTimestamp(_ text: String) {
    guard let timestamp = Timestamp(rfc3339: text) else { return }
    guard Timestamp(rfc3339: timestamp.rfc3339) == timestamp else {
        fatalError("\(text) parses to \(timestamp.microseconds) µs, printed as \(timestamp.rfc3339), which does not parse back")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    var (parameters, stream) = split(data)
    if parameters["HTTP_AUTHORIZATION"] == nil { parameters["HTTP_AUTHORIZATION"] = "Bearer " + knownKey }
    let input = String(decoding: data.prefix(2048), as: UTF8.self)
    for value in parameters.values { checkTimestamp(value) }
    checkTimestamp(String(decoding: stream, as: UTF8.self))

    let received = FastCGIRequest(parameter: { parameters[$0] })
    let response: Response
    switch received.bodyLength() {
    case .failure(let error):
        response = fixture.api.refuse(received.withoutBody, with: error, reader: fixture.reader).response
    case .success(let length):
        // The responder reads at most the announced length; the stream may end sooner.
        switch received.request(body: Array(stream.prefix(length))) {
        case .failure(let error): response = fixture.api.refuse(received.withoutBody, with: error, reader: fixture.reader).response
        case .success(let request): response = fixture.api.handle(request, reader: fixture.reader).response
        }
    }
    check(response, input)
    return 0
}
