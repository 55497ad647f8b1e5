import WalletJSON

/// The JSON shapes of the API's objects (openapi.yaml). They live here, below both the HTTP
/// layer and the store, because the store writes the same shapes into the event outbox in
/// the transaction of each change (`Store+Events.swift`): an event's `data` is the object
/// exactly as the API shows it at that moment.
extension Wallet {
    public var json: String {
        var object = JSONObject()
        object.add("uuid", id.text)
        object.add("balance", balance.minorUnits)
        object.add("created_at", createdAt.rfc3339)
        object.add("updated_at", updatedAt.rfc3339)
        return object.result
    }
}

extension Transaction {
    public var json: String { jsonObject.result }

    /// The object before it is closed, so that an event may add members after the
    /// transaction's own (`attempt`, `outcome`, `next_attempt_at`, `refund`).
    public var jsonObject: JSONObject {
        var object = JSONObject()
        object.add("id", id)
        object.add("wallet", wallet.text)
        object.add("type", type.rawValue)
        object.add("amount", amount.minorUnits)
        object.add("status", status.rawValue)
        object.add("scheduled_for", scheduledFor?.rfc3339)
        object.add("executed_at", executedAt?.rfc3339)
        object.add("created_at", createdAt.rfc3339)
        object.add("attempts", attempts)
        object.add("failure_reason", failureReason?.rawValue)
        object.add("idempotency_key", idempotencyKey)
        object.add("reference", reference)
        return object
    }
}

extension TransactionPage {
    public var json: String {
        var object = JSONObject()
        object.add("results", json: "[" + transactions.map(\.json).joined(separator: ", ") + "]")
        object.add("next_cursor", nextCursor.map { String($0) })
        return object.result
    }
}
