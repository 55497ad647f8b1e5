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
public final class GroupCommitWriter: WriteExecutor, @unchecked Sendable {
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
            if !batch.isEmpty {
                commit(batch)
                onBatch(batch.count)
            }
            // More may be queued than one batch takes: come round again without waiting.
            if lock.withLock({ !queue.isEmpty }) { wakeup.signal() }
            if finished { return }
        }
    }

    private func commit(_ batch: [Job]) {
        let database = store.database
        do {
            try database.execute("BEGIN IMMEDIATE")
        } catch {
            for job in batch { finish(job, .failure(error)) }
            return
        }
        let results = batch.map { job in
            Result<WriteOutcome, any Error> {
                // After an I/O error SQLite may have rolled the whole transaction back; a
                // SAVEPOINT now would start a transaction of its own and commit outside the
                // batch. Fail the rest of the batch instead.
                guard !database.isAutocommit else { throw DatabaseError(code: 0, message: "the batch transaction was rolled back") }
                try database.execute("SAVEPOINT request")
                do {
                    let outcome = try job.work(store)
                    if !outcome.keep { try database.execute("ROLLBACK TO request") }
                    try database.execute("RELEASE request")
                    return outcome
                } catch {
                    try database.execute("ROLLBACK TO request")
                    try database.execute("RELEASE request")
                    throw error
                }
            }
        }
        do {
            try database.execute("COMMIT")
            for (job, result) in zip(batch, results) { finish(job, result) }
        } catch {
            // Nothing of the batch is durable: every request in it failed, including those
            // whose own work went well.
            try? database.execute("ROLLBACK")
            for job in batch { finish(job, .failure(error)) }
        }
    }

    private func finish(_ job: Job, _ result: Result<WriteOutcome, any Error>) {
        job.result = result
        job.done.signal()
    }
}
