#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// The payout rules live in two tables under verify/, read by both this code and the model
/// checker (verify/wallet.pml). These tests hold `RetryPolicy` and `PayoutOutcome` to the
/// tables, row by row, and the tables to the code's vocabulary: a rule changed in one place
/// only fails `make test`.
@Suite("Payout rules tables")
struct PayoutRulesTableTests {
    /// verify/, found from this file (Tests/WalletCoreTests/ → the repository root).
    static let verifyDirectory: String = {
        let parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        return parts.dropLast(3).joined(separator: "/") + "/verify/"
    }()

    /// The rows of a tab-separated table, comments and blank lines left out.
    static func rows(_ name: String) throws -> [[String]] {
        let text = try readTextFile(verifyDirectory + name)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.allSatisfy(\.isWhitespace) }
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
    }

    static func flag(_ text: String) throws -> Bool {
        switch text {
        case "yes": return true
        case "no": return false
        default: throw TableError(message: "not yes/no: \(text)")
        }
    }

    /// An outcome of each kind, with any detail: the rules never read the detail.
    static func outcome(_ kind: PayoutOutcome.Kind) -> PayoutOutcome {
        switch kind {
        case .paid: .paid
        case .declined: .declined("the failed body")
        case .refused: .refused("HTTP 404")
        case .unreachable: .unreachable("connection refused")
        case .unknown: .unknown("timeout")
        }
    }

    @Test("RetryPolicy decides every row of payout-rules.tsv, and the table has one row per case")
    func decisionTable() throws {
        let policy = RetryPolicy(maxRetries: 3, baseSeconds: 10, unknownRecheckSeconds: 600)
        var seen = Set<String>()
        for row in try Self.rows("payout-rules.tsv") {
            try #require(row.count == 6, "a row has 6 columns: \(row)")
            let kind = try #require(PayoutOutcome.Kind(rawValue: row[0]), "unknown outcome \(row[0])")
            let doubt = try Self.flag(row[1])
            let last = try Self.flag(row[2])
            #expect(seen.insert("\(row[0]) \(row[1]) \(row[2])").inserted, "two rows for \(row[0]) \(row[1]) \(row[2])")
            let attempt: Int64 = last ? policy.maxAttempts : 2
            let jitter = 0.5
            let expected: PayoutDecision
            switch row[3] {
            case "complete":
                expected = .complete
            case "fail":
                let reason = try #require(FailureReason(rawValue: row[5]), "fail needs a reason: \(row)")
                expected = .fail(reason)
            case "retry":
                #expect(row[5] == "-", "a retry writes no reason: \(row)")
                expected = .retry(
                    afterMicroseconds: policy.backoffMicroseconds(afterAttempt: attempt, jitter: jitter),
                    bankMayHavePaid: try Self.flag(row[4]), reason: nil)
            case "recheck":
                #expect(row[4] == "yes" && row[5] == FailureReason.bankOutcomeUnknown.rawValue, "a recheck is in doubt: \(row)")
                expected = .retry(
                    afterMicroseconds: policy.recheckMicroseconds(jitter: jitter), bankMayHavePaid: true,
                    reason: .bankOutcomeUnknown)
            default:
                Issue.record("unknown decision \(row[3])")
                continue
            }
            let decided = policy.decide(attempt: attempt, bankMayHavePaid: doubt, outcome: Self.outcome(kind), jitter: jitter)
            #expect(decided == expected, "row \(row.joined(separator: " "))")
            if last {
                // A recheck long after the limit follows the same row.
                let later = policy.decide(attempt: attempt + 5, bankMayHavePaid: doubt, outcome: Self.outcome(kind), jitter: jitter)
                #expect(later == expected, "row \(row.joined(separator: " ")) at attempt \(attempt + 5)")
            }
        }
        #expect(seen.count == PayoutOutcome.Kind.allCases.count * 4, "every outcome × in doubt × last has its row")
    }

    /// Every kind of answer named in bank-answers.tsv, as transports the classifier sees.
    static let answers: [String: [BankTransport]] = [
        "success_body": [.answered(status: 200, body: Array(#"{"data": "success", "status": 200}"#.utf8))],
        "success_body_not_200": [
            .answered(status: 201, body: Array(#"{"data": "success", "status": 200}"#.utf8)),
            .answered(status: 404, body: Array(#"{"data": "success", "status": 200}"#.utf8)),
            .answered(status: 500, body: Array(#"{"data": "success", "status": 200}"#.utf8)),
        ],
        "failed_body": [
            .answered(status: 503, body: Array(#"{"data": "failed", "status": 503}"#.utf8)),
            .answered(status: 404, body: Array(#"{"data": "failed", "status": 503}"#.utf8)),
            .answered(status: 500, body: Array(#"{"status":503,"data":"failed"}"#.utf8)),
        ],
        "failed_body_http_200": [.answered(status: 200, body: Array(#"{"data": "failed", "status": 503}"#.utf8))],
        "bare_4xx": [
            .answered(status: 404, body: Array("<html>Not Found</html>".utf8)), .answered(status: 401, body: []),
            .answered(status: 422, body: Array(#"{"error": "unprocessable"}"#.utf8)), .answered(status: 400, body: []),
        ],
        "status_409": [.answered(status: 409, body: [])],
        "status_425": [.answered(status: 425, body: [])],
        "status_429": [.answered(status: 429, body: Array(#"{"error": "slow down"}"#.utf8))],
        "bare_5xx": [
            .answered(status: 500, body: []), .answered(status: 502, body: Array("<html>Bad Gateway</html>".utf8)),
            .answered(status: 504, body: []),
        ],
        "other_body": [
            .answered(status: 200, body: Array(#"{"data": "pending"}"#.utf8)), .answered(status: 200, body: Array("ok".utf8)),
            .answered(status: 503, body: Array(#"{"data": "failed", "status": 502}"#.utf8)),
        ],
        "timeout_after_send": [.noAnswer("Operation timed out after 5000 milliseconds with 0 bytes received")],
        "reset_after_send": [.noAnswer("Recv failure: Connection reset by peer")],
        "reset_then_resend_refused": [.noAnswer("Couldn't connect to server")],
        "bare_4xx_after_resend": [
            .answeredAfterResend(status: 404, body: Array("<html>Not Found</html>".utf8)),
            .answeredAfterResend(status: 401, body: []),
        ],
        "refused_connection": [.notSent("Couldn't connect to server")],
        "connect_timeout": [.notSent("Connection timed out after 5000 milliseconds")],
    ]

    @Test("PayoutOutcome classifies every answer of bank-answers.tsv as the table says, and the table knows every answer")
    func answerTable() throws {
        var named = Set<String>()
        for row in try Self.rows("bank-answers.tsv") {
            try #require(row.count == 2, "a row has 2 columns: \(row)")
            let kind = try #require(PayoutOutcome.Kind(rawValue: row[1]), "unknown outcome \(row[1])")
            let transports = try #require(Self.answers[row[0]], "no example of answer \(row[0]) in this test")
            named.insert(row[0])
            for transport in transports {
                #expect(PayoutOutcome(transport).kind == kind, "\(row[0]): \(transport)")
            }
        }
        #expect(named == Set(Self.answers.keys), "the test and the table name the same answers")
        #expect(
            Set(try Self.rows("bank-answers.tsv").map { $0[1] }) == Set(PayoutOutcome.Kind.allCases.map(\.rawValue)),
            "every outcome is reached by some answer")
    }
}

struct TableError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// The whole text of a file, for the tests' fixtures.
func readTextFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else { throw TableError(message: "cannot open \(path)") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes += buffer.prefix(count)
    }
    return String(decoding: bytes, as: UTF8.self)
}
