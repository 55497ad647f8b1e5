import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP

/// One thing `audit verify` found wrong, named so an operator can find the row.
public struct Discrepancy: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case brokenHashChain = "broken_hash_chain"
        case ledgerGap = "ledger_gap"
        case balanceAfterMismatch = "balance_after_mismatch"
        case balanceMismatch = "balance_mismatch"
        case heldMismatch = "held_mismatch"
        case negativeBalance = "negative_balance"
        case ledgerMismatch = "ledger_mismatch"
        /// The ledger no longer yields a checkpoint given with `--anchor`.
        case anchorMismatch = "anchor_mismatch"
        /// A checkpoint the processor stored does not match the ledger.
        case checkpointMismatch = "checkpoint_mismatch"
        case brokenAdminChain = "broken_admin_chain"
        case adminGap = "admin_gap"
    }

    public var kind: Kind
    /// `ledger 17`, `wallet 3f1c…`, `transaction 42`.
    public var subject: String
    public var detail: String

    public var description: String { "\(kind.rawValue): \(subject): \(detail)" }

    public var json: String {
        var object = JSONObject()
        object.add("kind", kind.rawValue)
        object.add("subject", subject)
        object.add("detail", detail)
        return object.result
    }
}

/// The result of `audit verify`: every check run, every discrepancy found.
public struct AuditReport: Sendable {
    public var ledgerRows: Int64 = 0
    public var wallets: Int64 = 0
    public var transactions: Int64 = 0
    /// The last row's stored hash. Since rows chain per wallet it covers only that row's
    /// wallet: `checkpoint` is what covers every row.
    public var headHash: String = Store.genesisHash
    /// The checkpoint of the last ledger row, recomputed from the rows' contents.
    public var checkpoint: LedgerCheckpoint = .genesis
    /// The anchors checked, each found in the ledger or not.
    public var anchors: [(anchor: LedgerCheckpoint, held: Bool)] = []
    public var adminActions: Int64 = 0
    /// The last admin action's hash.
    public var adminHeadHash: String = Store.genesisHash
    public var discrepancies: [Discrepancy] = []

    public var passed: Bool { discrepancies.isEmpty }
}

/// Recomputes everything the ledger promises, from the rows alone:
/// - the hash chains, row by row: the single chain of the rows written before schema
///   version 7, with no gap in the ids, and each wallet's chain after it;
/// - each row's `balance_after` as the running sum of its wallet's deltas;
/// - each wallet's balance as the sum of its deltas, and its held funds as the sum of its
///   `PROCESSING` withdrawals; no negative balance;
/// - the ledger's checkpoints (docs/CHECKPOINTS.md) against the anchors given and the
///   checkpoints the processor stored;
/// - the admin trail's hash chain, row by row, with no gap in the ids;
/// - each transaction's ledger rows against its type and status: a completed deposit has one
///   credit; a `PROCESSING` or `COMPLETED` withdrawal one debit and no refund; a `FAILED` one
///   either nothing (insufficient funds) or one debit and one refund; `PENDING` and
///   `CANCELED` ones nothing.
public struct Auditor {
    /// What the transaction checks need of a ledger row.
    struct LedgerLine {
        let wallet: Int64
        let kind: String
        let delta: Int64
    }

    private let store: Store

    public init(store: Store) {
        self.store = store
    }

    /// Runs every check inside one read transaction, so the service may keep writing.
    /// Each of `anchors` must still be a checkpoint of the ledger.
    public func verify(anchors: [LedgerCheckpoint] = []) throws -> AuditReport {
        try store.read {
            var report = AuditReport()
            var sums: [Int64: Int64] = [:]
            var entries: [Int64: [LedgerLine]] = [:]
            // The checkpoints to compare: the anchors' and the stored ones, not every row's.
            let stored = try store.storedCheckpoints()
            var checkpoints: [Int64: String] = [:]
            for id in anchors.map(\.ledgerID) + stored.map(\.ledgerID) { checkpoints[id] = "" }
            try checkChain(&report, sums: &sums, entries: &entries, checkpoints: &checkpoints)
            checkpoints = checkpoints.filter { !$0.value.isEmpty }
            checkpoints[0] = Store.genesisHash
            checkAnchors(&report, anchors: anchors, stored: stored, checkpoints: checkpoints)
            try checkAdminTrail(&report)
            try checkWallets(&report, sums: sums)
            try checkTransactions(&report, entries: entries)
            return report
        }
    }

    /// Each anchor, then each stored checkpoint, against the checkpoints recomputed.
    private func checkAnchors(
        _ report: inout AuditReport, anchors: [LedgerCheckpoint], stored: [LedgerCheckpoint], checkpoints: [Int64: String]
    ) {
        for anchor in anchors {
            let found = checkpoints[anchor.ledgerID]
            report.anchors.append((anchor, found == anchor.hash))
            guard found != anchor.hash else { continue }
            report.discrepancies.append(
                Discrepancy(
                    kind: .anchorMismatch, subject: "anchor \(anchor.ledgerID)",
                    detail: found == nil
                        ? "the ledger has no row \(anchor.ledgerID): rows were removed"
                        : "the ledger's rows up to \(anchor.ledgerID) hash to \(found!), not \(anchor.hash): a row up to it was changed, removed or inserted"
                ))
        }
        for stored in stored where checkpoints[stored.ledgerID] != stored.hash {
            report.discrepancies.append(
                Discrepancy(
                    kind: .checkpointMismatch, subject: "checkpoint \(stored.ledgerID)",
                    detail: "the stored checkpoint \(stored.hash) is not the ledger's (\(checkpoints[stored.ledgerID] ?? "no such row"))"))
        }
    }

    /// The admin trail's chain, as the ledger's.
    private func checkAdminTrail(_ report: inout AuditReport) throws {
        var previousHash = Store.genesisHash
        var expectedID: Int64 = 1
        for action in try store.allAdminActions() {
            report.adminActions += 1
            if action.id != expectedID {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .adminGap, subject: "admin action \(action.id)",
                        detail: "expected action \(expectedID) next: actions were removed or renumbered"))
            }
            expectedID = action.id + 1
            let input = Store.adminHashInput(
                previousHash: previousHash, id: action.id, createdAt: action.createdAt.microseconds, actor: action.actor,
                command: action.command, arguments: action.arguments, result: action.result)
            if SHA256.hex(Array(input.utf8)) != action.hash {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .brokenAdminChain, subject: "admin action \(action.id)",
                        detail: "the hash does not match the action's content and the previous action's hash"))
            }
            previousHash = action.hash
        }
        report.adminHeadHash = previousHash
    }

    /// Each row's hash against the chain it belongs to: rows written before schema version 7
    /// (`wallet_chain = 0`) form one chain through the whole ledger, ids without a gap; each
    /// later row chains from its own wallet's previous row, whatever that row's kind (ids
    /// may skip: on PostgreSQL a rolled-back transaction leaves its drawn id unused). A
    /// removed row breaks the chain of the row after it in its wallet; a changed or moved
    /// one breaks its own. A row of the single chain after a per-wallet row was put there.
    private func checkChain(
        _ report: inout AuditReport, sums: inout [Int64: Int64], entries: inout [Int64: [LedgerLine]], checkpoints: inout [Int64: String]
    ) throws {
        var singleChainHead = Store.genesisHash
        var walletHeads: [Int64: String] = [:]
        var firstWalletChained: Int64?
        var lastHash = Store.genesisHash
        var checkpoint = LedgerCheckpoint.genesis
        var expectedID: Int64 = 1
        for row in try store.ledgerRows() {
            report.ledgerRows += 1
            let walletChained = row.walletChain != 0
            if walletChained {
                if firstWalletChained == nil { firstWalletChained = row.id }
            } else {
                if let first = firstWalletChained {
                    report.discrepancies.append(
                        Discrepancy(
                            kind: .brokenHashChain, subject: "ledger \(row.id)",
                            detail: "a row of the single chain after row \(first), which chains per wallet: rows were inserted or renumbered"))
                }
                if row.id != expectedID {
                    report.discrepancies.append(
                        Discrepancy(
                            kind: .ledgerGap, subject: "ledger \(row.id)",
                            detail: "expected row \(expectedID) next: rows were removed or renumbered"))
                }
                expectedID = row.id + 1
            }
            let previousHash = walletChained ? walletHeads[row.walletRowID] ?? Store.genesisHash : singleChainHead
            let input = Store.ledgerHashInput(
                previousHash: previousHash, id: row.id, walletRowID: row.walletRowID, transactionID: row.transactionID,
                kind: row.kind, delta: row.delta, balanceAfter: row.balanceAfter, createdAt: row.createdAt)
            let chained = SHA256.hex(Array(input.utf8))
            // The checkpoint chains from the previous checkpoint, not from the stored hash;
            // while it hashes the same text (the single chain, intact), it is the same hash.
            checkpoint =
                LedgerCheckpoint.stepInput(checkpoint.hash, row) == input
                ? LedgerCheckpoint(ledgerID: row.id, hash: chained) : checkpoint.next(row)
            if checkpoints[row.id] != nil { checkpoints[row.id] = checkpoint.hash }
            if chained != row.hash {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .brokenHashChain, subject: "ledger \(row.id)",
                        detail: walletChained
                            ? "the hash does not match the row's content and its wallet's previous row's hash"
                            : "the hash does not match the row's content and the previous row's hash"))
            }
            if !walletChained { singleChainHead = row.hash }
            walletHeads[row.walletRowID] = row.hash
            lastHash = row.hash
            let (sum, overflow) = sums[row.walletRowID, default: 0].addingReportingOverflow(row.delta)
            sums[row.walletRowID] = sum
            if overflow || sum != row.balanceAfter {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .balanceAfterMismatch, subject: "ledger \(row.id)",
                        detail: "balance_after \(row.balanceAfter) but the wallet's rows sum to \(sum)"))
            }
            entries[row.transactionID, default: []].append(LedgerLine(wallet: row.walletRowID, kind: row.kind, delta: row.delta))
        }
        report.headHash = lastHash
        report.checkpoint = checkpoint
    }

    private func checkWallets(_ report: inout AuditReport, sums: [Int64: Int64]) throws {
        for wallet in try store.walletTotals() {
            report.wallets += 1
            let subject = "wallet \(wallet.uuid)"
            if wallet.balance < 0 {
                report.discrepancies.append(Discrepancy(kind: .negativeBalance, subject: subject, detail: "balance \(wallet.balance)"))
            }
            let sum = sums[wallet.rowID, default: 0]
            if sum != wallet.balance {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .balanceMismatch, subject: subject,
                        detail: "balance \(wallet.balance) but its ledger rows sum to \(sum)"))
            }
            if wallet.held != wallet.processing {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .heldMismatch, subject: subject,
                        detail: "held \(wallet.held) but its PROCESSING withdrawals total \(wallet.processing)"))
            }
        }
    }

    private func checkTransactions(_ report: inout AuditReport, entries: [Int64: [LedgerLine]]) throws {
        for transaction in try store.transactionShapes() {
            report.transactions += 1
            let rows = entries[transaction.id] ?? []
            if rows.contains(where: { $0.wallet != transaction.walletRowID }) {
                report.discrepancies.append(
                    Discrepancy(
                        kind: .ledgerMismatch, subject: "transaction \(transaction.id)",
                        detail: "a ledger row of this transaction belongs to another wallet"))
            }
            let found = rows.map { "\($0.kind) \($0.delta)" }
            let expected = Auditor.expectedLedger(transaction)
            if !expected.contains(found) {
                let described = expected.map { $0.isEmpty ? "no rows" : $0.joined(separator: ", ") }.joined(separator: " or ")
                report.discrepancies.append(
                    Discrepancy(
                        kind: .ledgerMismatch, subject: "transaction \(transaction.id)",
                        detail:
                            "\(transaction.type) \(transaction.status) should have \(described); has \(found.isEmpty ? "no rows" : found.joined(separator: ", "))"
                    ))
            }
        }
    }

    /// The ledger rows a transaction may have, as `KIND delta` in order.
    static func expectedLedger(_ transaction: StoredTransactionShape) -> [[String]] {
        guard let type = TransactionType(rawValue: transaction.type), let status = TransactionStatus(rawValue: transaction.status),
            let shape = LedgerShape.expected(
                type: type, status: status,
                failureReason: transaction.failureReason.flatMap(FailureReason.init(rawValue:)))
        else {
            return [["(a valid type and status)"]]
        }
        return [shape.map { kind in "\(kind.rawValue) \(kind == .debit ? -transaction.amount : transaction.amount)" }]
    }
}
