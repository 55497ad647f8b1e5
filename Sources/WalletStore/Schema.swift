import WalletDomain
import WalletJSON
import WalletPlatform

/// The database schema as an ordered list of migrations, tracked by `PRAGMA user_version`.
///
/// Migrations are append-only: once one has shipped it is never edited, and a change is a
/// new migration at the end. The database is the first line of defence: `STRICT` tables,
/// `CHECK`s that mirror the domain's limits, foreign keys, and triggers that keep the ledger
/// append-only.
public enum Schema {
    public static let migrations: [String] = [version1, version2, version3, adminTrail, events, apiKeyChanges, walletChains]

    /// The version this binary writes. A database with a newer version was migrated by a
    /// newer binary, and this one refuses to touch it.
    public static var latestVersion: Int64 { Int64(migrations.count) }

    public struct TooNewError: Error, CustomStringConvertible {
        public let found: Int64
        public var description: String {
            "the database schema is version \(found), newer than this program's \(Schema.latestVersion); upgrade the program"
        }
    }

    /// Brings the database to the latest version. Runs under `BEGIN IMMEDIATE`, so when the
    /// responder, the processor and walletctl start at once, one migrates and the others,
    /// waiting on the lock, then find nothing left to do.
    public static func migrate(_ database: Database) throws {
        // PostgreSQL has a migration list of its own (Schema+PostgreSQL.swift).
        if database.isPostgres { return try PostgresSchema.migrate(database) }
        try database.immediateTransaction {
            let current = try database.scalarInteger("PRAGMA user_version") ?? 0
            guard current <= latestVersion else { throw TooNewError(found: current) }
            for version in Int(current)..<migrations.count {
                try database.execute(migrations[version])
            }
            if current < latestVersion {
                try database.execute("PRAGMA user_version = \(latestVersion)")
            }
        }
    }

    static let version1 = """
        CREATE TABLE wallets (
            id          INTEGER PRIMARY KEY,
            uuid        TEXT    NOT NULL UNIQUE CHECK (length(uuid) = 36),
            balance     INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
            -- Debited for withdrawals still PROCESSING: money that may yet come back by refund.
            -- A deposit must leave room for it, so that a refund can never overflow.
            held        INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
            created_at  INTEGER NOT NULL,
            updated_at  INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE transactions (
            id                 INTEGER PRIMARY KEY,
            wallet_id          INTEGER NOT NULL REFERENCES wallets(id),
            type               TEXT    NOT NULL CHECK (type IN ('DEPOSIT', 'WITHDRAWAL')),
            status             TEXT    NOT NULL CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELED')),
            amount             INTEGER NOT NULL CHECK (amount > 0 AND amount <= 1000000000000000),
            scheduled_for      INTEGER,
            executed_at        INTEGER,
            created_at         INTEGER NOT NULL,
            updated_at         INTEGER NOT NULL,
            attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            -- When the processor should next look at this withdrawal: its scheduled time while
            -- PENDING, the next bank attempt while PROCESSING, NULL once final.
            next_attempt_at    INTEGER,
            -- A processor's claim: until lease_until no other processor touches the row.
            lease_owner        TEXT,
            lease_until        INTEGER,
            -- 1 from the moment a bank call may be in flight until its outcome is recorded.
            -- Found still 1 by a later claim, it means a processor died mid-call.
            bank_call_open     INTEGER NOT NULL DEFAULT 0 CHECK (bank_call_open IN (0, 1)),
            -- 1 once the bank may have paid without our knowing (an unknown outcome or a
            -- processor that died mid-call); until a definite answer clears it, the
            -- withdrawal is never refunded.
            bank_may_have_paid INTEGER NOT NULL DEFAULT 0 CHECK (bank_may_have_paid IN (0, 1)),
            failure_reason     TEXT CHECK (failure_reason IN
                ('insufficient_funds', 'bank_rejected', 'bank_unreachable', 'canceled', 'bank_outcome_unknown')),
            idempotency_key    TEXT,
            CHECK (type = 'WITHDRAWAL' OR (status = 'COMPLETED' AND next_attempt_at IS NULL)),
            CHECK ((status IN ('PENDING', 'PROCESSING')) = (next_attempt_at IS NOT NULL))
        ) STRICT;

        -- The processor's question: what is due now?
        CREATE INDEX transactions_due ON transactions (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
        -- A wallet's transactions, newest first, for the list route and its cursor.
        CREATE INDEX transactions_by_wallet ON transactions (wallet_id, id);

        -- One row per balance change, in the same transaction as the change. The sum of a
        -- wallet's deltas is its balance. Each row carries the SHA-256 of the previous row's
        -- hash and its own content, so a changed, removed or reordered row breaks the chain.
        CREATE TABLE ledger (
            id              INTEGER PRIMARY KEY,
            wallet_id       INTEGER NOT NULL REFERENCES wallets(id),
            transaction_id  INTEGER NOT NULL REFERENCES transactions(id),
            kind            TEXT    NOT NULL CHECK (kind IN ('DEPOSIT', 'DEBIT', 'REFUND')),
            delta           INTEGER NOT NULL CHECK (delta <> 0 AND delta BETWEEN -1000000000000000 AND 1000000000000000),
            balance_after   INTEGER NOT NULL CHECK (balance_after >= 0),
            created_at      INTEGER NOT NULL,
            hash            TEXT    NOT NULL CHECK (length(hash) = 64),
            CHECK ((kind = 'DEBIT') = (delta < 0))
        ) STRICT;
        CREATE INDEX ledger_by_wallet ON ledger (wallet_id);
        CREATE INDEX ledger_by_transaction ON ledger (transaction_id);

        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
        BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
        BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;

        -- Stored answers to requests that carried an Idempotency-Key.
        CREATE TABLE idempotency (
            key          TEXT    PRIMARY KEY,
            fingerprint  TEXT    NOT NULL,
            status       INTEGER NOT NULL,
            body         TEXT    NOT NULL,
            created_at   INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX idempotency_by_age ON idempotency (created_at);

        -- One row per processor pass, for `walletctl stats` and the operator's eye.
        CREATE TABLE processor_passes (
            id           INTEGER PRIMARY KEY,
            started_at   INTEGER NOT NULL,
            finished_at  INTEGER NOT NULL,
            claimed      INTEGER NOT NULL,
            completed    INTEGER NOT NULL,
            failed       INTEGER NOT NULL,
            retried      INTEGER NOT NULL
        ) STRICT;
        """

    /// Every withdrawal gets a random bank key of its own, stored when it is created and sent
    /// as the bank's `Idempotency-Key` on every attempt. The key of version 1 was
    /// `<wallet uuid>:<transaction id>`, and a database restored from a backup hands out
    /// transaction ids again: a new withdrawal could then get the key of an old payout, and
    /// the bank would answer the old payout's success for it. Existing withdrawals keep the
    /// key they were paid (or are being paid) with; deposits have none.
    static let version2 = """
        ALTER TABLE transactions ADD COLUMN bank_key TEXT CHECK (bank_key IS NULL OR length(bank_key) BETWEEN 1 AND 255);
        UPDATE transactions SET bank_key = (SELECT uuid FROM wallets WHERE wallets.id = transactions.wallet_id) || ':' || id
        WHERE type = 'WITHDRAWAL';
        -- One payout per key, and `walletctl reconcile` finds a bank ledger line's withdrawal by it.
        CREATE UNIQUE INDEX transactions_by_bank_key ON transactions (bank_key);

        -- A withdrawal has its key from the start and keeps it; a deposit never has one. (A
        -- column added to a table with rows cannot get a CHECK that the existing rows fail
        -- until the UPDATE above has run, hence triggers.)
        CREATE TRIGGER transactions_bank_key_on_insert BEFORE INSERT ON transactions
        WHEN (NEW.type = 'WITHDRAWAL') <> (NEW.bank_key IS NOT NULL)
        BEGIN SELECT RAISE(ABORT, 'a withdrawal has a bank key and a deposit has none'); END;
        CREATE TRIGGER transactions_bank_key_fixed BEFORE UPDATE OF bank_key ON transactions
        WHEN OLD.bank_key IS NOT NEW.bank_key
        BEGIN SELECT RAISE(ABORT, 'a bank key never changes'); END;
        """

    /// API keys. Every wallet belongs to the key that created it, and idempotency keys are
    /// scoped to the API key that sent them. Only a key's SHA-256 digest is stored. The
    /// wallets that existed before this version (and their stored answers) go to a key
    /// made here, named `wallets-before-api-keys`, which has no secret: nobody can use it,
    /// and the operator hands its wallets over with `walletctl wallets assign`.
    static let version3 = """
        CREATE TABLE api_keys (
            id            INTEGER PRIMARY KEY,
            name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
            -- Lower-case hex SHA-256 of the key; NULL only for the key made below.
            digest        TEXT    UNIQUE CHECK (digest IS NULL OR length(digest) = 64),
            created_at    INTEGER NOT NULL,
            revoked_at    INTEGER,
            last_used_at  INTEGER
        ) STRICT;

        INSERT INTO api_keys (name, digest, created_at)
        SELECT 'wallets-before-api-keys', NULL, unixepoch() * 1000000
        WHERE EXISTS (SELECT 1 FROM wallets) OR EXISTS (SELECT 1 FROM idempotency);

        -- A key is made with its digest or not at all, and revoked at most once.
        CREATE TRIGGER api_keys_digest_fixed BEFORE UPDATE OF digest ON api_keys
        WHEN OLD.digest IS NOT NEW.digest
        BEGIN SELECT RAISE(ABORT, 'an API key''s digest never changes'); END;
        CREATE TRIGGER api_keys_revocation_final BEFORE UPDATE OF revoked_at ON api_keys
        WHEN OLD.revoked_at IS NOT NULL AND OLD.revoked_at IS NOT NEW.revoked_at
        BEGIN SELECT RAISE(ABORT, 'a revoked API key stays revoked'); END;
        CREATE TRIGGER api_keys_no_delete BEFORE DELETE ON api_keys
        BEGIN SELECT RAISE(ABORT, 'API keys are revoked, never deleted'); END;

        -- (A column added with REFERENCES must default to NULL, so "every wallet has an
        -- owner" is kept by triggers.)
        ALTER TABLE wallets ADD COLUMN api_key_id INTEGER REFERENCES api_keys(id);
        UPDATE wallets SET api_key_id = (SELECT id FROM api_keys WHERE digest IS NULL);
        CREATE INDEX wallets_by_api_key ON wallets (api_key_id, id);
        CREATE TRIGGER wallets_owner_on_insert BEFORE INSERT ON wallets
        WHEN NEW.api_key_id IS NULL
        BEGIN SELECT RAISE(ABORT, 'a wallet belongs to an API key'); END;
        CREATE TRIGGER wallets_owner_kept BEFORE UPDATE OF api_key_id ON wallets
        WHEN NEW.api_key_id IS NULL
        BEGIN SELECT RAISE(ABORT, 'a wallet belongs to an API key'); END;

        CREATE TABLE idempotency_by_api_key (
            api_key_id   INTEGER NOT NULL REFERENCES api_keys(id),
            key          TEXT    NOT NULL,
            fingerprint  TEXT    NOT NULL,
            status       INTEGER NOT NULL,
            body         TEXT    NOT NULL,
            created_at   INTEGER NOT NULL,
            PRIMARY KEY (api_key_id, key)
        ) STRICT, WITHOUT ROWID;
        INSERT INTO idempotency_by_api_key (api_key_id, key, fingerprint, status, body, created_at)
        SELECT (SELECT id FROM api_keys WHERE digest IS NULL), key, fingerprint, status, body, created_at FROM idempotency;
        DROP TABLE idempotency;
        ALTER TABLE idempotency_by_api_key RENAME TO idempotency;
        CREATE INDEX idempotency_by_age ON idempotency (created_at);
        """

    /// The admin trail, the ledger's checkpoints and the indexes of the balance at a time.
    ///
    /// - `admin_actions`: one row per `walletctl` command that changes anything (or tried
    ///   to), written in the transaction of its change: who (the kernel's uid, the login uid,
    ///   sudo's uid), what (the command and its arguments, secrets redacted) and the result.
    ///   Append-only like the ledger, and hash-chained the same way (`Store.adminHashInput`).
    /// - `ledger_checkpoints`: the checkpoints the processor logged (docs/CHECKPOINTS.md),
    ///   so that the next pass continues from the last one instead of rehashing the ledger.
    /// - A wallet's ledger rows by time, and its withdrawals by status and last change: the
    ///   balance and held funds at a time are then lookups (`Store.balance(of:at:)`).
    static let adminTrail = """
        CREATE TABLE admin_actions (
            id          INTEGER PRIMARY KEY,
            created_at  INTEGER NOT NULL,
            -- getuid(): who the process ran as.
            uid         INTEGER NOT NULL CHECK (uid >= 0),
            -- /proc/self/loginuid: who logged in, kept through su and sudo; NULL when unset.
            login_uid   INTEGER CHECK (login_uid IS NULL OR login_uid >= 0),
            -- $SUDO_UID: who ran sudo, when walletctl ran under it.
            sudo_uid    INTEGER CHECK (sudo_uid IS NULL OR sudo_uid >= 0),
            command     TEXT    NOT NULL CHECK (length(command) BETWEEN 1 AND 200),
            -- A JSON object of the command's arguments, each secret one as "[redacted]".
            arguments   TEXT    NOT NULL CHECK (length(arguments) BETWEEN 2 AND 10000),
            -- "ok", or the code of the error that stopped it.
            result      TEXT    NOT NULL CHECK (length(result) BETWEEN 1 AND 200),
            hash        TEXT    NOT NULL CHECK (length(hash) = 64)
        ) STRICT;
        CREATE TRIGGER admin_actions_no_update BEFORE UPDATE ON admin_actions
        BEGIN SELECT RAISE(ABORT, 'admin actions are append-only'); END;
        CREATE TRIGGER admin_actions_no_delete BEFORE DELETE ON admin_actions
        BEGIN SELECT RAISE(ABORT, 'admin actions are append-only'); END;

        CREATE TABLE ledger_checkpoints (
            ledger_id   INTEGER PRIMARY KEY CHECK (ledger_id > 0),
            hash        TEXT    NOT NULL CHECK (length(hash) = 64),
            created_at  INTEGER NOT NULL
        ) STRICT;
        CREATE TRIGGER ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
        BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;
        CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
        BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;

        -- The last row of a wallet at or before a time (the rowid, the id, ends every key).
        -- It serves every query by wallet that ledger_by_wallet served, which goes: one index
        -- fewer to write with every balance change.
        CREATE INDEX ledger_by_wallet_time ON ledger (wallet_id, created_at);
        DROP INDEX ledger_by_wallet;
        -- A wallet's withdrawals still PROCESSING, or settled after a time.
        CREATE INDEX transactions_by_wallet_status ON transactions (wallet_id, status, updated_at) WHERE type = 'WITHDRAWAL';
        """

    /// Events, webhooks and references (README, "Events and webhooks").
    ///
    /// `events` is the outbox: one row per change, written in the change's own transaction,
    /// with `data` serialized then, so the feed and the notifier only read. Its ids are the
    /// feed's order. Every write runs under `BEGIN IMMEDIATE`, one writer at a time, so an id
    /// handed out in one transaction is below every id handed out in any transaction that
    /// commits after it: rowid order is commit order, and a reader who has seen id N never
    /// later finds an unseen id at or below N. Rows are never updated or deleted (triggers),
    /// so the rowid is always max + 1 and never reused; plain rowids, not `AUTOINCREMENT`,
    /// whose `sqlite_sequence` update doubled the cost of the insert on the deposit path
    /// (about 3 µs against 7 µs a row, measured). A store with concurrent writers, such as
    /// PostgreSQL, would have to assign ids at commit instead, or readers would skip ids
    /// still uncommitted.
    ///
    /// `webhook_endpoints` holds no secret: each endpoint's secret is derived from the master
    /// key, its id and its random `nonce` (`WebhookSigning`). Deleted endpoints keep their row
    /// (`deleted_at`) so that ids are never reused. `fanned_out_through` is the last event id
    /// the notifier has turned into this endpoint's deliveries; it starts at the last event
    /// before the endpoint was created.
    ///
    /// `webhook_deliveries`: one row per (endpoint, event) matching the endpoint's patterns,
    /// delivered in event id order per endpoint, with a lease like the processor's.
    static let events = """
        ALTER TABLE transactions ADD COLUMN reference TEXT
            CHECK (reference IS NULL OR (length(reference) BETWEEN 1 AND 128 AND reference NOT GLOB '*[^ -~]*'));
        CREATE INDEX transactions_by_reference ON transactions (wallet_id, reference) WHERE reference IS NOT NULL;

        CREATE TABLE events (
            id              INTEGER PRIMARY KEY,
            type            TEXT    NOT NULL CHECK (type IN ('wallet.created', 'deposit.completed', 'withdrawal.scheduled',
                                'withdrawal.processing', 'withdrawal.retrying', 'withdrawal.outcome_unknown',
                                'withdrawal.completed', 'withdrawal.failed', 'withdrawal.canceled')),
            wallet_id       INTEGER NOT NULL REFERENCES wallets(id),
            transaction_id  INTEGER REFERENCES transactions(id),
            created_at      INTEGER NOT NULL,
            -- The `data` member's JSON text, written by the store's own encoder.
            data            TEXT    NOT NULL,
            CHECK ((type = 'wallet.created') = (transaction_id IS NULL))
        ) STRICT;
        -- A wallet's events, for the feed's `wallet` filter and its owner's feed. (No index by
        -- transaction: nothing on a request's path looks events up that way, and every index
        -- is one more write with every deposit.)
        CREATE INDEX events_by_wallet ON events (wallet_id, id);
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

        CREATE TABLE webhook_endpoints (
            id                  INTEGER PRIMARY KEY AUTOINCREMENT,
            api_key_id          INTEGER NOT NULL REFERENCES api_keys(id),
            url                 TEXT    NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
            -- The patterns, a JSON array of strings, as the client gave them.
            events              TEXT    NOT NULL CHECK (json_valid(events)),
            nonce               TEXT    NOT NULL CHECK (length(nonce) = 32),
            created_at          INTEGER NOT NULL,
            deleted_at          INTEGER,
            fanned_out_through  INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE INDEX webhook_endpoints_by_key ON webhook_endpoints (api_key_id, id) WHERE deleted_at IS NULL;

        CREATE TABLE webhook_deliveries (
            id               INTEGER PRIMARY KEY,
            endpoint_id      INTEGER NOT NULL REFERENCES webhook_endpoints(id),
            event_id         INTEGER NOT NULL REFERENCES events(id),
            state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
            attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            created_at       INTEGER NOT NULL,
            -- When the next attempt is due while pending; NULL once final.
            next_attempt_at  INTEGER,
            lease_owner      TEXT,
            lease_until      INTEGER,
            last_attempt_at  INTEGER,
            -- The last answer's HTTP status (NULL: none, e.g. a timeout) and what went wrong.
            last_status      INTEGER,
            last_error       TEXT,
            finished_at      INTEGER,
            UNIQUE (endpoint_id, event_id),
            CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL))
        ) STRICT;
        -- Each endpoint's head of line: its oldest pending delivery.
        CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, event_id) WHERE state = 'pending';
        CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
        """

    /// A count of the changes to `api_keys`, bumped by triggers in the changing transaction
    /// (a new key, a revocation, a recorded use), whoever makes them: the responder or
    /// walletctl, in this process or another. A connection that remembers key lookups reads
    /// it when `PRAGMA data_version` says something was committed, and forgets them only
    /// when it moved: under a write load every request sees a new `data_version`, and the
    /// lookups then survive the deposits that have nothing to do with keys.
    static let apiKeyChanges = """
        CREATE TABLE api_key_changes (
            id       INTEGER PRIMARY KEY CHECK (id = 1),
            changes  INTEGER NOT NULL CHECK (changes >= 0)
        ) STRICT;
        INSERT INTO api_key_changes (id, changes) VALUES (1, 0);
        CREATE TRIGGER api_key_changes_no_delete BEFORE DELETE ON api_key_changes
        BEGIN SELECT RAISE(ABORT, 'the count of API key changes is never deleted'); END;
        CREATE TRIGGER api_key_changes_only_up BEFORE UPDATE ON api_key_changes WHEN NEW.changes < OLD.changes
        BEGIN SELECT RAISE(ABORT, 'the count of API key changes only goes up'); END;
        CREATE TRIGGER api_keys_count_insert AFTER INSERT ON api_keys
        BEGIN UPDATE api_key_changes SET changes = changes + 1 WHERE id = 1; END;
        CREATE TRIGGER api_keys_count_update AFTER UPDATE OF digest, revoked_at ON api_keys
        BEGIN UPDATE api_key_changes SET changes = changes + 1 WHERE id = 1; END;
        """

    /// Ledger rows chain per wallet from here on (docs/CHECKPOINTS.md). Until this version
    /// every row chained from the row before it in the whole ledger, so every balance change
    /// of every wallet waited for the one before it: one point that every writer of a
    /// cluster would queue on. A row written from now on chains from its own wallet's
    /// previous row (`wallet_chain = 1`); the rows before keep their place in the single
    /// chain (`wallet_chain = 0`, the default every existing row takes), since a hash is
    /// never recomputed. The auditor checks each row by its own chain, and the checkpoints,
    /// which hash rows' contents in id order, cover both kinds alike.
    ///
    /// `ledger_by_wallet_id` finds a wallet's last row, the one a new row chains from.
    static let walletChains = """
        ALTER TABLE ledger ADD COLUMN wallet_chain INTEGER NOT NULL DEFAULT 0 CHECK (wallet_chain IN (0, 1));
        CREATE INDEX ledger_by_wallet_id ON ledger (wallet_id, id);
        """
}
