import Testing

@testable import UsersApp

/// The access log's `duration_ms`: milliseconds with exactly three decimals.
@Suite struct AccessLogFormatTests {
    @Test func durationsHaveThreeDecimals() {
        #expect(format3(0) == "0.000")
        #expect(format3(0.0004) == "0.000")
        #expect(format3(0.0006) == "0.001")
        #expect(format3(0.05) == "0.050")
        #expect(format3(0.5) == "0.500")
        #expect(format3(1.5) == "1.500")
        #expect(format3(12.3456) == "12.346")
        #expect(format3(1234.007) == "1234.007")
        #expect(format3(9.9996) == "10.000")
    }
}
