import Foundation
import Glibc
import Testing

@testable import Basics
@testable import SQLite

/// The Swift timestamp text is exactly SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ', …)`.
@Suite struct TimestampTests {
    static let edges: [Int64] = [
        0, 1, 999, 1000, 59_999, 86_399_999, 86_400_000,
        951_782_400_000,  // 2000-02-29
        951_868_799_999,  // 2000-02-29T23:59:59.999
        4_107_542_399_999,  // 2100-02-28T23:59:59.999 (not a leap year)
        1_795_766_400_123,  // 2026-11-27
        -1, -86_400_000,  // before 1970
        -62_135_596_800_000,  // 0001-01-01
        253_402_300_799_999,  // 9999-12-31T23:59:59.999
    ]

    @Test func matchesSQLiteStrftime() throws {
        let connection = try Connection(path: ":memory:")
        let strftime = try connection.prepare("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')")
        var generator = SystemRandomNumberGenerator()
        let samples =
            Self.edges
            + (0..<2000).map { _ in Int64.random(in: -62_135_596_800_000...253_402_300_799_999, using: &generator) }
        for milliseconds in samples {
            try strftime.bind([.integer(milliseconds)])
            let expected = try strftime.firstText()
            #expect(UTCTimestamp.text(milliseconds: milliseconds) == expected, "at \(milliseconds) ms")
        }
    }

    @Test func readsAsExpectedAndFallsBackOutsideFourDigitYears() {
        #expect(UTCTimestamp.text(milliseconds: 951_868_799_999) == "2000-02-29T23:59:59.999Z")
        #expect(UTCTimestamp.text(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
        #expect(UTCTimestamp.text(milliseconds: 253_402_300_800_000).hasPrefix("10000-01-01T00:00:00.000Z"))
        #expect(UTCTimestamp.now().count == 24)
    }

    @Test func timestampsArePaddedUTCWithMilliseconds() {
        #expect(UTCTimestamp.text(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(UTCTimestamp.text(milliseconds: 946_684_799_999) == "1999-12-31T23:59:59.999Z")
        #expect(UTCTimestamp.text(milliseconds: 1_709_210_096_005) == "2024-02-29T12:34:56.005Z")
        var appended: [UInt8] = Array("ts=".utf8)
        UTCTimestamp.append(milliseconds: 1_709_210_096_005, to: &appended)
        #expect(String(decoding: appended, as: UTF8.self) == "ts=2024-02-29T12:34:56.005Z")
    }

    /// The arithmetic calendar agrees with glibc's `gmtime_r` over four centuries of
    /// days (leap years, 1900 and 2100 which are not, 2000 which is) and before 1970.
    @Test func theCalendarAgreesWithGmtime() {
        var seconds = -2_208_988_800  // 1900-01-01
        while seconds < 10_413_792_000 {  // 2300-01-01
            var expected = tm()
            var time = seconds
            gmtime_r(&time, &expected)
            let text = UTCTimestamp.text(milliseconds: Int64(seconds) * 1000)
            let wanted = String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.000Z", Int(expected.tm_year) + 1900, Int(expected.tm_mon) + 1,
                Int(expected.tm_mday), Int(expected.tm_hour), Int(expected.tm_min), Int(expected.tm_sec))
            #expect(text == wanted, "at \(seconds)")
            if text != wanted { break }
            seconds += 86_400 + 3_607  // a day and a bit: every time of day comes round
        }
    }
}

@Suite struct DecimalTextTests {
    @Test func wholeNumbersInDecimal() {
        for value: Int64 in [0, 7, 200, 4_294_967_296, -12, .max, .min] {
            var bytes: [UInt8] = Array("n=".utf8)
            bytes.appendDecimal(value)
            #expect(String(decoding: bytes, as: UTF8.self) == "n=\(value)")
            #expect(DecimalText.count(value) == String(value).utf8.count)
        }
        var padded: [UInt8] = []
        padded.appendDecimal(7, width: 3)
        padded.appendDecimal(1234, width: 2)
        #expect(String(decoding: padded, as: UTF8.self) == "0071234")
    }
}
