#if canImport(Glibc)
import Glibc
#endif

/// A reading of this machine's monotonic clock (`CLOCK_MONOTONIC`), in microseconds from
/// an arbitrary start. It never jumps when the wall clock is set, and it means nothing
/// outside this process's machine: it measures how long something took here, never when
/// something happened.
public struct MonotonicInstant: Hashable, Comparable, Sendable {
    public let microseconds: Int64

    public init(microseconds: Int64) {
        self.microseconds = microseconds
    }

    /// The monotonic clock now.
    public static func now() -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicInstant(microseconds: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000)
    }

    public func adding(microseconds delta: Int64) -> MonotonicInstant {
        MonotonicInstant(microseconds: microseconds + delta)
    }

    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool { lhs.microseconds < rhs.microseconds }

    /// A lease granted in the database's time, as a deadline on this machine's monotonic
    /// clock. `leaseUntil` and `databaseNow` are the database's: the lease's end, and its
    /// clock as read in the claim's transaction. `claimStarted` is this machine's monotonic
    /// clock read before that transaction began. The lease has `leaseUntil - databaseNow`
    /// left when the database's clock was read, which was no earlier than `claimStarted`,
    /// so the deadline falls no later than the lease's real end: a slow claim only shortens
    /// it. The host's wall clock plays no part, so its skew against the database's cannot
    /// stretch a lease.
    public static func deadline(leaseUntil: Timestamp, databaseNow: Timestamp, claimStarted: MonotonicInstant) -> MonotonicInstant {
        claimStarted.adding(microseconds: leaseUntil.microseconds - databaseNow.microseconds)
    }

    /// Whether a call that starts now and may last `callMicroseconds` ends before
    /// `deadline`: a call that could still be running when its lease ends is never started.
    /// No deadline (a lease never converted to this machine's clock) never has room.
    public func leavesRoom(forCallOf callMicroseconds: Int64, before deadline: MonotonicInstant?) -> Bool {
        guard let deadline else { return false }
        return adding(microseconds: callMicroseconds) <= deadline
    }
}
