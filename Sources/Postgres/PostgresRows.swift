import CPostgres

/// The rows of one statement's result, in text format, read in place from libpq's
/// result (no copy until a value is asked for).
///
/// Valid only inside the closure it is passed to: libpq frees the result after it.
public struct PostgresRows {
    let result: OpaquePointer

    init(_ result: OpaquePointer) {
        self.result = result
    }

    /// Rows returned.
    public var count: Int { Int(PQntuples(result)) }

    /// Rows the statement changed (`INSERT`, `UPDATE`, `DELETE`); 0 for others.
    public var affectedRows: Int {
        guard let text = PQcmdTuples(result) else { return 0 }
        return Int(String(cString: text)) ?? 0
    }

    public func isNull(_ row: Int, _ column: Int) -> Bool {
        PQgetisnull(result, Int32(row), Int32(column)) != 0
    }

    /// The value's bytes (empty for NULL), valid during `body`.
    public func withBytes<T>(
        _ row: Int, _ column: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> T
    ) rethrows
        -> T
    {
        let length = Int(PQgetlength(result, Int32(row), Int32(column)))
        guard let value = PQgetvalue(result, Int32(row), Int32(column)) else {
            return try body(UnsafeBufferPointer(start: nil, count: 0))
        }
        return try value.withMemoryRebound(to: UInt8.self, capacity: length) {
            try body(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    /// The value as text; `""` for NULL.
    public func text(_ row: Int, _ column: Int) -> String {
        withBytes(row, column) { String(decoding: $0, as: UTF8.self) }
    }

    public func optionalText(_ row: Int, _ column: Int) -> String? {
        isNull(row, column) ? nil : text(row, column)
    }

    /// The value as a whole number (the text of an `int`, `bigint` or `boolean` column:
    /// `t` is 1); 0 for NULL or text that is not one.
    public func integer(_ row: Int, _ column: Int) -> Int64 {
        withBytes(row, column) { bytes in
            guard let first = bytes.first else { return 0 }
            if first == UInt8(ascii: "t") { return 1 }
            var value: Int64 = 0
            var negative = false
            for (index, byte) in bytes.enumerated() {
                if index == 0 && byte == UInt8(ascii: "-") {
                    negative = true
                    continue
                }
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return 0 }
                value = value &* 10 &+ Int64(byte - UInt8(ascii: "0"))
            }
            return negative ? 0 &- value : value
        }
    }

    public func optionalInteger(_ row: Int, _ column: Int) -> Int64? {
        isNull(row, column) ? nil : integer(row, column)
    }

    /// Calls `body` with each row's index, in order.
    public func forEachRow(_ body: (Int) throws -> Void) rethrows {
        for row in 0..<count { try body(row) }
    }
}

@available(*, unavailable)
extension PostgresRows: Sendable {}
