/// Hexadecimal digits, as ASCII.
public enum HexDigit {
    /// Writes `value` as 16 lower-case hex digits, zero-padded, into the first 16 bytes
    /// of `buffer`.
    @inlinable
    public static func write(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>) {
        let digits: StaticString = "0123456789abcdef"
        digits.withUTF8Buffer { table in
            for index in 0..<16 {
                buffer[index] = table[Int((value >> (60 - 4 * UInt64(index))) & 0xF)]
            }
        }
    }

    /// The value of the digit `byte` (either case); `nil` when it is not one.
    @inlinable
    public static func value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
