/// An outcome a client caused and can act on. These are values, not crashes: the HTTP
/// layer maps each to its status and snake_case code in one place (`APIError`).
public enum DomainError: Error, Equatable, Sendable {
    case walletNotFound
    case transactionNotFound
    /// The deposit would push the balance past `Int64.max`; nothing changed.
    case balanceOverflow
    /// Only a `PENDING` withdrawal can be canceled.
    case notCancelable(TransactionStatus)
    /// The idempotency key was first used for a different request.
    case idempotencyKeyReused
}
