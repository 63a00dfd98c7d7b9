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
        var line = "ts=\(timestamp()) level=\(level.name) msg=\(quoted(message()))"
        for (key, value) in fields() {
            line += " \(key)=\(quoted(value))"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        let fd = descriptor.load(ordering: .relaxed)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { if errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }

    /// logfmt quoting: bare when safe, otherwise in double quotes with escapes.
    static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.utf8.contains { byte in
            byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\\") || byte >= 0x7F
        }
        guard needsQuotes else { return value }
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(parts.tm_year + 1900)-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }
}
