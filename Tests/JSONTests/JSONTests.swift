import Testing

@testable import JSON

@Suite struct JSONParserTests {
    @Test func parsesObjectsWithEveryType() throws {
        let value = try JSONParser.parse(
            Array(
                #"{"s":"a\"b\u00e9\ud83d\ude00","i":-12,"d":1.5e2,"t":true,"f":false,"n":null,"a":[1,[]],"o":{}}"#.utf8)
        )
        #expect(value["s"] == .string("a\"bé😀"))
        #expect(value["i"] == .number(-12, integer: -12))
        #expect(value["d"] == .number(150, integer: 150))  // a whole value, however spelled
        #expect(value["t"] == .bool(true))
        #expect(value["f"] == .bool(false))
        #expect(value["n"] == .null)
        #expect(value["a"] == .array([.number(1, integer: 1), .array([])]))
        #expect(value["o"] == .object([:]))
    }

    @Test func integerOnlyForWholeValuesThatFitExactly() throws {
        #expect(try JSONParser.parse(Array("15.0".utf8)) == .number(15, integer: 15))
        #expect(try JSONParser.parse(Array("1.5".utf8)) == .number(1.5, integer: nil))
        #expect(try JSONParser.parse(Array("1e300".utf8)) == .number(1e300, integer: nil))
        #expect(
            try JSONParser.parse(Array("-108260922881407909888".utf8)) == .number(-108260922881407909888, integer: nil))
    }

    @Test(arguments: [
        "", "{", "{\"a\":}", "{\"a\" 1}", "[1,]", "{\"a\":1,}", "01", "1.", "-", "tru", "nul",
        "\"abc", "\"\\x\"", "\"\\ud800\"", "{\"a\":1} x", "{'a':1}", "\"tab\there\"",
    ])
    func rejectsMalformedDocuments(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        let bytes: [UInt8] = Array(#"{"name":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(bytes) }
    }

    /// Strings without escapes are read straight from the input; with escapes, through
    /// a buffer. Both give the same text, small or long, ASCII or not.
    @Test func stringsWithAndWithoutEscapesDecodeAlike() throws {
        for text in [
            "", "a", "fifteen bytes!!", "sixteen bytes!!!", "ann@example.com", "é", "Zoë 😀 שלום",
            String(repeating: "long ", count: 50), "\"lead", "trail\\", "mid\ndle", "😀\t",
        ] {
            var writer = JSONWriter()
            writer.object { $0.field(text, text) }
            let parsed = try JSONParser.parse(writer.bytes)
            #expect(parsed == .object([text: .string(text)]), "\(text)")
        }
        // Invalid UTF-8 is refused on either path.
        for bytes: [UInt8] in [[0x22, 0xC3, 0x22], [0x22, 0x5C, 0x6E, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22]] {
            #expect(throws: JSONParseError.self) { try JSONParser.parse(bytes) }
        }
    }

    @Test func limitsNestingDepth() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
        let fine = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(throws: Never.self) { try JSONParser.parse(Array(fine.utf8)) }
    }

    @Test func keepsBigIntegersApartFromInt64() throws {
        let value = try JSONParser.parse(Array("123456789012345678901234567890".utf8))
        guard case .number(_, let integer) = value else {
            Issue.record("not a number")
            return
        }
        #expect(integer == nil)
    }
}

@Suite struct JSONWriterTests {
    @Test func escapesStringsAndRoundTrips() throws {
        let tricky = "quote\" backslash\\ newline\n tab\t nul\u{0} emoji😀 rtl שלום '); DROP TABLE users;--"
        var writer = JSONWriter()
        writer.object { object in
            object.field("name", tricky)
            object.field("id", Int64(42))
            object.field("ok", true)
            object.field("none", nil as String?)
        }
        let parsed = try JSONParser.parse(writer.bytes)
        #expect(parsed["name"] == .string(tricky))
        #expect(parsed["id"] == .number(42, integer: 42))
        #expect(parsed["ok"] == .bool(true))
        #expect(parsed["none"] == .null)
    }

    /// Escapes at the very start and end, back to back, and none at all.
    @Test func escapesAtTheEdgesOfAString() {
        for (text, expected) in [
            ("\"x\\", #""\"x\\""#), ("\n\u{1}", #""\n\u0001""#), ("plain", #""plain""#), ("", #""""#),
        ] {
            var writer = JSONWriter()
            writer.string(text)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == expected)
        }
    }

    @Test func writesCompactOutputInCallOrder() {
        var writer = JSONWriter()
        writer.object { object in
            object.field("id", 1)
            object.field("name", "a")
            object.field("list") { $0.array([1, 2]) { w, n in w.integer(Int64(n)) } }
        }
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"id":1,"name":"a","list":[1,2]}"#)
    }

    @Test(arguments: [Int64(0), 7, -7, 10, 1_000_000, Int64.max, Int64.min])
    func writesIntegersAsDecimalText(value: Int64) {
        var writer = JSONWriter()
        writer.integer(value)
        #expect(String(decoding: writer.bytes, as: UTF8.self) == String(value))
    }
}
