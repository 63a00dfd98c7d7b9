import Glibc
import Synchronization

/// Log levels, least to most severe.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug, info, warning, error

    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warning", "warn": self = .warning
        case "error": self = .error
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .debug: "debug"
        case .info: "info"
        case .warning: "warning"
        case .error: "error"
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One line per event on stderr in logfmt: `ts=... level=info msg="..." key=value`.
///
/// journald picks the lines up. Each line is written with a single `write(2)`, so
/// lines from different threads never interleave. The level can change at run time
/// (`SIGHUP` re-reads it).
public enum Log {
    private static let currentLevel = Atomic<Int>(LogLevel.info.rawValue)
    /// Where lines go; tests may point it at a pipe. Defaults to stderr.
    private static let descriptor = Atomic<Int32>(2)

    public static var level: LogLevel {
        get { LogLevel(rawValue: currentLevel.load(ordering: .relaxed)) ?? .info }
        set { currentLevel.store(newValue.rawValue, ordering: .relaxed) }
    }

    public static func isEnabled(_ level: LogLevel) -> Bool {
        level.rawValue >= currentLevel.load(ordering: .relaxed)
    }

    public static func debug(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        emit(.debug, message, fields)
    }

    public static func info(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        emit(.info, message, fields)
    }

    public static func warning(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        emit(.warning, message, fields)
    }

    public static func error(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        emit(.error, message, fields)
    }

    /// Writes one line when `level` is enabled.
    public static func emit(_ level: LogLevel, _ message: () -> String, _ fields: () -> KeyValuePairs<String, String>) {
        guard isEnabled(level) else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let bytes = line(level, message(), fields(), at: now)
        let fd = descriptor.load(ordering: .relaxed)
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { if errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }

    /// One logfmt line, newline included: `ts=... level=... msg=...` then the fields.
    ///
    /// Built as bytes in one buffer: the access log writes one line per request at the
    /// default level, and building it with string interpolation, padded `String`s and
    /// `+=` took 26k instructions per request, about as much as the rest of a
    /// `GET /user/<id>` (callgrind).
    static func line(
        _ level: LogLevel, _ message: String, _ fields: KeyValuePairs<String, String>, at time: timespec
    ) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(192)
        bytes.append(contentsOf: "ts=".utf8)
        appendTimestamp(time, to: &bytes)
        bytes.append(contentsOf: " level=".utf8)
        bytes.append(contentsOf: level.name.utf8)
        bytes.append(contentsOf: " msg=".utf8)
        appendQuoted(message, to: &bytes)
        for (key, value) in fields {
            bytes.append(UInt8(ascii: " "))
            bytes.append(contentsOf: key.utf8)
            bytes.append(UInt8(ascii: "="))
            appendQuoted(value, to: &bytes)
        }
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// logfmt quoting: bare when safe, otherwise in double quotes with escapes.
    static func appendQuoted(_ value: String, to bytes: inout [UInt8]) {
        // Scanned in place (a native string's bytes are contiguous), not through the
        // UTF-8 view's iterator.
        let needsQuotes = value.utf8.withContiguousStorageIfAvailable(needsQuoting) ?? needsQuoting(Array(value.utf8))
        guard needsQuotes else {
            bytes.append(contentsOf: value.utf8)
            return
        }
        bytes.append(UInt8(ascii: "\""))
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": bytes.append(contentsOf: "\\\"".utf8)
            case "\\": bytes.append(contentsOf: "\\\\".utf8)
            case "\n": bytes.append(contentsOf: "\\n".utf8)
            case "\r": bytes.append(contentsOf: "\\r".utf8)
            case "\t": bytes.append(contentsOf: "\\t".utf8)
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    bytes.append(contentsOf: "\\u{\(String(scalar.value, radix: 16))}".utf8)
                } else {
                    Unicode.UTF8.encode(scalar) { bytes.append($0) }
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsQuoting<Bytes: Collection<UInt8>>(_ utf8: Bytes) -> Bool {
        if utf8.isEmpty { return true }
        for byte in utf8
        where byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\\") || byte >= 0x7F {
            return true
        }
        return false
    }

    /// `2026-11-28T04:20:00.123Z` (UTC, milliseconds).
    static func appendTimestamp(_ time: timespec, to bytes: inout [UInt8]) {
        var parts = tm()
        var seconds = time.tv_sec
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ width: Int) {
            let zero = UInt8(ascii: "0")
            let value = max(0, value)
            if width == 4 {
                bytes.append(zero + UInt8(value / 1000 % 10))
                bytes.append(zero + UInt8(value / 100 % 10))
            } else if width == 3 {
                bytes.append(zero + UInt8(value / 100 % 10))
            }
            bytes.append(zero + UInt8(value / 10 % 10))
            bytes.append(zero + UInt8(value % 10))
        }
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        bytes.append(UInt8(ascii: "."))
        digits(Int(time.tv_nsec / 1_000_000), 3)
        bytes.append(UInt8(ascii: "Z"))
    }
}
