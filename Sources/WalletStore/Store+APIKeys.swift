import WalletDomain
import WalletJSON
import WalletPlatform

/// Why a wallet could not be handed to a key.
public enum AssignmentError: Error, Equatable, Sendable {
    case walletNotFound
    case apiKeyNotFound
    /// The key is revoked, or is the key that owns the wallets made before API keys, which
    /// has no secret.
    case apiKeyNotUsable
}

/// What the store knows of a presented key's digest.
public enum KeyLookup: Sendable, Equatable {
    /// A live key, with when its use was last recorded.
    case valid(APIKeyID, lastUsedAt: Timestamp?)
    case unknown
    case revoked
}

extension Store {
    /// The key with this digest, found through the unique index and then compared in
    /// constant time (the index finds candidates; the comparison decides).
    ///
    /// Every request asks this, so answers are remembered per connection for as long as no
    /// key has changed: `PRAGMA data_version` changes whenever another connection or
    /// process commits (a revocation by walletctl, a new key, any deposit), and only then is
    /// the count of key changes (`api_key_changes`, bumped by triggers on `api_keys`) read;
    /// when it moved, every remembered answer is dropped. A revoked key is thus refused from
    /// the next request on, while the commits of a deposit load, which touch no key, cost a
    /// connection one pragma and one single-row read per request instead of a lookup and a
    /// digest. PostgreSQL has no `data_version` for a connection to read, so there every
    /// request looks its key up (one index lookup on the unique digest).
    public func apiKey(digest: String) throws -> KeyLookup {
        try remembered("digest:" + digest) { try lookUpAPIKey(digest: digest) }
    }

    /// The same for a key as a client presented it: while the answer is remembered, not even
    /// its digest is computed again.
    public func apiKey(_ presented: APIKeySecret) throws -> KeyLookup {
        try remembered(presented.text) { try lookUpAPIKey(digest: presented.digest) }
    }

    private func remembered(_ name: String, _ lookUp: () throws -> KeyLookup) throws -> KeyLookup {
        guard try forgetKeyLookupsIfKeysChanged() else { return try lookUp() }
        if keyLookups.count >= Limits.apiKeyLookupsCachedMax {
            keyLookups.removeAll(keepingCapacity: true)
        } else if let known = keyLookups[name] {
            return known
        }
        let found = try lookUp()
        keyLookups[name] = found
        return found
    }

    /// The count is read after the data version: a key change committed between the two is
    /// in the count read, and one committed after it moves the data version past the value
    /// kept. False when the engine has no data version (PostgreSQL): nothing is remembered
    /// there, since reading the count would cost as much as the lookup it saves.
    private func forgetKeyLookupsIfKeysChanged() throws -> Bool {
        guard let version = try database.dataVersion() else { return false }
        guard version != keyLookupsVersion else { return true }
        keyLookupsVersion = version
        // No count (its row removed behind the triggers' back): lookups are then dropped on
        // every commit, as before the count existed.
        let changes = try database.scalarInteger("SELECT changes FROM api_key_changes WHERE id = 1")
        if let changes, changes == keyLookupsChanges { return true }
        keyLookups.removeAll(keepingCapacity: true)
        keyLookupsChanges = changes
        return true
    }

    /// A connection's own commits leave its `data_version` as it was: a change to the keys
    /// made through this connection drops what it remembers itself.
    private func forgetKeyLookups() {
        keyLookups.removeAll()
        keyLookupsVersion = -1
        keyLookupsChanges = nil
    }

    private func lookUpAPIKey(digest: String) throws -> KeyLookup {
        let row = try database.queryFirst(
            "SELECT id, digest, revoked_at, last_used_at FROM api_keys WHERE digest = ?", [.text(digest)]
        ) { row in
            (
                id: APIKeyID(row.integer("id")), digest: row.text("digest"), revoked: row.optionalInteger("revoked_at") != nil,
                lastUsed: row.optionalInteger("last_used_at").map(Timestamp.init(microseconds:))
            )
        }
        guard let row, SHA256.constantTimeEqual(Array(row.digest.utf8), Array(digest.utf8)) else { return .unknown }
        return row.revoked ? .revoked : .valid(row.id, lastUsedAt: row.lastUsed)
    }

    /// Stores a new key's digest under `name`. The secret itself is never stored.
    public func createAPIKey(name: String, digest: String, now: Timestamp) throws -> APIKeyRecord {
        requireTransaction()
        forgetKeyLookups()
        let id = try database.insert(
            "INSERT INTO api_keys (name, digest, created_at) VALUES (?, ?, ?)", [.text(name), .text(digest), .integer(now.microseconds)])
        return APIKeyRecord(
            id: APIKeyID(id), name: name, createdAt: now, revokedAt: nil, lastUsedAt: nil, hasSecret: true, wallets: 0)
    }

    /// Every key, oldest first, with how many wallets each owns.
    public func apiKeys() throws -> [APIKeyRecord] {
        try database.query(
            """
            SELECT k.id, k.name, k.digest IS NOT NULL AS has_secret, k.created_at, k.revoked_at, k.last_used_at,
                   (SELECT count(*) FROM wallets w WHERE w.api_key_id = k.id) AS wallets
            FROM api_keys k ORDER BY k.id
            """
        ) { row in
            APIKeyRecord(
                id: APIKeyID(row.integer("id")), name: row.text("name"),
                createdAt: Timestamp(microseconds: row.integer("created_at")),
                revokedAt: row.optionalInteger("revoked_at").map(Timestamp.init(microseconds:)),
                lastUsedAt: row.optionalInteger("last_used_at").map(Timestamp.init(microseconds:)),
                hasSecret: row.integer("has_secret") != 0, wallets: row.integer("wallets"))
        }
    }

    /// The key with this id, if any.
    public func apiKey(_ id: APIKeyID) throws -> APIKeyRecord? {
        try apiKeys().first { $0.id == id }
    }

    /// Revokes a key: from the next request on, it is refused. A key already revoked keeps
    /// its first revocation time. Nil when no key has this id.
    public func revokeAPIKey(_ id: APIKeyID, now: Timestamp) throws -> APIKeyRecord? {
        requireTransaction()
        forgetKeyLookups()
        try database.run(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [.integer(now.microseconds), .integer(id.rawValue)])
        return try apiKey(id)
    }

    /// Records that the key was used at `now`, unless a later use is already recorded.
    public func recordAPIKeyUse(_ id: APIKeyID, now: Timestamp) throws {
        requireTransaction()
        forgetKeyLookups()
        try database.run(
            "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
            [.integer(now.microseconds), .integer(id.rawValue)])
    }

    /// Hands a wallet to another key (the operator's tool for the wallets made before API
    /// keys, and for moving a client's wallets to its new key). The wallet's transactions
    /// and ledger go with it. A revoked key cannot be given wallets.
    public func assignWallet(_ wallet: WalletID, to key: APIKeyID, now: Timestamp) throws -> Result<Wallet, AssignmentError> {
        requireTransaction()
        guard let record = try apiKey(key) else { return .failure(.apiKeyNotFound) }
        guard record.revokedAt == nil, record.hasSecret else { return .failure(.apiKeyNotUsable) }
        guard var found = try self.wallet(wallet, visibleTo: .operator, lock: .update) else { return .failure(.walletNotFound) }
        // Webhook deliveries follow the wallet's owner when the notifier fans events out:
        // the events written so far go to the former owner's endpoints first, in this
        // transaction, so that none falls between the two keys' endpoints. With the wallet
        // locked every event of it is committed, or waits for this transaction; the events
        // are settled up to the last of them once the transactions still drawing smaller
        // ids have ended (a write to this very wallet among them fails this as busy).
        let settled = try settledEventID()
        while try fanOutEvents(now: now, settled: settled).behind {}
        try database.run("UPDATE wallets SET api_key_id = ? WHERE id = ?", [.integer(key.rawValue), .integer(found.rowID)])
        found.owner = key
        return .success(found)
    }
}
