import Basics
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

    public static func debug(
        _ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]
    ) {
        emit(.debug, message, fields)
    }

    public static func info(
        _ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]
    ) {
        emit(.info, message, fields)
    }

    public static func warning(
        _ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]
    ) {
        emit(.warning, message, fields)
    }

    public static func error(
        _ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, String> = [:]
    ) {
        emit(.error, message, fields)
    }

    /// Writes one line when `level` is enabled.
    public static func emit(_ level: LogLevel, _ message: () -> String, _ fields: () -> KeyValuePairs<String, String>) {
        guard isEnabled(level) else { return }
        write(line(level, message(), fields(), at: WallClock.milliseconds()))
    }

    /// The access-log line of one request (`msg=request` with request_id, method,
    /// path, status and duration_ms, `token_name` when the request came with a known
    /// API token, and `aborted=true` for a response cut short), as `emit` would write
    /// it, without building the fields as strings first: it is the one line written
    /// per request.
    public static func request(
        _ level: LogLevel, requestID: String, method: String, path: String, status: Int, milliseconds: Double,
        tokenName: String? = nil, aborted: Bool = false
    ) {
        guard isEnabled(level) else { return }
        write(
            requestLine(
                level, requestID: requestID, method: method, path: path, status: status,
                milliseconds: milliseconds, tokenName: tokenName, aborted: aborted, at: WallClock.milliseconds()))
    }

    private static func write(_ bytes: [UInt8]) {
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
    /// Built as bytes in one buffer, without intermediate strings: the access log
    /// writes one line per request at the default level.
    static func line(
        _ level: LogLevel, _ message: String, _ fields: KeyValuePairs<String, String>, at time: Int64
    ) -> [UInt8] {
        var bytes = head(level, message, at: time)
        for (key, value) in fields {
            appendField(key, value, to: &bytes)
        }
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    static func requestLine(
        _ level: LogLevel, requestID: String, method: String, path: String, status: Int, milliseconds: Double,
        tokenName: String? = nil, aborted: Bool = false, at time: Int64
    ) -> [UInt8] {
        var bytes = head(level, "request", at: time)
        appendField("request_id", requestID, to: &bytes)
        appendField("method", method, to: &bytes)
        appendField("path", path, to: &bytes)
        bytes.append(contentsOf: " status=".utf8)
        bytes.appendDecimal(Int64(status))
        bytes.append(contentsOf: " duration_ms=".utf8)
        appendThousandths(milliseconds, to: &bytes)
        if let tokenName { appendField("token_name", tokenName, to: &bytes) }
        if aborted { bytes.append(contentsOf: " aborted=true".utf8) }
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// `time`: milliseconds since the Unix epoch.
    private static func head(_ level: LogLevel, _ message: String, at time: Int64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        bytes.append(contentsOf: "ts=".utf8)
        UTCTimestamp.append(milliseconds: time, to: &bytes)
        bytes.append(contentsOf: " level=".utf8)
        bytes.append(contentsOf: level.name.utf8)
        bytes.append(contentsOf: " msg=".utf8)
        appendQuoted(message, to: &bytes)
        return bytes
    }

    private static func appendField(_ key: String, _ value: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: key.utf8)
        bytes.append(UInt8(ascii: "="))
        appendQuoted(value, to: &bytes)
    }

    /// A number rounded to three decimals, always with all three (`12.300`).
    static func appendThousandths(_ value: Double, to bytes: inout [UInt8]) {
        // A duration is finite and far below a trillion; anything else still formats.
        let bounded = value.isNaN ? 0 : min(max(value, -1e12), 1e12)
        let thousandths = Int((bounded * 1000).rounded())
        if thousandths < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = Int(thousandths.magnitude)
        bytes.appendDecimal(Int64(magnitude / 1000))
        let fraction = magnitude % 1000
        bytes.append(UInt8(ascii: "."))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 100))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction % 10))
    }

    /// logfmt quoting: bare when safe, otherwise in double quotes with escapes.
    ///
    /// Values carry what clients send (the access log's path, for one), so every scalar that
    /// could make one line read as something else is written as `\u{hex}` (`escapes`);
    /// all other text, accents, emoji and right-to-left letters included, stays as it is.
    /// Plain ASCII without specials is appended as it is, without looking at scalars.
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
                if escapes(scalar) {
                    bytes.append(contentsOf: "\\u{\(String(scalar.value, radix: 16))}".utf8)
                } else {
                    Unicode.UTF8.encode(scalar) { bytes.append($0) }
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// The scalars `appendQuoted` escapes:
    /// - C0 controls and DEL (U+0000–U+001F, U+007F): newlines would end the line, ESC
    ///   starts terminal escape sequences.
    /// - C1 controls (U+0080–U+009F): U+009B is CSI, which terminals that honour 8-bit
    ///   controls read as `ESC [`; U+0085 is NEL, a line break to Unicode (UAX #14).
    /// - The line and paragraph separators U+2028 and U+2029 (mandatory breaks, UAX #14).
    /// - Bidi formatting characters: the marks U+061C, U+200E, U+200F, the embeddings and
    ///   overrides U+202A–U+202E and the isolates U+2066–U+2069 (UAX #9). They reorder
    ///   the text around them where journalctl or a terminal shows it, so a value could
    ///   display as other fields or hide part of itself (CVE-2021-42574, "Trojan Source").
    static func escapes(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x061C, 0x200E, 0x200F, 0x2028...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    private static func needsQuoting<Bytes: Collection<UInt8>>(_ utf8: Bytes) -> Bool {
        if utf8.isEmpty { return true }
        for byte in utf8
        where byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\\")
            || byte >= 0x7F
        {
            return true
        }
        return false
    }
}
