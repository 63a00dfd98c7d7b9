import Testing

@testable import UsersApp

/// The ASCII fast paths of validation give exactly the answers of the general,
/// Unicode-property paths they stand in for.
@Suite struct ValidationFastPathTests {
    static let pieces = [
        "a", "b", "@", ".", " ", "\t", "\r\n", "\n", "\u{0B}", "\u{0C}", "\u{01}", "\u{7F}", "x.y", "-", "+",
    ]

    static func samples(count: Int) -> [String] {
        var generator = SystemRandomNumberGenerator()
        var texts = [
            "", "a@b.c", "a@b", "@b.c", "a@@b.c", "a@b..c", "a@.b", "a@b.", " a@b.c", "a@b.c ", "a b@c.d", "a\t@b.c",
        ]
        for _ in 0..<count {
            let length = Int.random(in: 0...10, using: &generator)
            texts.append((0..<length).map { _ in pieces.randomElement(using: &generator)! }.joined())
        }
        return texts
    }

    @Test func emailRuleAgreesWithTheUnicodePath() {
        for text in Self.samples(count: 20_000) {
            #expect(UserValidation.isASCII(text))
            #expect(
                UserValidation.isPlausibleASCIIEmail(text.utf8) == UserValidation.isPlausibleUnicodeEmail(text),
                "\(text.debugDescription)")
        }
    }

    @Test func trimmedLengthAgreesWithTheUnicodePath() {
        for text in Self.samples(count: 20_000) {
            #expect(
                UserValidation.trimmedLength(text) == UserValidation.trimmedScalarCount(text),
                "\(text.debugDescription)")
        }
    }

    @Test func nonASCIITakesTheUnicodePath() {
        #expect(!UserValidation.isASCII("zoë@example.com"))
        #expect(UserValidation.isPlausibleEmail("zoë@exämple.com"))
        #expect(!UserValidation.isPlausibleEmail("a\u{00A0}b@example.com"))  // no-break space is white space
        #expect(UserValidation.trimmedLength("\u{3000}Zoë\u{3000}") == 3)
    }

    /// `@` and `.` are found as scalars: a combining mark or an emoji modifier right
    /// after one forms a single character with it, which must not hide it.
    @Test func separatorsAreFoundThoughAMarkFollowsThem() {
        #expect(UserValidation.isPlausibleEmail("0@0.\u{1F3FB}\u{DF}"))
        #expect(UserValidation.isPlausibleEmail("a@\u{301}b.c"))
        #expect(UserValidation.isPlausibleEmail("a\u{301}@b.c"))
        #expect(!UserValidation.isPlausibleEmail("a@b.\u{301}" + "@c.d"))
        #expect(!UserValidation.isPlausibleEmail("a@b\u{301}"))
    }

    @Test func jsonContentTypes() {
        for accepted in [
            "application/json", "Application/JSON", "application/json; charset=utf-8", "application/problem+json",
            "application/json;charset=\"UTF-8\"",
        ] {
            #expect(RequestBody.isJSON(accepted), "\(accepted)")
        }
        for rejected in [
            nil, "", "text/plain", "application/jsonx", "application/json; charset=latin1",
            "application/x-www-form-urlencoded",
        ] {
            #expect(!RequestBody.isJSON(rejected), "\(rejected ?? "nil")")
        }
    }
}
