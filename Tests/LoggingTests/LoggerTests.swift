import Testing

@testable import Logging

/// The logfmt lines `Log` writes, built from fixed inputs and a fixed time.
@Suite struct LoggerTests {
    /// 2026-11-28T04:20:07.089Z, in milliseconds since the Unix epoch.
    static let time: Int64 = 1_795_839_607_089

    func text(_ level: LogLevel, _ message: String, _ fields: KeyValuePairs<String, String> = [:]) -> String {
        String(decoding: Log.line(level, message, fields, at: Self.time), as: UTF8.self)
    }

    @Test func anAccessLineHasTheTimeLevelMessageAndFieldsInOrder() {
        #expect(
            text(
                .info, "request",
                ["request_id": "abc123", "method": "GET", "path": "/user/7", "status": "200", "duration_ms": "0.125"])
                == "ts=2026-11-28T04:20:07.089Z level=info msg=request request_id=abc123 method=GET path=/user/7 status=200 duration_ms=0.125\n"
        )
    }

    @Test func valuesWithSpacesQuotesOrControlCharactersAreQuotedAndEscaped() {
        #expect(
            text(.warning, "Background task completed")
                == "ts=2026-11-28T04:20:07.089Z level=warning msg=\"Background task completed\"\n")
        #expect(
            text(.error, "x", ["error": "say \"hi\"\\now\n\r\t\u{1}\u{7F}"])
                == "ts=2026-11-28T04:20:07.089Z level=error msg=x error=\"say \\\"hi\\\"\\\\now\\n\\r\\t\\u{1}\\u{7f}\"\n"
        )
        #expect(
            text(.debug, "", ["k": "a=b", "empty": ""])
                == "ts=2026-11-28T04:20:07.089Z level=debug msg=\"\" k=\"a=b\" empty=\"\"\n")
    }

    @Test func nonASCIITextIsQuotedAndKeptByteForByte() {
        #expect(
            text(.info, "x", ["name": "Zoë 😀 שלום"])
                == "ts=2026-11-28T04:20:07.089Z level=info msg=x name=\"Zoë 😀 שלום\"\n")
    }

    /// A value as `appendQuoted` writes it.
    func quoted(_ value: String) -> String {
        var bytes: [UInt8] = []
        Log.appendQuoted(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func c1ControlsAreEscaped() {
        #expect(quoted("a\u{80}b\u{85}c\u{9B}31m\u{9F}") == "\"a\\u{80}b\\u{85}c\\u{9b}31m\\u{9f}\"")
        for value in UInt32(0x80)...0x9F {
            #expect(quoted(String(Unicode.Scalar(value)!)) == "\"\\u{\(String(value, radix: 16))}\"")
        }
        // Next to the range: NO-BREAK SPACE and é are text.
        #expect(quoted("\u{A0}caf\u{E9}") == "\"\u{A0}caf\u{E9}\"")
    }

    @Test func bidiFormattingCharactersAreEscaped() {
        let marks: [UInt32] = [0x061C, 0x200E, 0x200F]
        let embeddingsAndOverrides: [UInt32] = Array(0x202A...0x202E)
        let isolates: [UInt32] = Array(0x2066...0x2069)
        for value in marks + embeddingsAndOverrides + isolates {
            #expect(quoted("x" + String(Unicode.Scalar(value)!) + "y") == "\"x\\u{\(String(value, radix: 16))}y\"")
        }
        #expect(quoted("admin\u{202E}gpj.exe") == "\"admin\\u{202e}gpj.exe\"")
        // Neighbours are text: ZERO WIDTH JOINER (emoji sequences need it), ARABIC SEMICOLON, PER MILLE.
        #expect(quoted("\u{200D}\u{061B}\u{2030}") == "\"\u{200D}\u{061B}\u{2030}\"")
    }

    @Test func lineAndParagraphSeparatorsAreEscaped() {
        #expect(quoted("one\u{2028}two\u{2029}three") == "\"one\\u{2028}two\\u{2029}three\"")
    }

    /// A value built to end the line, forge a field or reorder what is shown stays one
    /// line whose bytes hold none of those characters.
    @Test func aHostileValueStaysOneLineWithoutItsControls() {
        let hostile = "/user/1\u{85}ts=x level=error\u{2028}\u{2029}\u{9B}2J\u{1B}[2J\u{202E}\u{2066}\u{200F}\u{061C}\n"
        let line = Log.requestLine(
            .info, requestID: "r", method: "GET", path: hostile, status: 404, milliseconds: 1, at: Self.time
        )
        let text = String(decoding: line, as: UTF8.self)
        #expect(
            text == "ts=2026-11-28T04:20:07.089Z level=info msg=request request_id=r method=GET "
                + "path=\"/user/1\\u{85}ts=x level=error\\u{2028}\\u{2029}\\u{9b}2J\\u{1b}[2J\\u{202e}\\u{2066}"
                + "\\u{200f}\\u{61c}\\n\" status=404 duration_ms=1.000\n")
        #expect(line.filter { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }.count == 1)
        #expect(line.allSatisfy { (0x20..<0x7F).contains($0) || $0 == UInt8(ascii: "\n") })
    }

    @Test func ordinaryNonASCIITextIsNotEscaped() {
        for text in ["café", "Zoë", "😀", "👨\u{200D}👩\u{200D}👧", "שלום", "مرحبا", "日本語", "Ελληνικά", "naïve ‰ €"] {
            #expect(quoted(text) == "\"\(text)\"")
        }
    }

    /// The access line is the line `emit` writes for the same fields.
    @Test func theAccessLineIsTheGeneralLineOfItsFields() {
        for (status, milliseconds, duration) in [
            (200, 0.125, "0.125"), (404, 12.3456, "12.346"), (503, 1500.0, "1500.000"),
        ] {
            let access = Log.requestLine(
                .warning, requestID: "req 1", method: "GET", path: "/user/ünï", status: status,
                milliseconds: milliseconds,
                at: Self.time
            )
            let general = Log.line(
                .warning, "request",
                [
                    "request_id": "req 1", "method": "GET", "path": "/user/ünï", "status": String(status),
                    "duration_ms": duration,
                ],
                at: Self.time
            )
            #expect(String(decoding: access, as: UTF8.self) == String(decoding: general, as: UTF8.self))
        }
    }

    /// A request admitted with an API token names the token (its name, from the
    /// token file) after the duration; the general line of the same fields agrees.
    @Test func theAccessLineNamesTheToken() {
        let access = Log.requestLine(
            .info, requestID: "r", method: "GET", path: "/users", status: 200, milliseconds: 2, tokenName: "ci-reader",
            aborted: true, at: Self.time)
        let general = Log.line(
            .info, "request",
            [
                "request_id": "r", "method": "GET", "path": "/users", "status": "200", "duration_ms": "2.000",
                "token_name": "ci-reader", "aborted": "true",
            ],
            at: Self.time)
        #expect(String(decoding: access, as: UTF8.self) == String(decoding: general, as: UTF8.self))
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
}
