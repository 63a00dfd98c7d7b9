import Basics

/// Builds compact JSON straight into a byte buffer.
///
/// Hand-built output is used on the hot path (every response) because it needs no
/// intermediate dictionaries or `Codable` machinery; the key order is the call order.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 128) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends `{ ... }`, filled by `body`.
    public mutating func object(_ body: (inout ObjectWriter) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        // Move the buffer into the object writer and back with swaps, so it is never
        // shared (sharing would copy the whole buffer on the next append).
        var object = ObjectWriter(writer: JSONWriter(capacity: 0))
        swap(&object.writer, &self)
        body(&object)
        swap(&object.writer, &self)
        bytes.append(UInt8(ascii: "}"))
    }

    /// Appends `[ ... ]` with one element per item, each written by `element`.
    public mutating func array<S: Sequence>(_ items: S, _ element: (inout JSONWriter, S.Element) -> Void) {
        bytes.append(UInt8(ascii: "["))
        var first = true
        for item in items {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            element(&self, item)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    public mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { string(utf8: $0) }
    }

    /// A JSON string from UTF-8 bytes that are already valid UTF-8 (a database column),
    /// escaped without building a Swift `String` first.
    public mutating func string(utf8: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        appendEscaped(utf8)
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        // Most text needs no escape: find the first byte that does with a plain loop,
        // and append everything before it at once.
        var first = 0
        while first < utf8.count {
            let byte = utf8[first]
            if byte < 0x20 || byte == 0x22 || byte == 0x5C { break }
            first += 1
        }
        if first == utf8.count {
            bytes.append(contentsOf: utf8)
            return
        }
        var runStart = 0
        for offset in first..<utf8.count {
            let byte = utf8[offset]
            guard byte < 0x20 || byte == 0x22 || byte == 0x5C else { continue }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<offset]))
            switch byte {
            case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
            case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            default:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [
                    0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)],
                ])
            }
            runStart = offset + 1
        }
        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<utf8.count]))
    }

    /// Appends bytes that are already valid JSON text (a literal key, punctuation).
    public mutating func append(_ literal: StaticString) {
        literal.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    public mutating func integer(_ value: Int64) {
        bytes.appendDecimal(value)
    }

    public mutating func double(_ value: Double) {
        if value.isFinite {
            if value == value.rounded(), abs(value) < 1e15 {
                integer(Int64(value))
            } else {
                bytes.append(contentsOf: Array(String(value).utf8))
            }
        } else {
            null()
        }
    }

    public mutating func bool(_ value: Bool) {
        append(value ? "true" : "false")
    }

    public mutating func null() {
        append("null")
    }

    /// Appends bytes that are already valid JSON (a stored result document).
    public mutating func raw(_ json: [UInt8]) {
        bytes.append(contentsOf: json)
    }

    /// Appends any parsed JSON value.
    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: null()
        case .bool(let flag): bool(flag)
        case .number(let double, let integerValue):
            if let integerValue { integer(integerValue) } else { self.double(double) }
        case .string(let text): string(text)
        case .array(let elements): array(elements) { writer, element in writer.value(element) }
        case .object(let members):
            object { object in
                for key in members.keys.sorted() { object.field(key) { writer in writer.value(members[key]!) } }
            }
        }
    }

    /// Writes the members of one JSON object, inserting commas.
    public struct ObjectWriter: Sendable {
        fileprivate var writer: JSONWriter
        private var isFirst = true

        fileprivate init(writer: JSONWriter) {
            self.writer = writer
        }

        private mutating func key(_ name: String) {
            if !isFirst { writer.bytes.append(UInt8(ascii: ",")) }
            isFirst = false
            writer.string(name)
            writer.bytes.append(UInt8(ascii: ":"))
        }

        public mutating func field(_ name: String, _ value: String) {
            key(name)
            writer.string(value)
        }

        public mutating func field(_ name: String, _ value: String?) {
            key(name)
            if let value { writer.string(value) } else { writer.null() }
        }

        public mutating func field(_ name: String, _ value: Int64) {
            key(name)
            writer.integer(value)
        }

        public mutating func field(_ name: String, _ value: Int) {
            key(name)
            writer.integer(Int64(value))
        }

        public mutating func field(_ name: String, _ value: Bool) {
            key(name)
            writer.bool(value)
        }

        /// A member whose value is written by `body` (nested objects, arrays, raw JSON).
        public mutating func field(_ name: String, _ body: (inout JSONWriter) -> Void) {
            key(name)
            body(&writer)
        }
    }
}

extension JSONWriter {
    /// Compact JSON text for an object with sorted keys (canonical payloads: the same
    /// members always give the same text).
    public static func text(_ members: [String: JSONValue]) -> String {
        var writer = JSONWriter()
        writer.value(.object(members))
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
