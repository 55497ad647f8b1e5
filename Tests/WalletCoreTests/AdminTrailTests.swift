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

/// A clock for processor passes that moves 10 µs at every reading, from a second ahead
/// of now: every change of a pass gets a time of its own, after anything the API wrote.
private final class SteppingClock: @unchecked Sendable {
    private var current = Timestamp.now().adding(seconds: 1)

    func next() -> Timestamp {
        current = current.adding(microseconds: 10)
        return current
    }
}

@Suite("Admin trail")
struct AdminTrailTests {
    private let actor = AdminActor(uid: 998, loginUID: 1000, sudoUID: nil)

    @Test("the login uid reads as a uid, unset (4294967295) as nil; SUDO_UID only when numeric")
    func actorParsing() {
        #expect(AdminActor.parseLoginUID("1000") == 1000)
        #expect(AdminActor.parseLoginUID("0\n") == 0)
        #expect(AdminActor.parseLoginUID("4294967295") == nil)
        #expect(AdminActor.parseLoginUID(nil) == nil)
        #expect(AdminActor.parseUID(" 42 ") == 42)
        for bad in ["", "abc", "-1", "1e3", "4294967296", "12 34", "+5", "99999999999"] { #expect(AdminActor.parseUID(bad) == nil, "\(bad)") }
        let current = AdminActor.current()
        #expect(current.uid == Int64(getuid()))
    }

    @Test("arguments are recorded as the command declares them, a secret one redacted")
    func redaction() {
        let command = AdminCommand(
            "keys create", ["owner": .text("alice \"a\""), "limit": .integer(5), "force": .flag(true), "token": .secret, "note": .text(nil)])
        #expect(command.argumentsJSON == #"{"owner": "alice \"a\"", "limit": 5, "force": true, "token": "[redacted]", "note": null}"#)
        #expect(AdminCommand("withdrawals cancel").argumentsJSON == "{}")
    }

    @Test("rows chain like the ledger's; the database refuses to change or remove one")
    func appendOnlyAndChained() throws {
        let database = try TestDatabase()
        let store = database.store
        let now = Timestamp(seconds: 1_800_000_000)
        let first = try store.write {
            try store.appendAdminAction(actor: actor, command: "withdrawals cancel", arguments: #"{"id": 1}"#, result: "ok", now: now)
        }
        let second = try store.write {
            try store.appendAdminAction(
                actor: AdminActor(uid: 0, loginUID: nil, sudoUID: 1000), command: "withdrawals cancel", arguments: #"{"id": 2}"#,
                result: "not_found", now: now.adding(seconds: 1))
        }
        #expect(first.id == 1 && second.id == 2)
        #expect(
            first.hash
                == SHA256.hex(
                    Array(
                        Store.adminHashInput(
                            previousHash: Store.genesisHash, id: 1, createdAt: now.microseconds, actor: actor, command: "withdrawals cancel",
                            arguments: #"{"id": 1}"#, result: "ok"
                        ).utf8)))
        #expect(try store.adminActions(limit: 10) == [second, first])
        #expect(try store.allAdminActions() == [first, second])
        #expect(second.json.contains(#""login_uid": null, "sudo_uid": 1000"#))
        for sql in ["UPDATE admin_actions SET result = 'ok'", "DELETE FROM admin_actions WHERE id = 2"] {
            #expect(throws: DatabaseError.self) { try store.database.execute(sql) }
        }
        let report = try Auditor(store: store).verify()
        #expect(report.passed && report.adminActions == 2 && report.adminHeadHash == second.hash)

        try store.database.dropTrigger("admin_actions_no_update", on: "admin_actions")
        try store.database.dropTrigger("admin_actions_no_delete", on: "admin_actions")
        try store.database.execute("UPDATE admin_actions SET arguments = '{\"id\": 3}' WHERE id = 1")
        #expect(try Auditor(store: store).verify().discrepancies.map(\.kind) == [.brokenAdminChain])
        try store.database.execute("DELETE FROM admin_actions WHERE id = 1")
        #expect(try Auditor(store: store).verify().discrepancies.map(\.kind) == [.adminGap, .brokenAdminChain])
    }

    @Test("a text field cannot pass for a separator")
    func fieldsAreQuoted() {
        let a = Store.adminHashInput(previousHash: "p", id: 1, createdAt: 2, actor: actor, command: "a|b", arguments: "{}", result: "ok")
        let b = Store.adminHashInput(previousHash: "p", id: 1, createdAt: 2, actor: actor, command: "a", arguments: "b|{}", result: "ok")
        #expect(a != b)
    }
}

@Suite("Ledger checkpoints")
struct LedgerCheckpointTests {
    @Test("an anchor is ID:HASH, a decimal id and 64 hex digits, read in either case")
    func anchorParsing() throws {
        let hash = String(repeating: "ab", count: 32)
        #expect(LedgerCheckpoint(anchor: "17:\(hash)") == LedgerCheckpoint(ledgerID: 17, hash: hash))
        #expect(LedgerCheckpoint(anchor: "17:\(hash.uppercased())")?.hash == hash)
        #expect(LedgerCheckpoint(anchor: "0:\(Store.genesisHash)") == .genesis)
        for bad in ["17", "17:", ":\(hash)", "-1:\(hash)", "+1:\(hash)", "x:\(hash)", "17:\(hash)0", "17:\(hash.dropLast())g", "17 :\(hash)"] {
            #expect(LedgerCheckpoint(anchor: bad) == nil, "\(bad)")
        }
        #expect(LedgerCheckpoint(ledgerID: 3, hash: hash).anchor == "3:\(hash)")
    }

    @Test("the checkpoint is a function of the rows' contents; on an intact ledger it is the chain's head")
    func checkpointDefinition() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        for amount in [100, 200, 300] as [Int64] { t.deposit(wallet, amount) }
        let store = t.database.store
        let rows = try store.ledgerRows()
        var expected = LedgerCheckpoint.genesis
        for row in rows {
            expected = expected.next(row)
            #expect(expected.hash == row.hash)
            #expect(try store.checkpoint(through: row.id) == expected)
        }
        #expect(try store.latestCheckpoint(settled: store.settledLedgerID()) == expected)
        #expect(try store.checkpoint(through: 0) == .genesis)
        #expect(try store.checkpoint(through: 4) == nil)
        // The stored hash column is not part of it: a broken chain leaves the checkpoint alone.
        try store.database.dropTrigger("ledger_no_update", on: "ledger")
        try store.database.execute("UPDATE ledger SET hash = '\(String(repeating: "f", count: 64))' WHERE id = 2")
        #expect(try store.latestCheckpoint(settled: store.settledLedgerID()) == expected)
    }

    @Test("a pass stores its checkpoint and the next continues from it, without reading the rows before")
    func incremental() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 100)
        t.deposit(wallet, 200)
        let store = try t.database.connection()
        try runPass(store, ScriptedBank(always: .paid))
        let first = try #require(try store.latestCheckpoint(settled: store.settledLedgerID()))
        #expect(try store.storedCheckpoints() == [first] && first.ledgerID == 2)
        // Continuing from the stored checkpoint: a forged stored hash carries forward, which
        // is how a pass proves it did not rehash the ledger (and what audit verify catches).
        try store.database.dropTrigger("ledger_checkpoints_no_update", on: "ledger_checkpoints")
        let forged = String(repeating: "1", count: 64)
        try store.database.execute("UPDATE ledger_checkpoints SET hash = '\(forged)'")
        t.deposit(wallet, 300)
        let rows = try store.ledgerRows()
        #expect(try store.latestCheckpoint(settled: store.settledLedgerID()) == LedgerCheckpoint(ledgerID: 2, hash: forged).next(rows[2]))
        let report = try Auditor(store: store).verify()
        #expect(report.discrepancies.map(\.kind) == [.checkpointMismatch])
        #expect(report.checkpoint.hash == rows[2].hash)
    }

    @Test("audit verify checks each anchor; a rewritten ledger with a recomputed chain fails it")
    func anchors() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 100)
        t.deposit(wallet, 200)
        let store = t.database.store
        let anchor = try #require(try store.latestCheckpoint(settled: store.settledLedgerID()))
        let report = try Auditor(store: store).verify(anchors: [anchor, .genesis])
        #expect(report.passed && report.anchors.map(\.held) == [true, true])

        // Rewrite row 1's time and recompute the chain: the ledger checks pass, the anchor fails.
        try store.database.dropTrigger("ledger_no_update", on: "ledger")
        try store.database.execute("UPDATE ledger SET created_at = created_at - 1 WHERE id = 1")
        var previous = Store.genesisHash
        for row in try store.ledgerRows() {
            let hash = SHA256.hex(Array(LedgerCheckpoint.stepInput(previous, row).utf8))
            try store.database.execute("UPDATE ledger SET hash = '\(hash)' WHERE id = \(row.id)")
            previous = hash
        }
        #expect(try Auditor(store: store).verify().passed)
        let failed = try Auditor(store: store).verify(anchors: [anchor])
        #expect(failed.discrepancies.map(\.kind) == [.anchorMismatch] && failed.anchors.map(\.held) == [false])
        let missing = try Auditor(store: store).verify(anchors: [LedgerCheckpoint(ledgerID: 9, hash: anchor.hash)])
        #expect(missing.discrepancies.map(\.detail) == ["the ledger has no row 9: rows were removed"])
    }
}

@Suite("Balance at a time")
struct BalanceAtTests {
    @Test("balance and held funds between the ledger rows of a deposit, a paid and a refunded withdrawal")
    func betweenRows() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 10_000)
        // Two passes on one stepping clock: every ledger row and settlement at a time of its own.
        let clock = SteppingClock()
        let processor = try t.database.connection()
        let paid = try t.dueWithdrawal(wallet, 3_000)
        try runPass(processor, ScriptedBank(always: .paid), clock: clock.next)
        let refunded = try t.dueWithdrawal(wallet, 2_000)
        try runPass(processor, ScriptedBank(always: .failed), processorSettings(maxRetries: 0), clock: clock.next)
        let store = t.reader
        func time(_ sql: String) throws -> Int64 { try #require(try store.database.scalarInteger(sql)) }
        let deposit = try time("SELECT created_at FROM ledger WHERE kind = 'DEPOSIT'")
        let paidDebit = try time("SELECT created_at FROM ledger WHERE transaction_id = \(paid)")
        let paidDone = try time("SELECT executed_at FROM transactions WHERE id = \(paid)")
        let refundedDebit = try time("SELECT created_at FROM ledger WHERE transaction_id = \(refunded) AND kind = 'DEBIT'")
        let refund = try time("SELECT created_at FROM ledger WHERE kind = 'REFUND'")
        #expect(deposit < paidDebit && paidDebit < paidDone && paidDone < refundedDebit && refundedDebit < refund)

        let wallet_ = try t.wallet(wallet)
        func at(_ micros: Int64) throws -> BalanceAt {
            try store.read { try store.balance(of: wallet_, at: Timestamp(microseconds: micros)) }
        }
        #expect(try at(deposit - 1) == BalanceAt(balance: 0, held: 0))
        #expect(try at(deposit) == BalanceAt(balance: 10_000, held: 0))
        #expect(try at(paidDebit) == BalanceAt(balance: 7_000, held: 3_000))
        #expect(try at(paidDone - 1).held == 3_000)
        #expect(try at(paidDone) == BalanceAt(balance: 7_000, held: 0))
        #expect(try at(refundedDebit - 1) == BalanceAt(balance: 7_000, held: 0))
        #expect(try at(refundedDebit) == BalanceAt(balance: 5_000, held: 2_000))
        #expect(try at(refund - 1) == BalanceAt(balance: 5_000, held: 2_000))
        #expect(try at(refund) == BalanceAt(balance: 7_000, held: 0))
        #expect(try at(Int64.max / 2) == BalanceAt(balance: wallet_.balance.minorUnits, held: wallet_.held.minorUnits))
    }

    @Test("the route: 200 with the time in UTC, invalid_at for a bad time, 404 for an unknown wallet")
    func route() throws {
        let t = try TestAPI()
        let wallet = try t.createWallet()
        t.deposit(wallet, 500)
        let now = t.send("GET", "/wallets/\(wallet)/balance")
        #expect(now.status == 200)
        #expect(now.json["wallet"] == .string(wallet.text) && now.json["balance"]?.integer == 500 && now.json["held"]?.integer == 0)
        #expect(now.json["at"]?.string.flatMap { Timestamp(rfc3339: $0) } != nil)
        let before = t.send("GET", "/wallets/\(wallet)/balance/", query: "at=2001-02-03T04:05:06.5%2B01:00")
        #expect(before.status == 200)
        #expect(before.json["at"] == .string("2001-02-03T03:05:06.500000Z") && before.json["balance"]?.integer == 0)
        for bad in ["at=", "at=2026-01-01", "at=2026-01-01T00:00:00", "at=2026-13-01T00:00:00Z"] {
            expectError(t.send("GET", "/wallets/\(wallet)/balance", query: bad), status: 400, code: "invalid_at", field: "at")
        }
        expectError(t.send("GET", "/wallets/\(WalletID.random())/balance"), status: 404, code: "not_found")
        expectError(t.send("POST", "/wallets/\(wallet)/balance"), status: 405, code: "method_not_allowed")
        let head = t.send("HEAD", "/wallets/\(wallet)/balance")
        #expect(head.status == 200 && head.omitsBody)
    }

    @Test("the lookups use the migration's indexes", sqliteOnly)
    func indexed() throws {
        let t = try TestAPI()
        let plan = try t.reader.database.query(
            "EXPLAIN QUERY PLAN SELECT balance_after FROM ledger WHERE wallet_id = 1 AND created_at <= 5 ORDER BY created_at DESC, id DESC LIMIT 1"
        ) { $0.text(3) }
        #expect(plan.contains { $0.contains("ledger_by_wallet_time") }, "\(plan)")
        let heldPlan = try t.reader.database.query(
            """
            EXPLAIN QUERY PLAN SELECT t.id FROM transactions t
            WHERE t.wallet_id = 1 AND t.type = 'WITHDRAWAL' AND t.status = 'COMPLETED' AND t.updated_at > 5
            """
        ) { $0.text(3) }
        #expect(heldPlan.contains { $0.contains("transactions_by_wallet_status") }, "\(heldPlan)")
    }
}
