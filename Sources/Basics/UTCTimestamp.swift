/// ISO 8601 UTC timestamps with milliseconds, `2026-11-27T10:00:00.123Z`: the text
/// usersd stores (the same as SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`) and
/// writes in its log lines. Years outside 0–9999 take the digits they need.
public enum UTCTimestamp {
    /// The most bytes a timestamp takes (a year of Int64's range and a sign).
    static let maximumLength = 40

    /// Now, as text.
    public static func now() -> String {
        text(milliseconds: WallClock.milliseconds())
    }

    /// `milliseconds` since the Unix epoch, as text.
    public static func text(milliseconds: Int64) -> String {
        String(unsafeUninitializedCapacity: maximumLength) { write(milliseconds: milliseconds, into: $0) }
    }

    /// Appends the text of `milliseconds` since the Unix epoch.
    public static func append(milliseconds: Int64, to bytes: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maximumLength) { buffer in
            let count = write(milliseconds: milliseconds, into: buffer)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<count]))
        }
    }

    /// Writes the text into `buffer` (at least `maximumLength` bytes); returns its length.
    static func write(milliseconds: Int64, into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let (days, millisecondOfDay) = floorDivide(milliseconds, 86_400_000)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        let second = millisecondOfDay / 1000
        var index = 0
        func put(_ value: Int64, _ width: Int) {
            var rest = value
            for position in stride(from: index + width - 1, through: index, by: -1) {
                buffer[position] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
            index += width
        }
        func put(_ character: Unicode.Scalar) {
            buffer[index] = UInt8(ascii: character)
            index += 1
        }
        if year < 0 { put("-") }
        put(abs(year), max(4, DecimalText.count(abs(year))))
        put("-")
        put(month, 2)
        put("-")
        put(day, 2)
        put("T")
        put(second / 3600, 2)
        put(":")
        put(second / 60 % 60, 2)
        put(":")
        put(second % 60, 2)
        put(".")
        put(millisecondOfDay % 1000, 3)
        put("Z")
        return index
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = ((value % divisor) + divisor) % divisor
        return ((value - remainder) / divisor, remainder)
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01, by arithmetic
    /// (Howard Hinnant's `civil_from_days`): cheaper than `gmtime_r` or a calendar.
    static func civilDate(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}
