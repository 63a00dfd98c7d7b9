import Basics
import Testing

@Suite struct HexDigitTests {
    /// Exactly 0-9, a-f and A-F are digits, with their values; no other byte is one.
    @Test func everyByteParsesToItsValueOrNothing() {
        for byte in UInt8.min...UInt8.max {
            let expected = UInt8(String(UnicodeScalar(byte)), radix: 16)
            #expect(HexDigit.value(byte) == expected, "byte \(byte)")
        }
    }

    @Test func aValueIsWrittenAsSixteenZeroPaddedLowerCaseDigits() {
        for value: UInt64 in [0, 1, 0xAB, 0x0123_4567_89AB_CDEF, .max] {
            var bytes = [UInt8](repeating: 0, count: 16)
            bytes.withUnsafeMutableBufferPointer { HexDigit.write(value, into: $0) }
            let digits = String(value, radix: 16)
            let expected = String(repeating: "0", count: 16 - digits.count) + digits
            #expect(String(decoding: bytes, as: UTF8.self) == expected)
        }
    }
}
