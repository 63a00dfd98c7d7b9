import HTTP
import Synchronization

/// Serializes the CGI response head: `Status:` line, headers, blank line.
enum ResponseEncoder {
    static func head(of response: Response) -> [UInt8] {
        var text = "Status: \(response.status.code) \(response.status.reason)\r\n"
        for header in response.headers where isSafe(header.name) && isSafe(header.value) {
            text += "\(header.name): \(header.value)\r\n"
        }
        if case .bytes(let bytes) = response.body, response.header("Content-Length") == nil {
            text += "Content-Length: \(bytes.count)\r\n"
        }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// Header text never contains CR or LF, so no response splitting is possible.
    static func isSafe(_ text: String) -> Bool {
        !text.utf8.contains { $0 == 0x0D || $0 == 0x0A }
    }
}

/// A process-wide counter (only used for requests that bring no id).
final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    func next() -> UInt64 { value.add(1, ordering: .relaxed).newValue }
}
