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

/// A small world on a fresh database: two wallets, deposits, a paid withdrawal, a refunded
/// one, one still with the bank, one that failed for want of funds, one canceled.
private final class AuditWorld {
    let t: TestAPI
    let store: Store
    let a: WalletID
    let b: WalletID
    var paid: Int64 = 0
    var refunded: Int64 = 0
    var held: Int64 = 0

    init() throws {
        t = try TestAPI()
        store = try t.database.connection()
        a = try t.createWallet()
        b = try t.createWallet()
        t.deposit(a, 10_000)
        t.deposit(b, 500)
        paid = try t.dueWithdrawal(a, 1_000)
        refunded = try t.dueWithdrawal(a, 2_000)
        held = try t.dueWithdrawal(b, 300)
        _ = try t.dueWithdrawal(b, 9_999)
        let later = try #require(t.withdraw(a, 50, scheduledFor: "2099-01-01T00:00:00Z").json["id"]?.integer)
        #expect(t.send("POST", "/wallets/\(a)/transactions/\(later)/cancel").status == 200)
        let bank = ScriptedBank(byWithdrawal: [paid: [.paid], refunded: [.failed], held: [.timedOut]])
        try runPass(store, bank, processorSettings(maxRetries: 0))
    }

    /// Runs SQL the store would never run, with the ledger's guards lifted: what someone
    /// with write access to the file could do.
    func tamper(_ sql: String) throws {
        let raw = store.database
        try raw.dropTrigger("ledger_no_update", on: "ledger")
        try raw.dropTrigger("ledger_no_delete", on: "ledger")
        try raw.execute(sql)
    }

    func findings() throws -> [Discrepancy.Kind] {
        try Auditor(store: store).verify().discrepancies.map(\.kind)
    }
}

@Suite("Auditor")
struct AuditTests {
    @Test("a ledger written by the service passes, and the report counts what it checked")
    func cleanLedgerPasses() throws {
        let world = try AuditWorld()
        let report = try Auditor(store: world.store).verify()
        #expect(report.passed, "\(report.discrepancies)")
        #expect(report.wallets == 2 && report.transactions == 7)
        // Deposits 2, debits 3 (paid, refunded, held), refund 1.
        #expect(report.ledgerRows == 6)
        #expect(report.headHash == (try ledgerRows(world.store).last?.hash))
    }

    @Test(
        "each kind of tampering is named",
        arguments: [
            (
                "UPDATE ledger SET delta = delta + 1 WHERE id = 1",
                [Discrepancy.Kind.brokenHashChain, .balanceAfterMismatch, .balanceMismatch, .ledgerMismatch, .checkpointMismatch]
            ),
            // Ids may skip (a rolled-back transaction on PostgreSQL): the removed row (the
            // first wallet's deposit) is found by the wallet's next row, which chained from it.
            (
                "DELETE FROM ledger WHERE id = 1",
                [.brokenHashChain, .balanceAfterMismatch, .balanceMismatch, .ledgerMismatch, .checkpointMismatch]
            ),
            // The stored hash column is not part of a checkpoint: only the chain breaks.
            ("UPDATE ledger SET hash = replace(hash, substr(hash, 1, 1), 'x') WHERE id = 2", [.brokenHashChain, .brokenHashChain]),
            ("UPDATE wallets SET balance = balance + 5 WHERE id = 1", [.balanceMismatch]),
            ("UPDATE wallets SET held = 0 WHERE id = 2", [.heldMismatch]),
            (
                "UPDATE transactions SET status = 'COMPLETED', next_attempt_at = NULL WHERE type = 'WITHDRAWAL' AND status = 'CANCELED'",
                [.ledgerMismatch]
            ),
        ] as [(String, [Discrepancy.Kind])])
    func tamperingIsFound(sql: String, expected: [Discrepancy.Kind]) throws {
        let world = try AuditWorld()
        try world.tamper(sql)
        let found = try world.findings()
        #expect(Set(found) == Set(expected), "\(found)")
        #expect(!found.isEmpty)
    }
}

@Suite("Reconciler")
struct ReconcilerTests {
    /// The bank's ledger as it should be: one line per COMPLETED withdrawal.
    private func faithfulLedger(_ world: AuditWorld) throws -> [BankPayout] {
        try world.store.payouts().filter { $0.status == TransactionStatus.completed.rawValue }.enumerated().map { index, payout in
            BankPayout(line: index + 1, key: payout.bankKey, wallet: payout.wallet, amount: payout.amount)
        }
    }

    @Test("a bank ledger that matches the COMPLETED withdrawals passes")
    func matchingLedgerPasses() throws {
        let world = try AuditWorld()
        let report = try Reconciler.reconcile(store: world.store, bankPayouts: try faithfulLedger(world))
        #expect(report.passed, "\(report.findings)")
        #expect(report.completedHere == 1 && report.paidByBank == 1)
    }

    @Test("every disagreement is named by kind and key")
    func findings() throws {
        let world = try AuditWorld()
        let good = try faithfulLedger(world)
        let payouts = try world.store.payouts()
        let heldKey = try #require(payouts.first { $0.withdrawalID == world.held }).bankKey
        let paidKey = good[0].key

        var twice = good + good
        twice[1].line = 2
        #expect(try Reconciler.reconcile(store: world.store, bankPayouts: twice).findings.map(\.kind) == [.paidTwice])

        #expect(try Reconciler.reconcile(store: world.store, bankPayouts: []).findings.map(\.kind) == [.missingAtBank])

        var wrongAmount = good
        wrongAmount[0].amount += 1
        #expect(try Reconciler.reconcile(store: world.store, bankPayouts: wrongAmount).findings.map(\.kind) == [.mismatch])

        let paidHeld = good + [BankPayout(line: 2, key: heldKey, wallet: world.b.text, amount: 300)]
        let heldFindings = try Reconciler.reconcile(store: world.store, bankPayouts: paidHeld).findings
        #expect(heldFindings.map(\.kind) == [.missingHere] && heldFindings[0].key == heldKey)

        let stranger = good + [BankPayout(line: 2, key: "wd_unknown", wallet: world.a.text, amount: 7)]
        #expect(try Reconciler.reconcile(store: world.store, bankPayouts: stranger).findings.map(\.kind) == [.missingHere])
        #expect(paidKey.hasPrefix(BankKey.prefix))
    }

    @Test("the bank's ledger file is parsed line by line; a malformed line is named")
    func parsing() throws {
        let text = "1700000000\twd_a\t3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b\t500\tref\n\n1700000001\twd_b\tw\t7\t\n"
        let payouts = try BankPayout.parseLedger(text)
        #expect(payouts.map(\.key) == ["wd_a", "wd_b"] && payouts.map(\.line) == [1, 3] && payouts.map(\.amount) == [500, 7])
        #expect(throws: BankPayout.MalformedLedger.self) { try BankPayout.parseLedger("1\twd_a\tw\tlots\n") }
    }
}
