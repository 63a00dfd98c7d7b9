import Glibc
import Testing

@testable import Lifecycle

/// The logfmt lines `Log` writes, built from fixed inputs and a fixed time.
@Suite struct LoggerTests {
    /// 2026-11-28T04:20:07.089Z
    static let time = timespec(tv_sec: 1_795_839_607, tv_nsec: 89_654_321)

    func text(_ level: LogLevel, _ message: String, _ fields: KeyValuePairs<String, String> = [:]) -> String {
        String(decoding: Log.line(level, message, fields, at: Self.time), as: UTF8.self)
    }

    @Test func anAccessLineHasTheTimeLevelMessageAndFieldsInOrder() {
        #expect(
            text(.info, "request", ["request_id": "abc123", "method": "GET", "path": "/user/7", "status": "200", "duration_ms": "0.125"])
                == "ts=2026-11-28T04:20:07.089Z level=info msg=request request_id=abc123 method=GET path=/user/7 status=200 duration_ms=0.125\n"
        )
    }

    @Test func valuesWithSpacesQuotesOrControlCharactersAreQuotedAndEscaped() {
        #expect(text(.warning, "Background task completed") == "ts=2026-11-28T04:20:07.089Z level=warning msg=\"Background task completed\"\n")
        #expect(text(.error, "x", ["error": "say \"hi\"\\now\n\r\t\u{1}\u{7F}"])
            == "ts=2026-11-28T04:20:07.089Z level=error msg=x error=\"say \\\"hi\\\"\\\\now\\n\\r\\t\\u{1}\\u{7f}\"\n")
        #expect(text(.debug, "", ["k": "a=b", "empty": ""]) == "ts=2026-11-28T04:20:07.089Z level=debug msg=\"\" k=\"a=b\" empty=\"\"\n")
    }

    @Test func nonASCIITextIsQuotedAndKeptByteForByte() {
        #expect(text(.info, "x", ["name": "Zoë 😀 שלום"]) == "ts=2026-11-28T04:20:07.089Z level=info msg=x name=\"Zoë 😀 שלום\"\n")
    }

    @Test func timestampsArePaddedUTCWithMilliseconds() {
        func stamp(_ seconds: Int, _ nanoseconds: Int) -> String {
            var bytes: [UInt8] = []
            Log.appendTimestamp(timespec(tv_sec: seconds, tv_nsec: nanoseconds), to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        #expect(stamp(0, 0) == "1970-01-01T00:00:00.000Z")
        #expect(stamp(946_684_799, 999_999_999) == "1999-12-31T23:59:59.999Z")
        #expect(stamp(1_709_210_096, 5_000_000) == "2024-02-29T12:34:56.005Z")
    }

    /// The access line is the line `emit` writes for the same fields.
    @Test func theAccessLineIsTheGeneralLineOfItsFields() {
        for (status, milliseconds, duration) in [(200, 0.125, "0.125"), (404, 12.3456, "12.346"), (503, 1500.0, "1500.000")] {
            let access = Log.requestLine(
                .warning, requestID: "req 1", method: "GET", path: "/user/ünï", status: status, milliseconds: milliseconds,
                at: Self.time
            )
            let general = Log.line(
                .warning, "request",
                ["request_id": "req 1", "method": "GET", "path": "/user/ünï", "status": String(status), "duration_ms": duration],
                at: Self.time
            )
            #expect(String(decoding: access, as: UTF8.self) == String(decoding: general, as: UTF8.self))
        }
    }

    @Test func durationsHaveThreeDecimals() {
        func text(_ value: Double) -> String {
            var bytes: [UInt8] = []
            Log.appendThousandths(value, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        #expect(text(0) == "0.000")
        #expect(text(0.0004) == "0.000")
        #expect(text(0.0006) == "0.001")
        #expect(text(0.05) == "0.050")
        #expect(text(1.5) == "1.500")
        #expect(text(12.3456) == "12.346")
        #expect(text(1234.007) == "1234.007")
        #expect(text(9.9996) == "10.000")
        #expect(text(-2.5) == "-2.500")
        #expect(text(.nan) == "0.000")
        #expect(text(.infinity) == "1000000000000.000")
    }

    @Test func wholeNumbersInDecimal() {
        func text(_ value: Int) -> String {
            var bytes: [UInt8] = []
            Log.appendDecimal(value, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        for value in [0, 7, 200, 4_294_967_296, -12, Int.max, Int.min] {
            #expect(text(value) == String(value))
        }
    }

    /// The arithmetic calendar agrees with glibc's `gmtime_r` over four centuries of
    /// days (leap years, 1900 and 2100 which are not, 2000 which is) and before 1970.
    @Test func theCalendarAgreesWithGmtime() {
        var seconds = -2_208_988_800  // 1900-01-01
        while seconds < 10_413_792_000 {  // 2300-01-01
            var expected = tm()
            var time = seconds
            gmtime_r(&time, &expected)
            let got = Log.civil(secondsSinceEpoch: seconds)
            #expect(got.year == Int(expected.tm_year) + 1900 && got.month == Int(expected.tm_mon) + 1
                && got.day == Int(expected.tm_mday) && got.hour == Int(expected.tm_hour)
                && got.minute == Int(expected.tm_min) && got.second == Int(expected.tm_sec), "at \(seconds)")
            if got.year != Int(expected.tm_year) + 1900 || got.day != Int(expected.tm_mday) { break }
            seconds += 86_400 + 3_607  // a day and a bit: every time of day comes round
        }
    }
}
