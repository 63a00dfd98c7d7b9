import HTTP
import Synchronization

/// Serializes the CGI response head: `Status:` line, headers, blank line.
enum ResponseEncoder {
    static func head(of response: Response) -> [UInt8] {
        var head: [UInt8] = []
        head.reserveCapacity(192)
        appendHead(of: response, to: &head)
        return head
    }

    /// Appends the head to `head` (a buffer the connection reuses).
    static func appendHead(of response: Response, to head: inout [UInt8]) {
        append("Status: ", to: &head)
        head.appendDecimal(Int64(response.status.code))
        head.append(UInt8(ascii: " "))
        append(response.status.reason, to: &head)
        append("\r\n", to: &head)
        var hasLength = false
        for header in response.headers where isSafe(header.name) && isSafe(header.value) {
            if !hasLength && isContentLength(header.name) { hasLength = true }
            append(header.name, to: &head)
            append(": ", to: &head)
            append(header.value, to: &head)
            append("\r\n", to: &head)
        }
        if case .bytes(let bytes) = response.body, !hasLength {
            append("Content-Length: ", to: &head)
            head.appendDecimal(Int64(bytes.count))
            append("\r\n", to: &head)
        }
        append("\r\n", to: &head)
    }

    private static func append(_ literal: StaticString, to bytes: inout [UInt8]) {
        literal.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    static func isContentLength(_ name: String) -> Bool {
        name.utf8.count == 14 && name.utf8.elementsEqual("content-length".utf8) { byte, lower in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 == lower : byte == lower
        }
    }

    /// Header text never contains CR or LF, so no response splitting is possible.
    static func isSafe(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            for byte in bytes where byte == 0x0D || byte == 0x0A { return false }
            return true
        }
    }
}

/// A process-wide counter (only used for requests that bring no id).
final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    func next() -> UInt64 { value.add(1, ordering: .relaxed).newValue }
}
