import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP

/// One payout as the bank recorded it (the mock bank's ledger format: tab-separated
/// `paid_at, idempotency_key, wallet, amount, reference`).
public struct BankPayout: Sendable, Equatable {
    public var line: Int
    public var key: String
    public var wallet: String
    public var amount: Int64

    /// Parses the bank's ledger; a malformed line is an error naming it.
    public static func parseLedger(_ text: String) throws -> [BankPayout] {
        var payouts: [BankPayout] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 4, let amount = Int64(fields[3]) else {
                throw MalformedLedger(line: index + 1)
            }
            payouts.append(BankPayout(line: index + 1, key: String(fields[1]), wallet: String(fields[2]), amount: amount))
        }
        return payouts
    }

    public struct MalformedLedger: Error, CustomStringConvertible {
        public let line: Int
        public var description: String { "line \(line) of the bank ledger is not paid_at<TAB>key<TAB>wallet<TAB>amount<TAB>reference" }
    }
}

/// What `reconcile` found: each side's payouts the other lacks, and double payouts.
public struct ReconciliationReport: Sendable {
    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Sendable {
            /// We recorded COMPLETED; the bank has no payout for the key.
            case missingAtBank = "missing_at_bank"
            /// The bank paid a key we do not show as COMPLETED.
            case missingHere = "missing_here"
            /// The bank paid one key more than once.
            case paidTwice = "paid_twice"
            /// Both sides agree a payout happened, not on its amount or wallet.
            case mismatch = "mismatch"
        }

        public var kind: Kind
        public var key: String
        public var detail: String
        public var description: String { "\(kind.rawValue): \(key): \(detail)" }

        public var json: String {
            var object = JSONObject()
            object.add("kind", kind.rawValue)
            object.add("key", key)
            object.add("detail", detail)
            return object.result
        }
    }

    public var completedHere = 0
    public var paidByBank = 0
    public var findings: [Finding] = []
    public var passed: Bool { findings.isEmpty }
}

public enum Reconciler {
    /// Compares our `COMPLETED` withdrawals with the bank's payouts, key by key: each
    /// withdrawal's stored bank key, the `Idempotency-Key` its attempts sent.
    public static func reconcile(store: Store, bankPayouts: [BankPayout]) throws -> ReconciliationReport {
        let ours = try store.payouts().map { payout in
            (key: payout.bankKey, wallet: payout.wallet, amount: payout.amount, status: payout.status, id: payout.withdrawalID)
        }
        var report = ReconciliationReport()
        var byKey: [String: [BankPayout]] = [:]
        for payout in bankPayouts { byKey[payout.key, default: []].append(payout) }
        report.paidByBank = bankPayouts.count
        var known = Set<String>()
        for withdrawal in ours {
            let paid = byKey[withdrawal.key] ?? []
            known.insert(withdrawal.key)
            if withdrawal.status == TransactionStatus.completed.rawValue {
                report.completedHere += 1
                if paid.isEmpty {
                    report.findings.append(
                        .init(
                            kind: .missingAtBank, key: withdrawal.key,
                            detail: "withdrawal \(withdrawal.id) of \(withdrawal.amount) is COMPLETED but the bank has no payout"))
                }
            } else if !paid.isEmpty {
                report.findings.append(
                    .init(
                        kind: .missingHere, key: withdrawal.key,
                        detail: "the bank paid withdrawal \(withdrawal.id) but it is \(withdrawal.status) here"))
            }
            if paid.count > 1 {
                report.findings.append(
                    .init(
                        kind: .paidTwice, key: withdrawal.key,
                        detail: "paid \(paid.count) times (bank ledger lines \(paid.map { String($0.line) }.joined(separator: ", ")))"))
            }
            for payout in paid where payout.amount != withdrawal.amount || payout.wallet != withdrawal.wallet {
                report.findings.append(
                    .init(
                        kind: .mismatch, key: withdrawal.key,
                        detail:
                            "bank line \(payout.line) paid \(payout.amount) to \(payout.wallet); ours is \(withdrawal.amount) from \(withdrawal.wallet)"
                    ))
            }
        }
        for (key, paid) in byKey.sorted(by: { $0.key < $1.key }) where !known.contains(key) {
            report.findings.append(
                .init(
                    kind: .missingHere, key: key,
                    detail:
                        "the bank paid \(paid.map { String($0.amount) }.joined(separator: ", ")) (line \(paid.map { String($0.line) }.joined(separator: ", "))) for a withdrawal we do not know"
                ))
            if paid.count > 1 {
                report.findings.append(.init(kind: .paidTwice, key: key, detail: "paid \(paid.count) times"))
            }
        }
        return report
    }
}
