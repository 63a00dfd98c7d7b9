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
}
