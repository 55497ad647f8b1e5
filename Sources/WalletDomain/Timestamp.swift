#if canImport(Glibc)
import Glibc
#endif

/// A point in time: microseconds since the Unix epoch, UTC. Stored as an integer in the
/// database (sortable and exact) and shown as RFC 3339 with a `Z`.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let microseconds: Int64

    public init(microseconds: Int64) {
        self.microseconds = microseconds
    }

    public init(seconds: Int64) {
        self.microseconds = seconds * 1_000_000
    }

    /// The wall clock now.
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(microseconds: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000)
    }

    public func adding(seconds: Int64) -> Timestamp {
        Timestamp(microseconds: microseconds + seconds * 1_000_000)
    }

    public func adding(microseconds delta: Int64) -> Timestamp {
        Timestamp(microseconds: microseconds + delta)
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.microseconds < rhs.microseconds }

    public var description: String { rfc3339 }

    /// RFC 3339 in UTC: `2026-11-25T10:00:00Z`, with six fractional digits when the
    /// time is not on a whole second.
    public var rfc3339: String {
        let (seconds, micros) = microseconds.floorDivided(by: 1_000_000)
        let (days, secondOfDay) = seconds.floorDivided(by: 86_400)
        let (year, month, day) = Timestamp.civil(fromDays: days)
        // Written byte by byte: this runs for every timestamp of every response and log line.
        var bytes = [UInt8]()
        bytes.reserveCapacity(27)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = value
            if rest >= divisor * 10 {
                bytes.append(contentsOf: String(rest / (divisor * 10)).utf8)
                rest %= divisor * 10
            }
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor))
                rest %= divisor
                divisor /= 10
            }
        }
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2)
        if micros != 0 {
            bytes.append(UInt8(ascii: "."))
            digits(micros, 6)
        }
        bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses RFC 3339 with an explicit offset (`Z` or `±hh:mm`), fractional seconds
    /// allowed (truncated to microseconds). Returns nil for anything else, including a
    /// time without an offset and impossible dates such as February 30.
    public init?(rfc3339 text: String) {
        var scanner = DigitScanner(Array(text.utf8))
        guard let year = scanner.number(4), year >= 1, scanner.take(UInt8(ascii: "-")),
            let month = scanner.number(2), (1...12).contains(month), scanner.take(UInt8(ascii: "-")),
            let day = scanner.number(2), day >= 1, day <= Timestamp.daysIn(month: month, year: year),
            scanner.take(UInt8(ascii: "T")) || scanner.take(UInt8(ascii: "t")),
            let hour = scanner.number(2), hour < 24, scanner.take(UInt8(ascii: ":")),
            let minute = scanner.number(2), minute < 60, scanner.take(UInt8(ascii: ":")),
            let second = scanner.number(2), second < 60
        else { return nil }
        var micros: Int64 = 0
        if scanner.take(UInt8(ascii: ".")) {
            guard let fraction = scanner.fractionMicroseconds() else { return nil }
            micros = fraction
        }
        var offsetSeconds: Int64 = 0
        if scanner.take(UInt8(ascii: "Z")) || scanner.take(UInt8(ascii: "z")) {
            offsetSeconds = 0
        } else if let sign = scanner.takeSign() {
            guard let offsetHours = scanner.number(2), offsetHours < 24, scanner.take(UInt8(ascii: ":")),
                let offsetMinutes = scanner.number(2), offsetMinutes < 60
            else { return nil }
            offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60)
        } else {
            return nil
        }
        guard scanner.atEnd else { return nil }
        let days = Timestamp.days(fromCivil: year, month, day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        let microseconds = seconds * 1_000_000 + micros
        // An offset can carry a time named in year 0001 or 9999 into year 0 or 10000 in UTC,
        // which `rfc3339` cannot write as four digits: a response would show a time that no
        // RFC 3339 parser, this one included, reads back.
        guard Timestamp.rfc3339Range.contains(microseconds) else { return nil }
        self.microseconds = microseconds
    }

    /// The instants whose UTC form has a four-digit year: 0001-01-01T00:00:00Z to
    /// 9999-12-31T23:59:59.999999Z.
    static let rfc3339Range: ClosedRange<Int64> = -62_135_596_800_000_000...253_402_300_799_999_999

    // MARK: - Calendar arithmetic (proleptic Gregorian, after Howard Hinnant's algorithms)

    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// Reads fixed-width decimal fields from ASCII bytes.
private struct DigitScanner {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    mutating func takeSign() -> Int64? {
        if take(UInt8(ascii: "+")) { return 1 }
        if take(UInt8(ascii: "-")) { return -1 }
        return nil
    }

    mutating func number(_ width: Int) -> Int64? {
        guard index + width <= bytes.count else { return nil }
        var value: Int64 = 0
        for byte in bytes[index..<index + width] {
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + Int64(byte - 48)
        }
        index += width
        return value
    }

    /// One or more digits after the decimal point, as microseconds (extra digits dropped).
    mutating func fractionMicroseconds() -> Int64? {
        var value: Int64 = 0
        var count = 0
        while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
            if count < 6 { value = value * 10 + Int64(bytes[index] - 48) }
            count += 1
            index += 1
        }
        guard count > 0, count <= 18 else { return nil }
        for _ in count..<max(count, 6) { value *= 10 }
        return value
    }
}

extension Int64 {
    /// Quotient and remainder rounded towards negative infinity, so times before 1970
    /// still split into a day and a non-negative second of the day.
    func floorDivided(by divisor: Int64) -> (Int64, Int64) {
        let quotient = self / divisor
        let remainder = self % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }
}
