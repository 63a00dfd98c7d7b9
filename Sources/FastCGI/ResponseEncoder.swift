import HTTP
import Synchronization

/// Serializes the CGI response head: `Status:` line, headers, blank line.
enum ResponseEncoder {
    static func head(of response: Response) -> [UInt8] {
        var head: [UInt8] = []
        head.reserveCapacity(160)
        head.append(contentsOf: "Status: ".utf8)
        appendDecimal(response.status.code, to: &head)
        head.append(UInt8(ascii: " "))
        head.append(contentsOf: response.status.reason.utf8)
        head.append(contentsOf: "\r\n".utf8)
        var hasLength = false
        for header in response.headers where isSafe(header.name) && isSafe(header.value) {
            if !hasLength && isContentLength(header.name) { hasLength = true }
            head.append(contentsOf: header.name.utf8)
            head.append(contentsOf: ": ".utf8)
            head.append(contentsOf: header.value.utf8)
            head.append(contentsOf: "\r\n".utf8)
        }
        if case .bytes(let bytes) = response.body, !hasLength {
            head.append(contentsOf: "Content-Length: ".utf8)
            appendDecimal(bytes.count, to: &head)
            head.append(contentsOf: "\r\n".utf8)
        }
        head.append(contentsOf: "\r\n".utf8)
        return head
    }

    static func isContentLength(_ name: String) -> Bool {
        name.utf8.count == 14 && name.utf8.elementsEqual("content-length".utf8) { byte, lower in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 == lower : byte == lower
        }
    }

    static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            appendDecimal(-value, to: &bytes)
            return
        }
        if value >= 10 { appendDecimal(value / 10, to: &bytes) }
        bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
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
