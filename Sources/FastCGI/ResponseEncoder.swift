import Basics
import Glibc
import HTTP

/// Serializes the CGI response head: `Status:` line, headers, blank line.
enum ResponseEncoder {
    /// Appends the head to `head` (a buffer the connection reuses).
    ///
    /// Two passes: the first measures, the second copies every piece into one scratch
    /// buffer, appended to `head` at once (one append instead of four per header).
    /// Both passes skip the same unsafe headers (`isWritten`, two `memchr`s each).
    static func appendHead(of response: Response, to head: inout [UInt8]) {
        let status = response.status
        // `Status: ` code, space, reason, CR LF; and the CR LF that ends the head.
        var length = 8 + DecimalText.count(Int64(status.code)) + 1 + status.reason.utf8.count + 2 + 2
        var hasLength = false
        for header in response.headers where isWritten(header) {
            if !hasLength && isContentLength(header.name) { hasLength = true }
            length += header.name.utf8.count + 2 + header.value.utf8.count + 2
        }
        var bodyLength: Int?
        if case .bytes(let bytes) = response.body, !hasLength {
            bodyLength = bytes.count
            length += 16 + DecimalText.count(Int64(bytes.count)) + 2
        }
        withUnsafeTemporaryAllocation(byteCount: length, alignment: 1) { buffer in
            var writer = RawWriter(base: buffer.baseAddress!)
            writer.put("Status: ")
            writer.putDecimal(status.code)
            writer.put(" ")
            writer.put(status.reason)
            writer.put("\r\n")
            for header in response.headers where isWritten(header) {
                writer.put(header.name)
                writer.put(": ")
                writer.put(header.value)
                writer.put("\r\n")
            }
            if let bodyLength {
                writer.put("Content-Length: ")
                writer.putDecimal(bodyLength)
                writer.put("\r\n")
            }
            writer.put("\r\n")
            precondition(writer.offset == length, "response head measured wrong")
            head.append(contentsOf: UnsafeRawBufferPointer(buffer))
        }
    }

    /// A header is written only when neither its name nor its value holds CR or LF.
    static func isWritten(_ header: (name: String, value: String)) -> Bool {
        isSafe(header.name) && isSafe(header.value)
    }

    static func isContentLength(_ name: String) -> Bool {
        name.utf8.count == 14
            && name.utf8.elementsEqual("content-length".utf8) { byte, lower in
                (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 == lower : byte == lower
            }
    }

    /// Header text never contains CR or LF, so no response splitting is possible.
    static func isSafe(_ text: String) -> Bool {
        if let safe = text.utf8.withContiguousStorageIfAvailable({ bytes in
            bytes.isEmpty
                || (memchr(bytes.baseAddress!, 0x0D, bytes.count) == nil
                    && memchr(bytes.baseAddress!, 0x0A, bytes.count) == nil)
        }) {
            return safe
        }
        return !text.utf8.contains(0x0D) && !text.utf8.contains(0x0A)
    }
}

/// Copies bytes into a buffer `ResponseEncoder.appendHead` measured beforehand.
private struct RawWriter {
    let base: UnsafeMutableRawPointer
    private(set) var offset = 0

    init(base: UnsafeMutableRawPointer) {
        self.base = base
    }

    mutating func put(_ literal: StaticString) {
        (base + offset).copyMemory(from: literal.utf8Start, byteCount: literal.utf8CodeUnitCount)
        offset += literal.utf8CodeUnitCount
    }

    mutating func put(_ text: String) {
        let count = text.utf8.count
        let copied = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            if count > 0 { (base + offset).copyMemory(from: bytes.baseAddress!, byteCount: count) }
            return true
        }
        if copied == nil {
            for (index, byte) in text.utf8.enumerated() { (base + offset + index).storeBytes(of: byte, as: UInt8.self) }
        }
        offset += count
    }

    mutating func putDecimal(_ value: Int) {
        let count = DecimalText.count(Int64(value))
        DecimalText.write(
            Int64(value), length: count, into: UnsafeMutableRawBufferPointer(start: base + offset, count: count))
        offset += count
    }
}
