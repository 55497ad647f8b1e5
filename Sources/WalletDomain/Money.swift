/// An amount of money in minor units (cents), always within `0...Int64.max`.
///
/// Arithmetic is checked: an overflow caused by user input is an outcome the caller
/// reports (`balance_overflow`), never a trap.
public struct Money: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let minorUnits: Int64

    public init?(minorUnits: Int64) {
        guard minorUnits >= 0 else { return nil }
        self.minorUnits = minorUnits
    }

    public static let zero = Money(unchecked: 0)

    private init(unchecked minorUnits: Int64) {
        self.minorUnits = minorUnits
    }

    /// The sum, or nil when it would not fit in an `Int64`.
    public func adding(_ other: Money) -> Money? {
        let (sum, overflow) = minorUnits.addingReportingOverflow(other.minorUnits)
        return overflow ? nil : Money(unchecked: sum)
    }

    /// The difference, or nil when it would be negative.
    public func subtracting(_ other: Money) -> Money? {
        guard other.minorUnits <= minorUnits else { return nil }
        return Money(unchecked: minorUnits - other.minorUnits)
    }

    public static func < (lhs: Money, rhs: Money) -> Bool { lhs.minorUnits < rhs.minorUnits }
    public var description: String { String(minorUnits) }
}

/// A positive amount a client may move in one transaction: `1...Limits.amountMinorUnitsMax`.
public struct Amount: Hashable, Sendable {
    public let money: Money
    public var minorUnits: Int64 { money.minorUnits }

    public init?(minorUnits: Int64) {
        guard minorUnits >= 1, minorUnits <= Limits.amountMinorUnitsMax,
            let money = Money(minorUnits: minorUnits)
        else { return nil }
        self.money = money
    }
}
