import Foundation
import Lifecycle

/// Timestamps as the text usersd stores: ISO 8601 UTC with milliseconds,
/// `2026-11-27T10:00:00.123Z` — the same text as SQLite's
/// `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`. Every statement binds it instead of
/// formatting it in SQL per column, and an insert knows its row without `RETURNING`.
public enum Timestamp {
    /// Milliseconds since the Unix epoch, now.
    public static func nowMilliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// Now, as stored text.
    public static func now() -> String {
        text(milliseconds: nowMilliseconds())
    }

    /// `milliseconds` since the Unix epoch as stored text. Years 0–9999 by arithmetic
    /// (days to civil date, proleptic Gregorian); others through Foundation.
    public static func text(milliseconds: Int64) -> String {
        let (days, millisOfDay) = floorDivide(milliseconds, 86_400_000)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        guard (0...9999).contains(year) else { return foundationText(milliseconds: milliseconds) }
        let seconds = millisOfDay / 1000
        return String(unsafeUninitializedCapacity: 24) { buffer in
            var index = 0
            func put(_ value: Int64, _ width: Int) {
                var value = value
                for position in stride(from: index + width - 1, through: index, by: -1) {
                    buffer[position] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                index += width
            }
            func put(_ character: Unicode.Scalar) {
                buffer[index] = UInt8(ascii: character)
                index += 1
            }
            put(year, 4); put("-"); put(month, 2); put("-"); put(day, 2); put("T")
            put(seconds / 3600, 2); put(":"); put(seconds / 60 % 60, 2); put(":"); put(seconds % 60, 2)
            put("."); put(millisOfDay % 1000, 3); put("Z")
            return index
        }
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = ((value % divisor) + divisor) % divisor
        return ((value - remainder) / divisor, remainder)
    }

    /// The slow path for years outside 0–9999.
    static func foundationText(milliseconds: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        var components = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: date)
        components.nanosecond = nil
        func pad(_ value: Int?, _ width: Int) -> String {
            let text = String(value ?? 0)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let millis = Int(((milliseconds % 1000) + 1000) % 1000)
        return "\(pad(components.year, 4))-\(pad(components.month, 2))-\(pad(components.day, 2))T"
            + "\(pad(components.hour, 2)):\(pad(components.minute, 2)):\(pad(components.second, 2)).\(pad(millis, 3))Z"
    }
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC (for `run_at`).
public func isoTimestamp(milliseconds: Int64) -> String {
    Timestamp.text(milliseconds: milliseconds)
}
