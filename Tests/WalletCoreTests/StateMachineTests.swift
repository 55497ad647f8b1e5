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

/// The statuses, kinds and reasons live in the domain's enums, the transitions in one table;
/// the schema and the auditor must agree with them.
@Suite("State machine")
struct StateMachineTests {
    /// The quoted values of `column IN (...)` in the schema's text.
    static func checkList(_ column: String, in sql: String) throws -> Set<String> {
        guard let start = sql.firstRange(of: "\(column) IN (") ?? sql.firstRange(of: "\(column) IN\n") else {
            throw TableError(message: "no CHECK list for \(column)")
        }
        let rest = sql[start.upperBound...]
        guard let end = rest.firstIndex(of: ")") else { throw TableError(message: "unclosed CHECK list for \(column)") }
        return Set(rest[..<end].split(separator: ",").map { String($0).trimmingCharacters(in: " \n'(") })
    }

    @Test("the schema's CHECK lists are the enums' raw values")
    func schemaChecksMatchEnums() throws {
        for schema in [Schema.migrations.joined(separator: "\n"), PostgresSchema.migrations.map(\.sql).joined(separator: "\n")] {
            #expect(try Self.checkList("type", in: schema) == Set(TransactionType.allCases.map(\.rawValue)))
            #expect(try Self.checkList("status", in: schema) == Set(TransactionStatus.allCases.map(\.rawValue)))
            #expect(try Self.checkList("kind", in: schema) == Set(LedgerEntry.Kind.allCases.map(\.rawValue)))
            #expect(try Self.checkList("failure_reason", in: schema) == Set(FailureReason.allCases.map(\.rawValue)))
        }
    }

    @Test("no query spells a status, type, kind or reason: they are bound from the enums")
    func noLiteralsInQueries() throws {
        let sources = PayoutRulesTableTests.verifyDirectory.replacingSuffix("verify/", with: "Sources/")
        let values =
            TransactionType.allCases.map(\.rawValue) + TransactionStatus.allCases.map(\.rawValue)
            + LedgerEntry.Kind.allCases.map(\.rawValue) + FailureReason.allCases.map(\.rawValue)
        var checked = 0
        for file in try swiftFiles(under: sources) where !file.hasSuffix("/Schema.swift") && !file.hasSuffix("/Schema+PostgreSQL.swift") {
            let text = try readTextFile(file)
            checked += 1
            for value in values {
                #expect(!text.contains("'\(value)'"), "\(file) spells '\(value)' in SQL")
            }
        }
        #expect(checked > 20)
    }

    @Test("final statuses have no way out; every status but PENDING is reached")
    func transitionTable() {
        #expect(TransactionStatus.completed.isFinal && TransactionStatus.failed.isFinal && TransactionStatus.canceled.isFinal)
        #expect(!TransactionStatus.pending.isFinal && !TransactionStatus.processing.isFinal)
        #expect(!TransactionStatus.completed.canBecome(.failed) && !TransactionStatus.processing.canBecome(.pending))
        let reached = Set(TransactionStatus.transitions.map(\.to))
        #expect(reached == Set(TransactionStatus.allCases).subtracting([.pending]))
    }

    @Test("every state a withdrawal can reach has its expected ledger rows; a deposit only COMPLETED")
    func ledgerShapesCoverTheStateMachine() {
        for status in TransactionStatus.allCases {
            let reasons: [FailureReason?] = status == .failed ? FailureReason.allCases.map { $0 } : [nil]
            for reason in reasons {
                #expect(
                    LedgerShape.expected(type: .withdrawal, status: status, failureReason: reason) != nil, "\(status) \(String(describing: reason))")
            }
            #expect((LedgerShape.expected(type: .deposit, status: status, failureReason: nil) != nil) == (status == .completed))
        }
        // Along every transition a withdrawal's ledger only grows: rows are never taken back.
        for (from, to, _) in TransactionStatus.transitions {
            let before = LedgerShape.expected(type: .withdrawal, status: from, failureReason: nil) ?? []
            let after = LedgerShape.expected(type: .withdrawal, status: to, failureReason: to == .failed ? .bankRejected : nil) ?? []
            #expect(Array(after.prefix(before.count)) == before, "\(from) → \(to)")
        }
    }
}

extension String {
    func replacingSuffix(_ suffix: String, with replacement: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) + replacement : self
    }

    func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}

/// The .swift files below `directory`, recursively.
func swiftFiles(under directory: String) throws -> [String] {
    guard let stream = opendir(directory) else { throw TableError(message: "cannot open \(directory)") }
    defer { closedir(stream) }
    var files: [String] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard name != ".", name != ".." else { continue }
        let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
        if entry.pointee.d_type == UInt8(DT_DIR) {
            files += try swiftFiles(under: path)
        } else if name.hasSuffix(".swift") {
            files.append(path)
        }
    }
    return files
}
