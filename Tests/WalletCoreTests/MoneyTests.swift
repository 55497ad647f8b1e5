import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("Money and Amount")
struct MoneyTests {
    static let amountMax = Limits.amountMinorUnitsMax

    @Test(
        "Money holds 0...Int64.max and refuses negatives",
        arguments: [
            (0, true), (1, true), (Int64.max, true), (-1, false), (Int64.min, false),
        ] as [(Int64, Bool)])
    func moneyBounds(minorUnits: Int64, accepted: Bool) {
        #expect((Money(minorUnits: minorUnits) != nil) == accepted)
        #expect(Money(minorUnits: minorUnits)?.minorUnits == (accepted ? minorUnits : nil))
    }

    @Test(
        "Amount holds 1...10^15 and refuses the rest",
        arguments: [
            (1, true), (2, true), (amountMax, true), (amountMax - 1, true),
            (0, false), (-1, false), (amountMax + 1, false), (Int64.max, false), (Int64.min, false),
        ] as [(Int64, Bool)])
    func amountBounds(minorUnits: Int64, accepted: Bool) {
        #expect((Amount(minorUnits: minorUnits) != nil) == accepted)
        #expect(Amount(minorUnits: minorUnits)?.minorUnits == (accepted ? minorUnits : nil))
    }

    @Test(
        "checked addition fits up to Int64.max and refuses one past it",
        arguments: [
            (Int64.max - 1, 1, Int64.max),
            (Int64.max, 0, Int64.max),
            (0, 0, 0),
            (5, 7, 12),
            (Int64.max, 1, nil),
            (Int64.max - amountMax + 1, amountMax, nil),
            (Int64.max, Int64.max, nil),
        ] as [(Int64, Int64, Int64?)])
    func addition(lhs: Int64, rhs: Int64, sum: Int64?) throws {
        let left = try #require(Money(minorUnits: lhs))
        let right = try #require(Money(minorUnits: rhs))
        #expect(left.adding(right)?.minorUnits == sum)
        #expect(right.adding(left)?.minorUnits == sum)
    }

    @Test(
        "checked subtraction stops at zero",
        arguments: [
            (10, 3, 7), (10, 10, 0), (0, 0, 0), (Int64.max, Int64.max, 0),
            (10, 11, nil), (0, 1, nil), (0, Int64.max, nil),
        ] as [(Int64, Int64, Int64?)])
    func subtraction(lhs: Int64, rhs: Int64, difference: Int64?) throws {
        let left = try #require(Money(minorUnits: lhs))
        let right = try #require(Money(minorUnits: rhs))
        #expect(left.subtracting(right)?.minorUnits == difference)
    }

    @Test("money orders by amount and prints its minor units")
    func orderAndDescription() throws {
        let small = try #require(Money(minorUnits: 1))
        let large = try #require(Money(minorUnits: 2))
        #expect(small < large)
        #expect(!(large < small))
        #expect(Money.zero.minorUnits == 0)
        #expect(Money.zero < small)
        #expect(large.description == "2")
        #expect(try #require(Amount(minorUnits: 42)).money == Money(minorUnits: 42))
    }
}
