import WalletDomain
import WalletJSON
import WalletPlatform

/// An answer stored under an idempotency key.
public struct StoredResponse: Sendable, Equatable {
    public var fingerprint: String
    public var status: Int
    public var body: String

    public init(fingerprint: String, status: Int, body: String) {
        self.fingerprint = fingerprint
        self.status = status
        self.body = body
    }
}

extension Store {
    /// The answer stored under `key` for this API key: idempotency keys are scoped to the
    /// client that sent them, so two clients never see each other's answers.
    public func storedResponse(forKey key: String, of apiKey: APIKeyID) throws -> StoredResponse? {
        try database.queryFirst(
            "SELECT fingerprint, status, body FROM idempotency WHERE api_key_id = ? AND key = ?", [.integer(apiKey.rawValue), .text(key)]
        ) {
            StoredResponse(fingerprint: $0.text("fingerprint"), status: Int($0.integer("status")), body: $0.text("body"))
        }
    }

    /// Makes any other request with the same key from the same client wait until this
    /// transaction ends, so that it then finds this one's stored answer instead of doing the
    /// work a second time (on PostgreSQL, where writers run at once; on SQLite writers
    /// already take turns). Call it before `storedResponse(forKey:of:)`, in the write
    /// transaction that will store the answer.
    public func lockIdempotencyKey(_ key: String, of apiKey: APIKeyID) throws {
        requireTransaction()
        try database.lockKey(key, scope: apiKey.rawValue)
    }

    /// Stores a successful answer. Runs in the same transaction as the effect it answers
    /// for, so a key is never stored without its effect, nor the effect without its key.
    public func store(_ response: StoredResponse, forKey key: String, of apiKey: APIKeyID, now: Timestamp) throws {
        requireTransaction()
        try database.run(
            "INSERT INTO idempotency (api_key_id, key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                .integer(apiKey.rawValue), .text(key), .text(response.fingerprint), .integer(Int64(response.status)),
                .text(response.body), .integer(now.microseconds),
            ])
    }

    /// Forgets answers older than the retention period. Returns how many were removed.
    @discardableResult
    public func purgeIdempotencyKeys(olderThan cutoff: Timestamp) throws -> Int {
        try database.run("DELETE FROM idempotency WHERE created_at < ?", [.integer(cutoff.microseconds)])
    }
}
