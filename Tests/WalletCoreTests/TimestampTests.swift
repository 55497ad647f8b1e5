import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("Timestamp")
struct TimestampTests {
    /// 2026-02-15T15:00:00Z, the instant the README's examples name.
    static let example: Int64 = 1_771_167_600_000_000

    @Test(
        "RFC 3339 with an explicit offset parses to the instant it names",
        arguments: [
            ("2026-02-15T15:00:00Z", example),
            ("2026-02-15T15:00:00z", example),
            ("2026-02-15t15:00:00Z", example),
            ("2026-02-15T18:30:00+03:30", example),
            ("2026-02-15T07:00:00-08:00", example),
            ("2026-02-15T15:00:00+00:00", example),
            ("2026-02-15T15:00:00-00:00", example),
            ("2026-02-16T14:59:00+23:59", example),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1_000_000),
            ("1900-01-01T00:00:00Z", -2_208_988_800_000_000),
            ("0001-01-01T00:00:00Z", -62_135_596_800_000_000),
            ("9999-12-31T23:59:59Z", 253_402_300_799_000_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000_000),
            ("2000-02-29T12:00:00Z", 951_825_600_000_000),
        ] as [(String, Int64)])
    func parsesWithOffset(text: String, microseconds: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == microseconds)
    }

    @Test(
        "fractional seconds of 1 to 9 digits are kept to the microsecond",
        arguments: [
            ("2026-02-15T15:00:00.5Z", example + 500_000),
            ("2026-02-15T15:00:00.12Z", example + 120_000),
            ("2026-02-15T15:00:00.123Z", example + 123_000),
            ("2026-02-15T15:00:00.1234Z", example + 123_400),
            ("2026-02-15T15:00:00.12345Z", example + 123_450),
            ("2026-02-15T15:00:00.123456Z", example + 123_456),
            ("2026-02-15T15:00:00.1234567Z", example + 123_456),
            ("2026-02-15T15:00:00.12345678Z", example + 123_456),
            ("2026-02-15T15:00:00.123456789Z", example + 123_456),
            ("2026-02-15T15:00:00.000001Z", example + 1),
            ("2026-02-15T15:00:00.000000Z", example),
            ("2026-02-15T18:30:00.25+03:30", example + 250_000),
        ] as [(String, Int64)])
    func fractionalSeconds(text: String, microseconds: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == microseconds)
    }

    @Test(
        "malformed or impossible times are refused",
        arguments: [
            "2026-02-15T15:00:00",  // no offset
            "2026-02-15T15:00:00.5",  // no offset after a fraction
            "2026-02-15",  // a date alone
            "2026-02-15 15:00:00Z",  // space instead of T
            "2026-02-30T00:00:00Z",  // February 30
            "2025-02-29T00:00:00Z",  // not a leap year
            "1900-02-29T00:00:00Z",  // century, not a leap year
            "2026-13-01T00:00:00Z",  // month 13
            "2026-00-01T00:00:00Z",  // month 0
            "2026-01-00T00:00:00Z",  // day 0
            "2026-01-32T00:00:00Z",  // day 32
            "2026-04-31T00:00:00Z",  // April 31
            "2026-02-15T24:00:00Z",  // hour 24
            "2026-02-15T15:60:00Z",  // minute 60
            "2026-02-15T15:00:60Z",  // second 60
            "2026-02-15T15:00:00.Z",  // a point without digits
            "2026-02-15T15:00:00+0330",  // offset without a colon
            "2026-02-15T15:00:00+03",  // offset without minutes
            "2026-02-15T15:00:00+24:00",  // offset hour 24
            "2026-02-15T15:00:00+03:60",  // offset minute 60
            "2026-02-15T15:00:00ZZ",  // trailing text
            "2026-02-15T15:00:00Z ",  // trailing space
            " 2026-02-15T15:00:00Z",  // leading space
            "26-02-15T15:00:00Z",  // two-digit year
            "0000-01-01T00:00:00Z",  // year 0
            "2026-2-15T15:00:00Z",  // one-digit month
            "2026-02-15T5:00:00Z",  // one-digit hour
            "2026/02/15T15:00:00Z",  // wrong separators
            "2026-02-15T15:00:00.1234567890123456789Z",  // 19 fractional digits
            "",
            "now",
        ])
    func refused(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test(
        "leap years accept February 29, other years refuse it",
        arguments: [
            (2024, true), (2000, true), (2400, true), (1600, true), (2023, false), (2100, false), (1900, false), (2025, false),
        ])
    func leapYears(year: Int, accepted: Bool) {
        let text = "\(year)-02-29T00:00:00Z"
        #expect((Timestamp(rfc3339: text) != nil) == accepted)
        #expect(Timestamp(rfc3339: "\(year)-02-28T00:00:00Z") != nil)
        #expect(Timestamp(rfc3339: "\(year)-02-30T00:00:00Z") == nil)
    }

    @Test(
        "formatting is UTC with Z, the fraction only when it is not zero",
        arguments: [
            (example, "2026-02-15T15:00:00Z"),
            (example + 500_000, "2026-02-15T15:00:00.500000Z"),
            (example + 1, "2026-02-15T15:00:00.000001Z"),
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (-1_000_000, "1969-12-31T23:59:59Z"),
            (-500_000, "1969-12-31T23:59:59.500000Z"),
            (-2_208_988_800_000_000, "1900-01-01T00:00:00Z"),
            (-62_135_596_800_000_000, "0001-01-01T00:00:00Z"),
            (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
            (1_709_164_800_000_000, "2024-02-29T00:00:00Z"),
        ] as [(Int64, String)])
    func formats(microseconds: Int64, text: String) {
        #expect(Timestamp(microseconds: microseconds).rfc3339 == text)
        #expect(Timestamp(microseconds: microseconds).description == text)
    }

    @Test("an offset time formats as the same instant in UTC")
    func offsetFormatsInUTC() {
        #expect(Timestamp(rfc3339: "2026-02-15T18:30:00+03:30")?.rfc3339 == "2026-02-15T15:00:00Z")
        #expect(Timestamp(rfc3339: "2026-12-31T20:00:00-08:00")?.rfc3339 == "2027-01-01T04:00:00Z")
        #expect(Timestamp(rfc3339: "1970-01-01T01:00:00+02:00")?.rfc3339 == "1969-12-31T23:00:00Z")
    }

    @Test(
        "formatting then parsing gives back the same instant",
        arguments: [
            0, -1, 1, 123_456, -123_456, 1_771_167_600_123_456, -62_135_596_800_000_000, 253_402_300_799_999_999,
            951_782_400_000_000, -86_400_000_000, 4_102_444_799_999_999,
        ] as [Int64])
    func roundTrip(microseconds: Int64) {
        let time = Timestamp(microseconds: microseconds)
        #expect(Timestamp(rfc3339: time.rfc3339) == time)
    }

    @Test(
        "an offset that moves the instant out of years 0001 to 9999 is refused: its UTC form would not be RFC 3339",
        arguments: [
            "9999-12-31T23:59:59-00:01",  // 10000-01-01T00:00:59Z
            "9999-12-31T23:59:59.999999-23:59",
            "0001-01-01T00:00:00+00:01",  // 0000-12-31T23:59:00Z
            "0001-01-01T23:58:59.5+23:59",
        ])
    func refusedOutsideUTCYears(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test(
        "the first and last instants of years 0001 to 9999 parse, whatever the offset that names them",
        arguments: [
            ("0001-01-01T00:00:00Z", -62_135_596_800_000_000), ("0001-01-01T00:01:00+00:01", -62_135_596_800_000_000),
            ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
            ("9999-12-31T23:58:59.999999-00:01", 253_402_300_799_999_999),
        ] as [(String, Int64)])
    func edgesOfUTCYears(text: String, microseconds: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == microseconds)
    }

    @Test("days from civil and back agree on every day of 1899 to 2101")
    func calendarArithmetic() {
        var expected = Timestamp.days(fromCivil: 1899, 1, 1)
        var mismatches: [String] = []
        for year in Int64(1899)...2101 {
            for month in Int64(1)...12 {
                for day in 1...Timestamp.daysIn(month: month, year: year) {
                    let civil = Timestamp.civil(fromDays: expected)
                    if Timestamp.days(fromCivil: year, month, day) != expected || civil != (year, month, day) {
                        mismatches.append("\(year)-\(month)-\(day)")
                    }
                    expected += 1
                }
            }
        }
        #expect(mismatches.isEmpty)
        #expect(Timestamp.days(fromCivil: 1970, 1, 1) == 0)
    }

    @Test("seconds, additions and ordering")
    func arithmetic() {
        #expect(Timestamp(seconds: 2).microseconds == 2_000_000)
        #expect(Timestamp(seconds: 1).adding(seconds: -2) == Timestamp(seconds: -1))
        #expect(Timestamp(microseconds: 5).adding(microseconds: 7).microseconds == 12)
        #expect(Timestamp(microseconds: -1) < Timestamp(microseconds: 0))
        #expect(!(Timestamp(microseconds: 0) < Timestamp(microseconds: 0)))
    }

    @Test("now is close to the wall clock and moves forward")
    func now() {
        let first = Timestamp.now()
        let second = Timestamp.now()
        #expect(first <= second)
        // Later than 2024-01-01 and earlier than 2100-01-01.
        #expect(first.microseconds > 1_704_067_200_000_000 && first.microseconds < 4_102_444_800_000_000)
    }

    @Test(
        "floor division keeps the remainder non-negative",
        arguments: [
            (7, 7, (1, 0)), (-1, 86_400, (-1, 86_399)), (-86_400, 86_400, (-1, 0)), (86_399, 86_400, (0, 86_399)),
        ] as [(Int64, Int64, (Int64, Int64))])
    func floorDivision(value: Int64, divisor: Int64, expected: (Int64, Int64)) {
        #expect(value.floorDivided(by: divisor) == expected)
    }
}
