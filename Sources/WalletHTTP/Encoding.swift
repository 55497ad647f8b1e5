import WalletDomain
import WalletJSON
import WalletPlatform

/// The JSON shapes of the API's objects (openapi.yaml).
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
    public var json: String {
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
        return object.result
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
