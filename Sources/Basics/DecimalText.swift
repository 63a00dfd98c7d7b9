/// Whole numbers as decimal ASCII digits, written straight into byte buffers (no
/// `String` in between): response heads, JSON numbers and log lines use them.
public enum DecimalText {
    /// How many bytes `value` takes, `-` included.
    @inlinable
    public static func count(_ value: Int64) -> Int {
        var count = value < 0 ? 2 : 1
        var rest = value.magnitude
        while rest >= 10 {
            rest /= 10
            count += 1
        }
        return count
    }

    /// Writes `value` at the start of `buffer`, which has room for `length` bytes, the
    /// value's `count` (passed in: callers have measured it already).
    @inlinable
    public static func write(_ value: Int64, length: Int, into buffer: UnsafeMutableRawBufferPointer) {
        var position = length - 1
        var rest = value.magnitude
        if value < 0 { buffer[0] = UInt8(ascii: "-") }
        repeat {
            buffer[position] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
            position -= 1
        } while rest > 0
    }
}

extension [UInt8] {
    /// Appends `value` in decimal.
    @inlinable
    public mutating func appendDecimal(_ value: Int64) {
        let length = DecimalText.count(value)
        // Room for the longest Int64 (20 bytes with its sign) on the stack.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &digits) { buffer in
            DecimalText.write(value, length: length, into: buffer)
            append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<length]))
        }
    }

    /// Appends `value` with at least `width` digits, zero-padded (`7` as `007`).
    @inlinable
    public mutating func appendDecimal(_ value: Int64, width: Int) {
        let length = DecimalText.count(value)
        if length < width { append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width - length)) }
        appendDecimal(value)
    }
}
