import Foundation
import Glibc

/// Figures about the process itself, read from /proc.
public struct ProcessFigures: MetricsSource {
    public init() {}

    public func render(into text: inout PrometheusText) async {
        Self.render(into: &text)
    }

    private static let startTime = Date()

    public static var residentBytes: Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    public static var openFileDescriptors: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
    }

    public static var uptimeSeconds: Double {
        let start = startTime  // read first: on a first use it is set now, never after `Date()`
        return Date().timeIntervalSince(start)
    }

    /// Starts the uptime clock (call at start-up).
    public static func markStart() { _ = startTime }

    public static func render(into text: inout PrometheusText) {
        text.help("process_resident_memory_bytes", "Resident memory size in bytes.", type: "gauge")
        text.sample("process_resident_memory_bytes", [:], Double(residentBytes))
        text.help("process_open_fds", "Open file descriptors.", type: "gauge")
        text.sample("process_open_fds", [:], Double(openFileDescriptors))
        text.help("usersd_uptime_seconds", "Seconds since usersd started.", type: "gauge")
        text.sample("usersd_uptime_seconds", [:], uptimeSeconds)
    }
}
