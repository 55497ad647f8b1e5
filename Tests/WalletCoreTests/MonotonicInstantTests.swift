import Testing
@testable import WalletDomain

@Suite("MonotonicInstant")
struct MonotonicInstantTests {
    @Test("now moves forward and never back")
    func now() {
        let first = MonotonicInstant.now()
        let second = MonotonicInstant.now()
        #expect(first <= second)
        #expect(first.adding(microseconds: 5).microseconds == first.microseconds + 5)
    }

    @Test(
        "a lease's local deadline is the claim's start plus what the database said was left, whatever the wall clocks say",
        arguments: [
            // (database now, lease until, monotonic reading before the claim, deadline)
            (1_000_000_000, 1_035_000_000, 500, 35_000_500),
            // The database's clock an hour ahead of any host's, or a day behind: the same.
            (1_000_000_000 + 3_600_000_000, 1_035_000_000 + 3_600_000_000, 500, 35_000_500),
            (1_000_000_000 - 86_400_000_000, 1_035_000_000 - 86_400_000_000, 500, 35_000_500),
            // A lease already over when the database's clock was read: a deadline in the past.
            (1_000_000_000, 999_000_000, 10_000_000, 9_000_000),
        ] as [(Int64, Int64, Int64, Int64)])
    func deadline(databaseNow: Int64, leaseUntil: Int64, claimStarted: Int64, expected: Int64) {
        let deadline = MonotonicInstant.deadline(
            leaseUntil: Timestamp(microseconds: leaseUntil), databaseNow: Timestamp(microseconds: databaseNow),
            claimStarted: MonotonicInstant(microseconds: claimStarted))
        #expect(deadline == MonotonicInstant(microseconds: expected))
    }

    @Test("a slow claim only shortens the local deadline: the database's clock was read after the monotonic reading")
    func slowClaimIsConservative() {
        // The claim began at monotonic 0; the transaction waited 4 s for the write lock,
        // then read the database's clock and leased for 35 s from that reading. The lease
        // truly ends at monotonic 39 s; the deadline says 35 s.
        let lease: Int64 = 35_000_000
        let databaseNow = Timestamp(microseconds: 1_700_000_004_000_000)
        let deadline = MonotonicInstant.deadline(
            leaseUntil: databaseNow.adding(microseconds: lease), databaseNow: databaseNow, claimStarted: MonotonicInstant(microseconds: 0))
        let trueEnd = MonotonicInstant(microseconds: 4_000_000 + lease)
        #expect(deadline < trueEnd)
        #expect(deadline == MonotonicInstant(microseconds: lease))
    }

    @Test("a call is started only when it ends by the deadline; never without one")
    func leavesRoom() {
        let now = MonotonicInstant(microseconds: 1_000)
        let deadline = MonotonicInstant(microseconds: 11_000)
        #expect(now.leavesRoom(forCallOf: 10_000, before: deadline))
        #expect(!now.leavesRoom(forCallOf: 10_001, before: deadline))
        #expect(!now.adding(microseconds: 1).leavesRoom(forCallOf: 10_000, before: deadline))
        #expect(!now.leavesRoom(forCallOf: 0, before: nil))
    }
}
