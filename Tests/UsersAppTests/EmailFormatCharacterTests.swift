import Foundation
import HTTP
import Testing

@testable import UsersApp

/// Emails with format characters (general category Cf: zero-width spaces and joiners,
/// bidi marks) are refused (SPEC §2): invisible, they make one address look like another.
@Suite struct EmailFormatCharacterTests {
    func refusal(_ email: String) -> HTTPError? {
        do {
            try UserValidation.validateEmail(email)
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [
        ("sam\u{200B}@x.io", "U+200B"), ("\u{202E}oi.x@mas", "U+202E"), ("sa\u{200D}m@x.io", "U+200D"),
        ("\u{FEFF}sam@x.io", "U+FEFF"), ("sam@x.io\u{2066}", "U+2066"), ("s\u{AD}am@x.io", "U+00AD"),
        ("sam@x\u{E0001}.io", "U+E0001"),
    ])
    func formatCharactersAreA422NamingEmail(_ sample: (String, String)) throws {
        let error = try #require(refusal(sample.0))
        #expect(error.status == .unprocessableContent)
        #expect(error.field == "email")
        #expect(error.message.contains("format characters") && error.message.hasSuffix(sample.1), "\(error.message)")
    }

    @Test func otherUnicodeEmailsStillPass() {
        let emails = [
            "zo\u{EB}@ex\u{E4}mple.com", "stra\u{DF}e@x.io", "cafe\u{301}@x.io", "\u{5E9}\u{5DC}\u{5D5}\u{5DD}@x.io",
        ]
        for email in emails {
            #expect(refusal(email) == nil, "\(email)")
        }
    }

    /// Every character Python's Unicode database puts in Cf is refused wherever it stands.
    @Test func everyFormatCharacterIsRefused() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            "import unicodedata as u; print(' '.join('%x' % v for v in range(0x110000) if u.category(chr(v)) == 'Cf'))",
        ]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let values = text.split(whereSeparator: \.isWhitespace).compactMap { UInt32($0, radix: 16) }
        #expect(values.count > 150)
        var accepted: [String] = []
        for value in values {
            let scalar = String(Unicode.Scalar(value)!)
            for email in ["a\(scalar)b@x.io", "\(scalar)ab@x.io", "ab@x.io\(scalar)", "ab@x\(scalar).io"]
            where refusal(email)?.message.contains("format characters") != true {
                accepted.append(email.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " "))
            }
        }
        #expect(accepted.isEmpty, "\(accepted.count) not refused, first: \(accepted.prefix(10))")
    }
}
