import Foundation
import Testing

@testable import SQLite
@testable import Store

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
        let samples = Self.edges + (0..<2000).map { _ in Int64.random(in: -62_135_596_800_000...253_402_300_799_999, using: &generator) }
        for milliseconds in samples {
            try strftime.bind([.integer(milliseconds)])
            let expected = try strftime.firstText()
            #expect(Timestamp.text(milliseconds: milliseconds) == expected, "at \(milliseconds) ms")
        }
    }

    @Test func readsAsExpectedAndFallsBackOutsideFourDigitYears() {
        #expect(Timestamp.text(milliseconds: 951_868_799_999) == "2000-02-29T23:59:59.999Z")
        #expect(Timestamp.text(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
        #expect(Timestamp.text(milliseconds: 253_402_300_800_000).hasPrefix("10000-01-01T00:00:00.000Z"))
        #expect(Timestamp.now().count == 24)
    }
}
