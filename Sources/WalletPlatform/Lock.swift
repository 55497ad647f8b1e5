import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex for state shared between the responder's threads. Used where the state
/// is not `Sendable` (an SQLite connection), which rules out `Synchronization.Mutex`.
///
/// `@unchecked Sendable`: the mutex is the synchronization; it is allocated once and
/// never moved, as pthread requires.
public final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() {
        let status = pthread_mutex_init(mutex, nil)
        precondition(status == 0, "pthread_mutex_init failed: \(status)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A counting semaphore for handing work between threads.
///
/// `@unchecked Sendable`: a POSIX semaphore is made to be shared between threads; it is
/// allocated once and never moved.
public final class Semaphore: @unchecked Sendable {
    private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

    public init(value: UInt32 = 0) {
        let status = sem_init(semaphore, 0, value)
        precondition(status == 0, "sem_init failed")
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    public func signal() {
        sem_post(semaphore)
    }

    public func wait() {
        while sem_wait(semaphore) != 0 {
            precondition(errno == EINTR, "sem_wait failed: \(errno)")
        }
    }
}
