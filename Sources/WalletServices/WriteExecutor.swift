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
        lock.withLock { SerialWriter.run(work, on: store) }
    }

    /// Runs `work` in one transaction of `store`: committed when it is to be kept, rolled
    /// back when not (its response still stands), nothing of it when it throws.
    static func run(_ work: WriteWork, on store: Store) -> Result<WriteOutcome, any Error> {
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

    private struct Rollback: Error {
        let outcome: WriteOutcome
    }
}

/// One transaction per request, each on a connection of its own, all at once: for
/// PostgreSQL, whose writers lock only the rows they change and whose commits, waiting
/// together for the WAL flush (and the synchronous standby), are made durable together.
/// The responder's choice on PostgreSQL (`wallet-fcgi --writes`, README "Performance"),
/// where it served durable deposits better than `GroupCommitWriter`'s batches, which one
/// connection runs statement after statement.
///
/// A connection is taken from the idle ones, or opened when none is idle, and given back
/// after the request; at most `capacity` are in use, and a request past them waits for
/// one (so the server's `max_connections` can be planned: README, "More than one machine").
/// A deadlock or serialization failure (another transaction was let through instead) is
/// tried again, twice; a request's write locks one wallet, so one is rare.
///
/// `@unchecked Sendable`: the idle connections (not `Sendable`) are only touched under
/// `lock`; a connection taken is used by one thread until it is given back.
public final class ConnectionPoolWriter: WriteExecutor, @unchecked Sendable {
    private let open: () throws -> Store
    private let lock = Lock()
    private var idle: [Store] = []
    private let slots: Semaphore

    /// `open` makes a new connection; `idle` are connections already open, used first;
    /// `capacity` is the most in use at once.
    public init(capacity: Int, idle: [Store] = [], open: @escaping () throws -> Store) {
        precondition(capacity > 0, "a writer needs a connection")
        self.idle = idle
        self.open = open
        slots = Semaphore(value: UInt32(capacity))
    }

    public func perform(_ work: @escaping WriteWork) -> Result<WriteOutcome, any Error> {
        slots.wait()
        defer { slots.signal() }
        let store: Store
        do {
            store = try lock.withLock { idle.popLast() } ?? open()
        } catch {
            return .failure(error)
        }
        defer { lock.withLock { idle.append(store) } }
        var result = SerialWriter.run(work, on: store)
        for _ in 0..<2 {
            guard case .failure(let error as DatabaseError) = result, error.isConflict else { break }
            result = SerialWriter.run(work, on: store)
        }
        return result
    }
}
