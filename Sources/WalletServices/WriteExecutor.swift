import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP

/// What one write request produced: its response, whether its changes are to be kept, and
/// the ledger rows it wrote (logged as audit lines once they are committed).
public struct WriteOutcome: Sendable {
    public var response: Response
    /// False for a refused request: its savepoint is rolled back, whatever it wrote.
    public var keep: Bool
    public var ledgerEntries: [LedgerEntry]

    public init(response: Response, keep: Bool, ledgerEntries: [LedgerEntry] = []) {
        self.response = response
        self.keep = keep
        self.ledgerEntries = ledgerEntries
    }
}

/// A unit of write work, run on the writer's connection inside a transaction.
public typealias WriteWork = @Sendable (Store) throws -> WriteOutcome

/// Runs write work durably. `perform` returns only once the work's effects are committed
/// (or known not to be); an error means nothing of that work was committed.
public protocol WriteExecutor: Sendable {
    func perform(_ work: @escaping WriteWork) -> Result<WriteOutcome, any Error>
}

/// The simplest executor: one transaction per request, writers taking turns on a lock.
/// Used by the tests and tools; the responder uses `GroupCommitWriter`.
///
/// `@unchecked Sendable`: its store (not `Sendable`: one SQLite connection) is only used
/// under `lock`.
public final class SerialWriter: WriteExecutor, @unchecked Sendable {
    private let store: Store
    private let lock = Lock()

    public init(store: Store) {
        self.store = store
    }

    public func perform(_ work: @escaping WriteWork) -> Result<WriteOutcome, any Error> {
        lock.withLock {
            Result {
                try store.write {
                    let outcome = try work(store)
                    if !outcome.keep { throw Rollback(outcome: outcome) }
                    return outcome
                }
            }.flatMapError { error in
                (error as? Rollback).map { .success($0.outcome) } ?? .failure(error)
            }
        }
    }

    private struct Rollback: Error {
        let outcome: WriteOutcome
    }
}
