import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

/// What only the PostgreSQL engine has to get right, checked without a server: the
/// placeholders, which value of `WALLET_DB` chooses it, what logs may show of it.
@Suite("PostgreSQL without a server")
struct PostgresOfflineTests {
    @Test(
        "? and ?N become $N, a bare ? taking the number after the largest so far; quotes and comments are left alone",
        arguments: [
            ("SELECT ?", "SELECT $1"),
            ("INSERT INTO t VALUES (?, ?, ?)", "INSERT INTO t VALUES ($1, $2, $3)"),
            ("WHERE a = ?1 AND (b = ?2 OR ?2 IS NULL) LIMIT ?10", "WHERE a = $1 AND (b = $2 OR $2 IS NULL) LIMIT $10"),
            ("WHERE a = ?2 AND b = ?", "WHERE a = $2 AND b = $3"),
            ("SELECT '?', \"?\" FROM t WHERE a = ?", "SELECT '?', \"?\" FROM t WHERE a = $1"),
            ("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || $1"),
            ("SELECT ? -- a comment?\n, ?", "SELECT $1 -- a comment?\n, $2"),
            ("SELECT /* ? */ ?", "SELECT /* ? */ $1"),
            ("SELECT 'unclosed ?", "SELECT 'unclosed ?"),
        ] as [(String, String)])
    func placeholders(sql: String, expected: String) {
        #expect(PostgresSQL.numberedParameters(sql) == expected)
    }

    @Test("WALLET_DB: a postgres URI or a conninfo is PostgreSQL; anything else an SQLite path")
    func locations() {
        #expect(DatabaseLocation("postgresql://db.example/wallet").isPostgres)
        #expect(DatabaseLocation("postgres://a,b/wallet?target_session_attrs=read-write").isPostgres)
        #expect(DatabaseLocation("host=/run/postgresql dbname=wallet").isPostgres)
        #expect(DatabaseLocation("var/wallet.db") == .sqlite(path: "var/wallet.db"))
        #expect(DatabaseLocation("/var/lib/wallet/wallet.db") == .sqlite(path: "/var/lib/wallet/wallet.db"))
    }

    @Test("logs show a server's hosts, ports and database name, never a user, password or option")
    func redacted() {
        let uri = Store.describe(location: "postgresql://wallet:hunter2@db1.example:5433,db2.example:5434/ledger?sslmode=require")
        #expect(uri == "postgresql host=db1.example,db2.example port=5433,5434 dbname=ledger")
        let conninfo = Store.describe(location: "host=/run/postgresql user=wallet password=hunter2 dbname=wallet")
        #expect(conninfo == "postgresql host=/run/postgresql port=(default) dbname=wallet")
        #expect(!Store.describe(location: "password=hunter2 host='unclosed").contains("hunter2"))
        #expect(Store.describe(location: "var/wallet.db") == "var/wallet.db")
    }

    @Test(
        "a WALLET_DB with a password, or one libpq cannot parse, is refused with a message of our own that never quotes it",
        arguments: [
            "postgresql://wallet:hunter2@127.0.0.1:1/wallet", "host=127.0.0.1 port=1 password=hunter2 dbname=wallet",
            "postgresql://wallet:hunter2%zz@127.0.0.1:1/wallet", "host=127.0.0.1 password='hunter2",
        ])
    func passwordsRefused(location: String) {
        do {
            _ = try Store.open(location: location)
            Issue.record("opened \(location)")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "\(error)")
            #expect("\(error)".contains("WALLET_DB"), "\(error)")
        }
    }

    @Test("both engines' schemas are at the same version")
    func sameVersion() {
        #expect(PostgresSchema.latestVersion == Schema.latestVersion)
    }
}

/// The PostgreSQL engine against a real server (`WALLET_TEST_POSTGRES`, `make test-postgres`).
@Suite("PostgreSQL", .enabled(if: TestDatabase.isPostgres, "needs WALLET_TEST_POSTGRES: a PostgreSQL server's conninfo"))
struct PostgresTests {
    @Test("a fresh database migrates to the latest version, with durable commits in UTC; migrating again changes nothing")
    func freshDatabase() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        #expect(try raw.schemaVersion() == Schema.latestVersion)
        #expect(try raw.scalarText("SHOW synchronous_commit") == "on")
        #expect(try raw.scalarText("SHOW TimeZone") == "UTC")
        let tables = {
            try raw.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1") { $0.text(0) }
        }
        let before = try tables()
        #expect(Set(before).isSuperset(of: ["wallets", "transactions", "ledger", "idempotency", "events", "schema_version"]))
        try Schema.migrate(raw)
        _ = try database.connection()
        #expect(try tables() == before)
        #expect(try raw.scalarInteger("SELECT count(*) FROM schema_version") == 1)
    }

    @Test("the ledger refuses UPDATE, DELETE and TRUNCATE, through its triggers")
    func ledgerAppendOnly() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallet = WalletID.random()
        try store.write {
            _ = try store.createWallet(id: wallet, now: .now())
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: 100)!, idempotencyKey: nil, now: .now()).get()
        }
        for sql in ["UPDATE ledger SET delta = 1000", "DELETE FROM ledger", "TRUNCATE ledger CASCADE", "TRUNCATE events CASCADE"] {
            let error = #expect(throws: DatabaseError.self) { try store.database.execute(sql) }
            #expect(error?.sqlState == "P0001" && error?.isConstraintViolation == true, "\(sql): \(String(describing: error))")
            #expect(error?.message.contains("append-only") == true)
        }
        #expect(try store.database.scalarInteger("SELECT delta FROM ledger") == 100)
    }

    @Test("a negative balance is refused by its CHECK")
    func balanceCheck() throws {
        let database = try TestDatabase()
        let store = database.store
        try store.write { _ = try store.createWallet(id: WalletID.random(), now: .now()) }
        let error = #expect(throws: DatabaseError.self) { try store.database.run("UPDATE wallets SET balance = -1") }
        #expect(error?.sqlState == "23514" && error?.isConstraintViolation == true)
    }

    @Test("a query-only store refuses writes, inside a transaction or not")
    func queryOnly() throws {
        let database = try TestDatabase()
        let reader = try database.connection(queryOnly: true)
        #expect(try reader.schemaVersion() == Schema.latestVersion)
        let error = #expect(throws: DatabaseError.self) {
            try reader.database.run(
                "INSERT INTO processor_passes (started_at, finished_at, claimed, completed, failed, retried) VALUES (0, 0, 0, 0, 0, 0)")
        }
        #expect(error?.sqlState == "25006")
        #expect(throws: DatabaseError.self) {
            try reader.write { try reader.recordPass(startedAt: .now(), finishedAt: .now(), claimed: 0, completed: 0, failed: 0, retried: 0) }
        }
    }

    @Test("a database that cannot be reached is a clear error, not a crash")
    func unreachable() throws {
        let server = try #require(TestDatabase.postgresServer)
        let error = #expect(throws: DatabaseError.self) { try Store.open(location: "\(server) dbname=t_missing") }
        #expect(error?.sqlState == "08001" && error?.isBusy == true, "\(String(describing: error))")
        #expect(error?.message.contains("t_missing") == true, "\(String(describing: error))")
    }

    @Test("a lost connection fails as busy, and the next use reconnects")
    func reconnects() throws {
        let database = try TestDatabase()
        let store = try database.connection()
        let pid = try #require(try store.database.scalarInteger("SELECT pg_backend_pid()"))
        #expect(try database.store.database.scalarInteger("SELECT pg_terminate_backend(CAST(? AS integer))::int", [.integer(pid)]) == 1)
        let error = #expect(throws: DatabaseError.self) { try store.schemaVersion() }
        #expect(error?.isBusy == true, "\(String(describing: error))")
        #expect(try store.schemaVersion() == Schema.latestVersion)
        #expect(try store.database.scalarInteger("SELECT pg_backend_pid()") != pid)
        // The new session has the same settings, and statements are prepared again.
        #expect(try store.database.scalarText("SHOW synchronous_commit") == "on")
        #expect(try store.write { try store.createWallet(id: WalletID.random(), now: .now()) }.balance == Money(minorUnits: 0))
    }

    @Test("a transaction on a connection the server closed while idle begins on a new one")
    func beginReconnects() throws {
        let database = try TestDatabase()
        let store = try database.connection()
        for kind in ["write", "read"] {
            let pid = try #require(try store.database.scalarInteger("SELECT pg_backend_pid()"))
            #expect(try database.store.database.scalarInteger("SELECT pg_terminate_backend(CAST(? AS integer))::int", [.integer(pid)]) == 1)
            let version = try kind == "write" ? store.write { try store.schemaVersion() } : store.read { try store.schemaVersion() }
            #expect(version == Schema.latestVersion, "\(kind)")
            #expect(try store.database.scalarInteger("SELECT pg_backend_pid()") != pid, "\(kind)")
        }
    }

    @Test("one connection found lost makes every connection of the process reconnect before its next statement")
    func oneLostConnectionResetsAll() throws {
        let database = try TestDatabase()
        let (first, second) = (try database.connection(), try database.connection())
        let secondPID = try #require(try second.database.scalarInteger("SELECT pg_backend_pid()"))
        let firstPID = try #require(try first.database.scalarInteger("SELECT pg_backend_pid()"))
        #expect(try database.store.database.scalarInteger("SELECT pg_terminate_backend(CAST(? AS integer))::int", [.integer(firstPID)]) == 1)
        #expect(throws: DatabaseError.self) { try first.database.scalarInteger("SELECT 1") }
        // The second connection was never cut, yet its next statement runs on a new session:
        // on a dead machine it would otherwise wait out its own timeout first.
        #expect(try second.database.scalarInteger("SELECT pg_backend_pid()") != secondPID)
        #expect(try first.database.scalarInteger("SELECT pg_backend_pid()") != firstPID)
    }

    private func deliveredEvents(_ store: Store, endpoint: Int64) throws -> [Int64] {
        try store.database.query("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = ?1 ORDER BY event_id", [.integer(endpoint)]) {
            $0.integer(0)
        }
    }

    @Test("a fan-out whose batch fills with events above the settled id stops at it, and an event still in flight is delivered in order")
    func fanOutStopsAtSettled() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let (first, second) = (try fundedWallet(store, 1), try fundedWallet(store, 1))
        let key = try store.write { try store.testKey() }
        let endpoint = try #require(
            try store.write {
                try store.createWebhookEndpoint(apiKeyID: key.rawValue, url: "https://example.com/h", patterns: ["*"], limit: 10, now: .now())
            })
        try store.write { try deposit(store, second, 1) }
        let settledBefore = try store.settledEventID()
        try store.write {
            try deposit(store, first, 2)  // an event id drawn, still in flight
            try other.write {
                try deposit(other, second, 3)  // two larger ones, committed
                try deposit(other, second, 4)
            }
            // A notifier that read the settled id just before, with a batch of two.
            _ = try other.write { try other.fanOutEvents(now: .now(), settled: settledBefore, batch: 2) }
        }
        while try other.write({ try other.fanOutEvents(now: .now(), settled: other.settledEventID()) }).behind {}
        let events = try store.database.query("SELECT id FROM events WHERE id >= ?1 ORDER BY id", [.integer(settledBefore)]) { $0.integer(0) }
        #expect(try deliveredEvents(store, endpoint: endpoint.id) == events)
        // Created in id order: delivered in id order.
        let created = try store.database.query("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = ?1 ORDER BY id", [.integer(endpoint.id)])
        {
            $0.integer(0)
        }
        #expect(created == events)
    }

    @Test("an endpoint is not created past an event still in flight: it waits for it, and gets every event after")
    func endpointWaitsForEventsInFlight() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let (first, second) = (try fundedWallet(store, 1), try fundedWallet(store, 1))
        let key = try store.write { try store.testKey() }
        func create(_ on: Store) throws -> WebhookEndpoint? {
            try on.write {
                try on.createWebhookEndpoint(apiKeyID: key.rawValue, url: "https://example.com/h", patterns: ["*"], limit: 10, now: .now())
            }
        }
        try store.write {
            try deposit(store, first, 2)  // in flight
            try other.write { try deposit(other, second, 3) }  // a larger id, committed
            // Started past the committed one, the endpoint would never get the one in flight;
            // it waits instead (here past the other connection's 50 ms, so it fails as busy).
            #expect(throws: DatabaseError.self) { try create(other) }
        }
        let endpoint = try #require(try create(other))
        try store.write { try deposit(store, first, 4) }
        while try other.write({ try other.fanOutEvents(now: .now(), settled: other.settledEventID()) }).behind {}
        let last = try #require(try store.database.scalarInteger("SELECT max(id) FROM events"))
        #expect(try deliveredEvents(store, endpoint: endpoint.id) == [last])
    }

    @Test("two processor steps that record and claim on the same two wallets take them in one order, and neither deadlocks")
    func processorStepsDoNotDeadlock() throws {
        let database = try TestDatabase()
        let store = database.store
        let wallets = [try fundedWallet(store, 1_000), try fundedWallet(store, 1_000)].sorted { $0.text < $1.text }
        let (a, b) = (wallets[0], wallets[1])
        let now = Timestamp.now()
        func schedule(_ wallet: WalletID, _ at: Timestamp) throws {
            _ = try store.write {
                try store.scheduleWithdrawal(
                    from: wallet, by: .operator, amount: Amount(minorUnits: 10)!, scheduledFor: at, idempotencyKey: nil, now: at
                ).get()
            }
        }
        let lease = now.adding(seconds: 600)
        // The first step holds a PROCESSING withdrawal of b to record, the second one of a.
        try schedule(b, now.adding(seconds: -100))
        let firstPayout = try #require(
            try store.write { try store.claimDue(owner: "p1", dueBy: now, now: now, leaseUntil: lease, limit: 1) }.payouts.first)
        try schedule(a, now.adding(seconds: -100))
        let secondPayout = try #require(
            try store.write { try store.claimDue(owner: "p2", dueBy: now, now: now, leaseUntil: lease, limit: 1) }.payouts.first)
        // Two PENDING ones due, a's first: each step's claim wants the other's wallet.
        try schedule(a, now.adding(seconds: -50))
        try schedule(b, now.adding(seconds: -40))
        let selected = Shared(0)
        let errors = Shared<[String]>([])
        let conninfo = database.path
        @Sendable func step(_ payout: Payout, _ owner: String, turn: Int) {
            do {
                let own = Store(database: try Database(postgres: conninfo, busyTimeoutMilliseconds: 10_000))
                try own.write {
                    // As ProcessorPass.step: the claim's rows first, then every wallet in one
                    // order. The first step selects first, so it takes a's due withdrawal and
                    // the second b's: each wants the wallet the other records.
                    while selected.current < turn { sleepMilliseconds(5) }
                    let due = try own.lockDue(dueBy: .now(), now: .now(), limit: 1)
                    selected.update { $0 += 1 }
                    while selected.current < 2 { sleepMilliseconds(5) }
                    try own.lockWallets([payout.wallet] + due.wallets)
                    var changes = ProcessorChanges()
                    _ = try own.record(payout, outcome: .paid, decision: .complete, owner: owner, now: .now(), into: &changes)
                    _ = try own.claim(due, owner: owner, now: .now(), leaseUntil: lease)
                }
            } catch {
                errors.update { $0.append("\(error)") }
            }
        }
        runOnThreads(2) { index in index == 0 ? step(firstPayout, "p1", turn: 0) : step(secondPayout, "p2", turn: 1) }
        #expect(errors.current.isEmpty)
        #expect(try Auditor(store: store).verify().passed)
    }

    /// A wallet with `balance`, made and funded on `store`.
    private func fundedWallet(_ store: Store, _ balance: Int64) throws -> WalletID {
        let wallet = WalletID.random()
        try store.write {
            _ = try store.createWallet(id: wallet, now: .now())
            _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: balance)!, idempotencyKey: nil, now: .now()).get()
        }
        return wallet
    }

    private func deposit(_ store: Store, _ wallet: WalletID, _ amount: Int64) throws {
        _ = try store.deposit(to: wallet, by: .operator, amount: Amount(minorUnits: amount)!, idempotencyKey: nil, now: .now()).get()
    }

    @Test("writers of different wallets run at once; one waiting for a wallet another holds fails as busy after the busy timeout")
    func rowLocks() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let (first, second) = (try fundedWallet(store, 100), try fundedWallet(store, 100))
        var error: DatabaseError?
        try store.write {
            try deposit(store, first, 1)
            // No lock for the whole database: the other wallet is written and committed
            // while this transaction holds the first.
            try other.write { try deposit(other, second, 2) }
            do {
                try other.write { try deposit(other, first, 3) }
            } catch let refused as DatabaseError {
                error = refused
            }
        }
        #expect(error?.isBusy == true, "\(String(describing: error))")
        #expect(error?.sqlState == "55P03")
        // Once the wallet is free the same connection writes; both chains and every balance hold.
        try other.write { try deposit(other, first, 3) }
        #expect(try store.wallet(first)?.balance.minorUnits == 104)
        #expect(try store.wallet(second)?.balance.minorUnits == 102)
        #expect(try Auditor(store: store).verify().passed)
    }

    @Test("a checkpoint and the event feed stop short of ids drawn by a transaction still open, and reach them once it ends")
    func settledIDs() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let (first, second) = (try fundedWallet(store, 100), try fundedWallet(store, 100))
        let before = try store.settledLedgerID()
        try store.write {
            try deposit(store, first, 1)  // draws the next ledger id and event id, and holds them
            try other.write { try deposit(other, second, 2) }  // a larger id, committed first
            let committed = try other.database.scalarInteger("SELECT max(id) FROM ledger") ?? 0
            #expect(committed == before + 2)
            // The id below it is still in flight: nothing past `before` is settled yet.
            #expect(throws: DatabaseError.self) { try other.settledLedgerID() }
            #expect(throws: DatabaseError.self) { try other.settledEventID() }
        }
        #expect(try other.settledLedgerID() == before + 2)
        let checkpoint = try #require(try other.read { try other.latestCheckpoint(settled: other.settledLedgerID()) })
        #expect(checkpoint.ledgerID == before + 2)
        #expect(try Auditor(store: store).verify(anchors: [checkpoint]).passed)
    }

    @Test("the settled id waits for a transaction that began after the last commit before it was read, and drew a smaller id")
    func settledWaitsForTransactionsBegunLate() throws {
        let database = try TestDatabase()
        let (first, second, reader) = (
            try Database(postgres: database.path), try Database(postgres: database.path),
            try Database(postgres: database.path, busyTimeoutMilliseconds: 50)
        )
        try first.execute("CREATE TABLE drawn (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")
        // The first transaction takes its id before the second; the second draws row 1,
        // the first row 2 and commits. The second's transaction id is then past every
        // completed one: a snapshot taken now does not list it among those in progress.
        try first.execute("BEGIN; SELECT pg_current_xact_id()")
        try second.execute("BEGIN; SELECT pg_current_xact_id(); INSERT INTO drawn DEFAULT VALUES")
        try first.execute("INSERT INTO drawn DEFAULT VALUES; COMMIT")
        #expect(throws: DatabaseError.self) { try reader.settledMaxID(of: "drawn") }
        try second.execute("COMMIT")
        #expect(try reader.settledMaxID(of: "drawn") == 2)
    }

    @Test("a claim skips withdrawals another processor's claim holds, and takes none twice")
    func claimsSkipLockedRows() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let now = Timestamp.now()
        var ids: [Int64] = []
        for _ in 0..<4 {
            let wallet = try fundedWallet(store, 100)
            ids.append(
                try store.write {
                    try store.scheduleWithdrawal(
                        from: wallet, by: .operator, amount: Amount(minorUnits: 10)!, scheduledFor: now, idempotencyKey: nil, now: now
                    ).get().id
                })
        }
        let lease = now.adding(seconds: 60)
        let (mine, theirs) = try store.write {
            let mine = try store.claimDue(owner: "one", dueBy: now, now: now, leaseUntil: lease, limit: 2)
            // While the first claim holds its two, the second takes the other two, without
            // waiting for the first.
            let theirs = try other.write { try other.claimDue(owner: "two", dueBy: now, now: now, leaseUntil: lease, limit: 10) }
            return (mine, theirs)
        }
        #expect(mine.payouts.count == 2 && theirs.payouts.count == 2)
        #expect(Set(mine.payouts.map(\.withdrawalID) + theirs.payouts.map(\.withdrawalID)) == Set(ids))
        // Leased now: nobody claims them again before the lease runs out.
        #expect(try other.write { try other.claimDue(owner: "three", dueBy: now, now: now, leaseUntil: lease, limit: 10) }.payouts.isEmpty)
        #expect(try Auditor(store: store).verify().passed)
    }

    @Test("a second request with an Idempotency-Key waits for the first one's transaction, and another key does not")
    func idempotencyKeyLock() throws {
        let database = try TestDatabase()
        let store = database.store
        let other = Store(database: try Database(postgres: database.path, busyTimeoutMilliseconds: 50))
        let client = try store.write { try store.createAPIKey(name: "client", digest: APIKeySecret.random().digest, now: .now()) }.id
        try store.write {
            try store.lockIdempotencyKey("key-1", of: client)
            do {
                try other.write { try other.lockIdempotencyKey("key-1", of: client) }
                Issue.record("the second lock on key-1 was granted")
            } catch let error as DatabaseError {
                #expect(error.isBusy)
            }
            try other.write { try other.lockIdempotencyKey("key-2", of: client) }
            try other.write { try other.lockIdempotencyKey("key-1", of: APIKeyID(client.rawValue + 1)) }
        }
        try other.write { try other.lockIdempotencyKey("key-1", of: client) }
    }

    @Test("writes run READ COMMITTED and with no statement timeout, whatever the server's or the role's defaults")
    func writeIsolation() throws {
        let database = try TestDatabase()
        let store = try database.connection()
        // A server configured for REPEATABLE READ: a write's snapshot would then be taken by
        // its lock's SELECT, before the wait, and miss the writes of the transaction it waited
        // for (a ledger or admin trail id, max + 1, would repeat).
        try store.database.execute("SET default_transaction_isolation = 'repeatable read'")
        #expect(try store.write { try store.database.scalarText("SHOW transaction_isolation") } == "read committed")
        #expect(try store.read { try store.database.scalarText("SHOW transaction_isolation") } == "repeatable read")
        // A database's or role's statement timeout would cancel a COMMIT waiting for the synchronous standby,
        // which PostgreSQL then reports as done; each session sets it back to none.
        let name = try #require(try store.database.scalarText("SELECT current_database()"))
        try database.store.database.execute("ALTER DATABASE \(name) SET statement_timeout = '5s'")
        let fresh = try database.connection()
        #expect(try fresh.database.scalarText("SHOW statement_timeout") == "0")
    }

    @Test("an error caught inside a transaction without a savepoint fails the commit instead of losing the work quietly")
    func abortedTransaction() throws {
        let database = try TestDatabase()
        let store = database.store
        #expect(throws: DatabaseError.self) {
            try store.write {
                _ = try store.createWallet(id: WalletID.random(), now: .now())
                _ = try? store.database.run("UPDATE wallets SET balance = -1")
            }
        }
        #expect(try store.database.scalarInteger("SELECT count(*) FROM wallets") == 0)
        // A savepoint keeps the rest of the transaction.
        try store.write {
            _ = try store.createWallet(id: WalletID.random(), now: .now())
            _ = try? store.database.savepoint { (try store.database.run("UPDATE wallets SET balance = -1"), true) }
        }
        #expect(try store.database.scalarInteger("SELECT count(*) FROM wallets") == 1)
    }

    @Test("values of every type bind and read back; text with a NUL is refused with a clear error")
    func values() throws {
        let database = try TestDatabase()
        let raw = database.store.database
        try raw.execute("CREATE TABLE v (i bigint, t text, b bytea)")
        try raw.run("INSERT INTO v VALUES (?, ?, ?)", [.integer(Int64.min), .text("héllo ✓"), .blob([0, 1, 254, 255])])
        try raw.run("INSERT INTO v VALUES (?, ?, ?)", [.null, .null, .null])
        let rows = try raw.query("SELECT i, t, b FROM v ORDER BY i NULLS LAST") { ($0.optionalInteger(0), $0.optionalText(1), $0.blob(2)) }
        #expect(rows.count == 2)
        #expect(rows[0].0 == Int64.min && rows[0].1 == "héllo ✓" && rows[0].2 == [0, 1, 254, 255])
        #expect(rows[1].0 == nil && rows[1].1 == nil)
        let error = #expect(throws: DatabaseError.self) { try raw.run("INSERT INTO v (t) VALUES (?)", [.text("a\u{0}b")]) }
        #expect(error?.message.contains("NUL") == true)
    }
}
