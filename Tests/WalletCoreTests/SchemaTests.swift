import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// SQLite's primary result code for a constraint violation (`SQLITE_CONSTRAINT`).
private let constraintCode: Int32 = 19

/// How each engine names a kind of constraint in its message; the triggers' messages are
/// the same on both.
private func wording(_ message: String) -> String {
    guard TestDatabase.isPostgres else { return message }
    return ["CHECK": "check constraint", "UNIQUE": "unique constraint", "FOREIGN KEY": "foreign key constraint"][message] ?? message
}

private func expectConstraint(_ message: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("the statement was accepted", sourceLocation: sourceLocation)
    } catch let error as DatabaseError {
        #expect(error.isConstraintViolation, "\(error)", sourceLocation: sourceLocation)
        #expect(error.sqlState != nil || error.code & 0xFF == constraintCode, "\(error)", sourceLocation: sourceLocation)
        #expect(error.message.contains(wording(message)), "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

/// Records `version` as the database's schema version, as a newer program would.
private func setSchemaVersion(_ raw: Database, _ version: Int64) throws {
    if raw.isPostgres {
        try raw.run("UPDATE schema_version SET version = ?", [.integer(version)])
    } else {
        try raw.execute("PRAGMA user_version = \(version)")
    }
}

@Suite("Schema")
struct SchemaTests {
    @Test("a fresh database migrates to the latest version", sqliteOnly)
    func freshDatabaseMigrates() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        #expect(Schema.latestVersion == Int64(Schema.migrations.count))
        #expect(try raw.scalarInteger("PRAGMA user_version") == Schema.latestVersion)
        let tables = try raw.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") { $0.text(0) }
        #expect(Set(tables).isSuperset(of: ["wallets", "transactions", "ledger", "idempotency", "processor_passes"]))
        #expect(try raw.scalarText("PRAGMA journal_mode") == "wal")
        #expect(try raw.scalarInteger("PRAGMA foreign_keys") == 1)
        #expect(try raw.scalarInteger("PRAGMA synchronous") == 2)  // FULL
    }

    @Test("migrating an up-to-date database again changes nothing", sqliteOnly)
    func migrateTwiceIsNoOp() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        let schemaBefore = try raw.query("SELECT type, name, sql FROM sqlite_master ORDER BY name") {
            "\($0.text(0)) \($0.text(1)) \($0.optionalText(2) ?? "")"
        }
        try Schema.migrate(raw)
        _ = try database.connection()
        #expect(try raw.scalarInteger("PRAGMA user_version") == Schema.latestVersion)
        let schemaAfter = try raw.query("SELECT type, name, sql FROM sqlite_master ORDER BY name") {
            "\($0.text(0)) \($0.text(1)) \($0.optionalText(2) ?? "")"
        }
        #expect(schemaAfter == schemaBefore)
    }

    @Test("a database newer than this program is refused, read-write or query-only")
    func tooNewRefused() throws {
        let database = try TestDatabase()
        try setSchemaVersion(database.store.database, Schema.latestVersion + 1)
        let error = #expect(throws: Schema.TooNewError.self) { try database.connection() }
        #expect(error?.found == Schema.latestVersion + 1)
        #expect(error?.description.contains("upgrade") == true)
        #expect(throws: Schema.TooNewError.self) { try database.connection(queryOnly: true) }
        #expect(throws: Schema.TooNewError.self) { try Schema.migrate(database.store.database) }
        // Refusing changed nothing.
        #expect(try database.store.database.schemaVersion() == Schema.latestVersion + 1)
    }

    @Test("a query-only connection to a current database opens and refuses writes")
    func queryOnlyRefusesWrites() throws {
        let database = try TestDatabase()
        let reader = try database.connection(queryOnly: true)
        #expect(try reader.database.scalarInteger("SELECT count(*) FROM wallets") == 0)
        #expect(throws: DatabaseError.self) {
            try reader.database.run("INSERT INTO wallets (uuid, created_at, updated_at) VALUES (?, 0, 0)", [.text(WalletID.random().text)])
        }
    }

    @Test("wallet balance and held refuse negatives; zero and Int64.max are accepted")
    func walletChecks() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        let insert =
            "INSERT INTO wallets (uuid, balance, held, created_at, updated_at, api_key_id) VALUES (?, ?, ?, 0, 0, \(try database.store.write { try database.store.testKey() }))"
        try raw.run(insert, [.text(WalletID.random().text), .integer(0), .integer(0)])
        try raw.run(insert, [.text(WalletID.random().text), .integer(Int64.max), .integer(Int64.max)])
        expectConstraint("CHECK") { try raw.run(insert, [.text(WalletID.random().text), .integer(-1), .integer(0)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text(WalletID.random().text), .integer(0), .integer(-1)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("short"), .integer(0), .integer(0)]) }
        expectConstraint("CHECK") { try raw.run("UPDATE wallets SET balance = -1") }
        expectConstraint("UNIQUE") {
            let id = WalletID.random().text
            try raw.run(insert, [.text(id), .integer(0), .integer(0)])
            try raw.run(insert, [.text(id), .integer(0), .integer(0)])
        }
        // STRICT: text in an integer column is refused.
        #expect(throws: DatabaseError.self) { try raw.run(insert, [.text(WalletID.random().text), .text("ten"), .integer(0)]) }
    }

    @Test(
        "transaction amounts must be 1 to 10^15",
        arguments: [
            (1, true), (1_000_000_000_000_000, true), (0, false), (-1, false), (1_000_000_000_000_001, false),
        ] as [(Int64, Bool)])
    func amountChecks(amount: Int64, accepted: Bool) throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.run(
            "INSERT INTO wallets (id, uuid, created_at, updated_at, api_key_id) VALUES (1, ?, 0, 0, ?)",
            [.text(WalletID.random().text), .integer(try database.store.write { try database.store.testKey() }.rawValue)])
        let insert = {
            _ = try raw.run(
                """
                INSERT INTO transactions (wallet_id, type, status, amount, created_at, updated_at)
                VALUES (1, 'DEPOSIT', 'COMPLETED', ?, 0, 0)
                """, [.integer(amount)])
        }
        if accepted {
            try insert()
        } else {
            expectConstraint("CHECK") { try insert() }
        }
    }

    @Test("transaction rows keep status, type and next_attempt_at consistent", sqliteOnly)
    func transactionChecks() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.run(
            "INSERT INTO wallets (id, uuid, created_at, updated_at, api_key_id) VALUES (1, ?, 0, 0, ?)",
            [.text(WalletID.random().text), .integer(try database.store.write { try database.store.testKey() }.rawValue)])
        // Withdrawals carry a bank key of their own (version 2); deposits none.
        let insert = """
            INSERT INTO transactions (wallet_id, type, status, amount, created_at, updated_at, next_attempt_at, failure_reason, bank_key)
            VALUES (?1, ?2, ?3, 5, 0, 0, ?4, ?5, CASE WHEN ?2 = 'WITHDRAWAL' THEN 'wd_' || lower(hex(randomblob(16))) END)
            """
        try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("PENDING"), .integer(0), .null])
        try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("FAILED"), .null, .text("bank_rejected")])
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("REFUND"), .text("COMPLETED"), .null, .null]) }
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("DONE"), .null, .null]) }
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("DEPOSIT"), .text("PENDING"), .integer(0), .null]) }
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("PENDING"), .null, .null]) }
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("COMPLETED"), .integer(0), .null]) }
        expectConstraint("CHECK") { try raw.run(insert, [.integer(1), .text("WITHDRAWAL"), .text("FAILED"), .null, .text("oops")]) }
        expectConstraint("FOREIGN KEY") { try raw.run(insert, [.integer(99), .text("WITHDRAWAL"), .text("PENDING"), .integer(0), .null]) }
    }

    @Test("every withdrawal has its own bank key from the start and keeps it; deposits have none")
    func bankKeys() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.run(
            "INSERT INTO wallets (id, uuid, created_at, updated_at, api_key_id) VALUES (1, ?, 0, 0, ?)",
            [.text(WalletID.random().text), .integer(try database.store.write { try database.store.testKey() }.rawValue)])
        let insert = """
            INSERT INTO transactions (wallet_id, type, status, amount, created_at, updated_at, next_attempt_at, bank_key)
            VALUES (1, ?1, ?2, 5, 0, 0, ?3, ?4)
            """
        try raw.run(insert, [.text("WITHDRAWAL"), .text("PENDING"), .integer(0), .text("wd_a")])
        try raw.run(insert, [.text("DEPOSIT"), .text("COMPLETED"), .null, .null])
        expectConstraint("bank key") { try raw.run(insert, [.text("WITHDRAWAL"), .text("PENDING"), .integer(0), .null]) }
        expectConstraint("bank key") { try raw.run(insert, [.text("DEPOSIT"), .text("COMPLETED"), .null, .text("wd_b")]) }
        expectConstraint("UNIQUE") { try raw.run(insert, [.text("WITHDRAWAL"), .text("PENDING"), .integer(0), .text("wd_a")]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("WITHDRAWAL"), .text("PENDING"), .integer(0), .text("")]) }
        expectConstraint("never changes") { try raw.run("UPDATE transactions SET bank_key = 'wd_c' WHERE bank_key = 'wd_a'") }
        expectConstraint("never changes") { try raw.run("UPDATE transactions SET bank_key = NULL WHERE bank_key = 'wd_a'") }
        // Other columns of a withdrawal still change.
        try raw.run("UPDATE transactions SET status = 'CANCELED', next_attempt_at = NULL, failure_reason = 'canceled' WHERE bank_key = 'wd_a'")
    }

    @Test("version 2 keeps the bank key that existing withdrawals were paid with")
    func versionTwoKeepsExistingKeys() throws {
        let path = "/tmp/walletcore-test-\(WalletID.random().text).db"
        defer { TestDatabase.remove(path) }
        let wallet = WalletID.random()
        do {
            let raw = try Database(path: path)
            try raw.immediateTransaction {
                try raw.execute(Schema.migrations[0])
                try raw.execute("PRAGMA user_version = 1")
                try raw.run("INSERT INTO wallets (id, uuid, balance, created_at, updated_at) VALUES (7, ?, 100, 0, 0)", [.text(wallet.text)])
                try raw.run(
                    """
                    INSERT INTO transactions (id, wallet_id, type, status, amount, created_at, updated_at, next_attempt_at)
                    VALUES (41, 7, 'DEPOSIT', 'COMPLETED', 100, 0, 0, NULL), (42, 7, 'WITHDRAWAL', 'PROCESSING', 30, 0, 0, 5)
                    """)
            }
        }
        let store = try Store.open(location: path)
        #expect(try store.database.scalarInteger("PRAGMA user_version") == Schema.latestVersion)
        let keys = try store.database.query("SELECT id, bank_key FROM transactions ORDER BY id") { ($0.integer(0), $0.optionalText(1)) }
        #expect(keys.map(\.0) == [41, 42])
        #expect(keys.map(\.1) == [nil, "\(wallet.text):42"])
        // New withdrawals get a random key.
        let scheduled = try store.database.immediateTransaction {
            try store.scheduleWithdrawal(
                from: wallet, by: .operator, amount: Amount(minorUnits: 5)!, scheduledFor: .now(), idempotencyKey: nil, now: .now()
            ).get()
                .id
        }
        let key = try store.database.queryFirst("SELECT bank_key FROM transactions WHERE id = ?", [.integer(scheduled)]) { $0.text(0) }
        #expect(key?.hasPrefix(BankKey.prefix) == true)
    }

    @Test("version 3 gives the wallets and stored answers made before API keys to a key with no secret")
    func versionThreeOwnsExistingWallets() throws {
        let path = "/tmp/walletcore-test-\(WalletID.random().text).db"
        defer { TestDatabase.remove(path) }
        let wallet = WalletID.random()
        do {
            let raw = try Database(path: path)
            try raw.immediateTransaction {
                try raw.execute(Schema.migrations[0])
                try raw.execute(Schema.migrations[1])
                try raw.execute("PRAGMA user_version = 2")
                try raw.run("INSERT INTO wallets (id, uuid, balance, created_at, updated_at) VALUES (7, ?, 0, 0, 0)", [.text(wallet.text)])
                try raw.run("INSERT INTO idempotency (key, fingerprint, status, body, created_at) VALUES ('k', 'f', 201, '{}', 0)")
            }
        }
        let store = try Store.open(location: path)
        let keys = try store.apiKeys()
        #expect(keys.map(\.name) == ["wallets-before-api-keys"])
        let legacy = try #require(keys.first)
        #expect(!legacy.hasSecret && legacy.wallets == 1)
        #expect(try store.wallet(wallet)?.owner == legacy.id)
        #expect(try store.storedResponse(forKey: "k", of: legacy.id)?.status == 201)
        // Nobody can use it, and nobody can be given wallets through it.
        #expect(try store.wallet(wallet, visibleTo: .client(APIKeyID(legacy.id.rawValue + 1))) == nil)
        let fresh = try store.write { try store.createAPIKey(name: "new-client", digest: APIKeySecret.random().digest, now: .now()) }
        #expect(try store.write { try store.assignWallet(wallet, to: legacy.id, now: .now()) } == .failure(.apiKeyNotUsable))
        #expect(try store.write { try store.assignWallet(wallet, to: fresh.id, now: .now()) }.map(\.owner) == .success(fresh.id))
        #expect(try store.wallet(wallet, visibleTo: .client(fresh.id)) != nil)
        #expect(try store.wallet(wallet, visibleTo: .client(legacy.id)) == nil)
    }

    @Test("version 7 keeps the single chain of the rows before it, chains later rows per wallet, and old anchors still hold")
    func versionSevenChainsPerWallet() throws {
        let path = "/tmp/walletcore-test-\(WalletID.random().text).db"
        defer { TestDatabase.remove(path) }
        let (first, second) = (WalletID.random(), WalletID.random())
        // A ledger written before version 7: three rows, one chain through the whole ledger.
        var legacy: [LedgerRow] = []
        do {
            let raw = try Database(path: path)
            try raw.immediateTransaction {
                for migration in Schema.migrations.prefix(6) { try raw.execute(migration) }
                try raw.execute("PRAGMA user_version = 6")
                try raw.run(
                    "INSERT INTO api_keys (id, name, digest, created_at) VALUES (1, 'client', ?, 0)", [.text(String(repeating: "a", count: 64))])
                try raw.run(
                    "INSERT INTO wallets (id, uuid, balance, created_at, updated_at, api_key_id) VALUES (1, ?, 150, 0, 0, 1), (2, ?, 70, 0, 0, 1)",
                    [.text(first.text), .text(second.text)])
                var previous = Store.genesisHash
                for (id, wallet, amount, after) in [(Int64(1), Int64(1), Int64(100), Int64(100)), (2, 2, 70, 70), (3, 1, 50, 150)] {
                    try raw.run(
                        """
                        INSERT INTO transactions (id, wallet_id, type, status, amount, executed_at, created_at, updated_at)
                        VALUES (?1, ?2, 'DEPOSIT', 'COMPLETED', ?3, ?1, ?1, ?1)
                        """, [.integer(id), .integer(wallet), .integer(amount)])
                    let input = Store.ledgerHashInput(
                        previousHash: previous, id: id, walletRowID: wallet, transactionID: id, kind: "DEPOSIT", delta: amount,
                        balanceAfter: after, createdAt: id)
                    previous = SHA256.hex(Array(input.utf8))
                    try raw.run(
                        "INSERT INTO ledger (id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash) VALUES (?1, ?2, ?1, 'DEPOSIT', ?3, ?4, ?1, ?5)",
                        [.integer(id), .integer(wallet), .integer(amount), .integer(after), .text(previous)])
                    legacy.append(
                        LedgerRow(
                            id: id, walletRowID: wallet, transactionID: id, kind: "DEPOSIT", delta: amount, balanceAfter: after, createdAt: id,
                            hash: previous, walletChain: 0))
                }
            }
        }
        // An anchor an auditor took before the upgrade: on the single chain, the last row's hash.
        let anchor = legacy.reduce(LedgerCheckpoint.genesis) { $0.next($1) }
        #expect(anchor == LedgerCheckpoint(ledgerID: 3, hash: legacy[2].hash))

        let store = try Store.open(location: path)
        #expect(try store.schemaVersion() == 7)
        try store.write {
            _ = try store.deposit(to: second, by: .operator, amount: Amount(minorUnits: 5)!, idempotencyKey: nil, now: .now()).get()
            _ = try store.deposit(to: first, by: .operator, amount: Amount(minorUnits: 7)!, idempotencyKey: nil, now: .now()).get()
        }
        let rows = try ledgerRows(store)
        #expect(rows.prefix(3).map(\.hash) == legacy.map(\.hash), "rows before version 7 are never rehashed")
        #expect(rows.map(\.walletChain) == [0, 0, 0, 1, 1])
        // Row 4 (the second wallet's) chains from row 2, its wallet's last row, not from row 3.
        let fourth = Store.ledgerHashInput(
            previousHash: legacy[1].hash, id: 4, walletRowID: 2, transactionID: rows[3].transactionID, kind: "DEPOSIT", delta: 5,
            balanceAfter: 75, createdAt: rows[3].createdAt)
        #expect(rows[3].hash == SHA256.hex(Array(fourth.utf8)))
        #expect(brokenHashLinks(rows).isEmpty)

        let report = try Auditor(store: store).verify(anchors: [anchor])
        #expect(report.passed, "\(report.discrepancies)")
        #expect(report.anchors.map(\.held) == [true])
        #expect(report.checkpoint == rows.reduce(LedgerCheckpoint.genesis) { $0.next($1) })

        // The single chain still finds a removed row by its id, as before.
        try store.database.dropTrigger("ledger_no_delete", on: "ledger")
        try store.database.execute("DELETE FROM ledger WHERE id = 2")
        let kinds = Set(try Auditor(store: store).verify(anchors: [anchor]).discrepancies.map(\.kind))
        #expect(kinds.isSuperset(of: [.ledgerGap, .brokenHashChain, .anchorMismatch]))
    }

    @Test("a fresh database makes no key of its own, and a wallet must have an owner")
    func walletsNeedAnOwner() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        #expect(try raw.scalarInteger("SELECT count(*) FROM api_keys") == 0)
        expectConstraint("belongs to an API key") {
            try raw.run("INSERT INTO wallets (uuid, created_at, updated_at) VALUES (?, 0, 0)", [.text(WalletID.random().text)])
        }
        let wallet = WalletID.random()
        try database.store.write { _ = try database.store.createWallet(id: wallet, now: .now()) }
        expectConstraint("belongs to an API key") { try raw.run("UPDATE wallets SET api_key_id = NULL") }
        expectConstraint("FOREIGN KEY") { try raw.run("UPDATE wallets SET api_key_id = 999") }
        expectConstraint("never deleted") { try raw.run("DELETE FROM api_keys") }
        expectConstraint("digest never changes") { try raw.run("UPDATE api_keys SET digest = ?", [.text(String(repeating: "0", count: 64))]) }
        try raw.run("UPDATE api_keys SET revoked_at = 5")
        expectConstraint("stays revoked") { try raw.run("UPDATE api_keys SET revoked_at = NULL") }
    }

    @Test("the ledger refuses UPDATE and DELETE, and inconsistent rows")
    func ledgerIsAppendOnly() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.database.immediateTransaction {
            _ = try store.createWallet(id: wallet, now: .now())
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 100)!, idempotencyKey: nil, now: .now()).get()
        }
        let raw = store.database
        expectConstraint("append-only") { try raw.run("UPDATE ledger SET delta = 1000") }
        expectConstraint("append-only") { try raw.run("UPDATE ledger SET hash = hash") }
        expectConstraint("append-only") { try raw.run("DELETE FROM ledger") }
        #expect(try raw.scalarInteger("SELECT count(*) FROM ledger") == 1)
        #expect(try raw.scalarInteger("SELECT delta FROM ledger") == 100)

        let insert = """
            INSERT INTO ledger (id, wallet_id, transaction_id, kind, delta, balance_after, created_at, hash)
            VALUES (2, 1, 1, ?, ?, ?, 0, ?)
            """
        let hash = String(repeating: "a", count: 64)
        expectConstraint("CHECK") { try raw.run(insert, [.text("DEPOSIT"), .integer(0), .integer(0), .text(hash)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("DEBIT"), .integer(5), .integer(0), .text(hash)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("REFUND"), .integer(-5), .integer(0), .text(hash)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("DEPOSIT"), .integer(5), .integer(-1), .text(hash)]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("DEPOSIT"), .integer(5), .integer(5), .text("short")]) }
        expectConstraint("CHECK") { try raw.run(insert, [.text("DEPOSIT"), .integer(1_000_000_000_000_001), .integer(5), .text(hash)]) }
        try raw.run(insert, [.text("DEBIT"), .integer(-5), .integer(95), .text(hash)])
    }

    @Test("idempotency keys are unique")
    func idempotencyKeyUnique() throws {
        let database = try TestDatabase()
        let store = database.store
        let response = StoredResponse(fingerprint: "f", status: 200, body: "{}")
        try store.database.immediateTransaction { try store.store(response, forKey: "k", now: .now()) }
        expectConstraint("UNIQUE") { try store.database.immediateTransaction { try store.store(response, forKey: "k", now: .now()) } }
        #expect(try store.storedResponse(forKey: "k") == response)
        #expect(try store.storedResponse(forKey: "other") == nil)
    }
}
