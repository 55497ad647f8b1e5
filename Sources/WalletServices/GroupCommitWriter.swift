import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP
#if canImport(Glibc)
import Glibc
#endif

/// Applies concurrent write requests in one SQLite transaction, made durable by one WAL
/// sync, while each keeps its own semantics.
///
/// Requests queue up; one writer thread takes everything queued (up to
/// `Limits.groupCommitRequestsMax`), opens `BEGIN IMMEDIATE`, runs each request in its own
/// savepoint (a refused or failed request rolls back only itself), commits, and only then
/// wakes the waiting request threads to answer. A lone request is not delayed: the writer
/// starts as soon as anything is queued, and the next batch forms while a commit syncs.
/// Reads never come here; they run on each thread's own connection.
///
/// `@unchecked Sendable`: `queue` and `stopping` are only touched under `lock`; the store is
/// used by the writer thread alone (and by `start`/`stop`'s caller before and after it).
public final class GroupCommitWriter: WriteExecutor, @unchecked Sendable {
    /// `@unchecked Sendable`: `result` is written by the writer thread before `done` is
    /// signalled and read by the waiting thread after, so the semaphore orders them.
    private final class Job: @unchecked Sendable {
        let work: WriteWork
        var result: Result<WriteOutcome, any Error>?
        let done = Semaphore()

        init(work: @escaping WriteWork) {
            self.work = work
        }
    }

    private let store: Store
    private let lock = Lock()
    private var queue: [Job] = []
    private var stopping = false
    private let wakeup = Semaphore()
    private var thread: OSThread?
    private let onBatch: @Sendable (Int) -> Void

    /// `onBatch` is told each batch's size after it commits (for metrics).
    public init(store: Store, onBatch: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.store = store
        self.onBatch = onBatch
    }

    /// Starts the writer thread.
    public func start() {
        do {
            thread = try OSThread.start(name: "group-commit") { self.run() }
        } catch {
            preconditionFailure("cannot start the writer thread: \(error)")
        }
    }

    /// Finishes what is queued, then stops the writer thread.
    public func stop() {
        lock.withLock { stopping = true }
        wakeup.signal()
        thread?.join()
        thread = nil
    }

    public func perform(_ work: @escaping WriteWork) -> Result<WriteOutcome, any Error> {
        let job = Job(work: work)
        let accepted = lock.withLock {
            guard !stopping else { return false }
            queue.append(job)
            return true
        }
        guard accepted else { return .failure(DatabaseError(code: 0, message: "the writer is stopping")) }
        wakeup.signal()
        job.done.wait()
        guard let result = job.result else { preconditionFailure("a job was woken without a result") }
        return result
    }

    private func run() {
        while true {
            wakeup.wait()
            let (batch, finished) = lock.withLock { () -> ([Job], Bool) in
                let count = min(queue.count, Limits.groupCommitRequestsMax)
                let batch = Array(queue.prefix(count))
                queue.removeFirst(count)
                return (batch, stopping && queue.isEmpty)
            }
            if !batch.isEmpty { commit(batch) }
            // More may be queued than one batch takes: come round again without waiting.
            if lock.withLock({ !queue.isEmpty }) { wakeup.signal() }
            if finished { return }
        }
    }

    /// One transaction for the whole batch, one savepoint per request: a refused request
    /// leaves no trace, and if the commit fails, nothing of the batch is durable, so every
    /// request in it fails, including those whose own work went well.
    private func commit(_ batch: [Job]) {
        let results = store.writeBatch(batch.count) { index in
            let outcome = try batch[index].work(store)
            return (outcome, outcome.keep)
        }
        // Counted before anyone is answered, so a client that reads the metrics next sees
        // its own request's batch.
        onBatch(batch.count)
        for (job, result) in zip(batch, results) { finish(job, result) }
    }

    private func finish(_ job: Job, _ result: Result<WriteOutcome, any Error>) {
        job.result = result
        job.done.signal()
    }
}
