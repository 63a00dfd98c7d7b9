internal import CSQLite

/// A prepared statement. Arguments are always bound, never spliced into SQL.
public final class Statement {
    let handle: OpaquePointer
    unowned let connection: Connection

    init(handle: OpaquePointer, connection: Connection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    /// Ends the current run (rows not stepped to are not read) and clears the bindings.
    public func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// A value that can be bound to a `?` parameter.
    public enum Value: Sendable, Equatable {
        case integer(Int64)
        case real(Double)
        case text(String)
        case null
    }

    /// Binds text from the string's own UTF-8 bytes, with their length: passing a
    /// `String` as a C string made a NUL-terminated copy first (an array allocation
    /// per bound value). SQLite copies the bytes (`SQLITE_TRANSIENT`). An empty string
    /// binds an empty text, never NULL (its buffer may have no address).
    static func bindText(_ text: String, at index: Int32, of handle: OpaquePointer) -> Int32 {
        var text = text
        return text.withUTF8 { bytes in
            guard let base = bytes.baseAddress, !bytes.isEmpty else {
                return sqlite3_bind_text(handle, index, "", 0, sqliteTransient)
            }
            return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) { chars in
                sqlite3_bind_text64(
                    handle, index, chars, sqlite3_uint64(bytes.count), sqliteTransient, UInt8(SQLITE_UTF8))
            }
        }
    }

    /// Binds `values` to parameters 1...n.
    @discardableResult
    public func bind(_ values: [Value]) throws(SQLiteError) -> Statement {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value {
            case .integer(let number): code = sqlite3_bind_int64(handle, index, number)
            case .real(let number): code = sqlite3_bind_double(handle, index, number)
            case .text(let text): code = Self.bindText(text, at: index, of: handle)
            case .null: code = sqlite3_bind_null(handle, index)
            }
            guard code == SQLITE_OK else { throw connection.error(code) }
        }
        return self
    }

    /// Advances to the next row: `true` when a row is available, `false` when done.
    public func step() throws(SQLiteError) -> Bool {
        let code = sqlite3_step(handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE:
            return false
        default:
            let error = connection.error(code)
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Runs a statement that returns no rows; resets it afterwards.
    public func run() throws(SQLiteError) {
        defer { sqlite3_reset(handle) }
        while try step() {}
    }

    /// Calls `body` for every row; resets the statement afterwards.
    public func forEachRow(_ body: (Statement) throws -> Void) throws {
        defer { sqlite3_reset(handle) }
        while try step() { try body(self) }
    }

    /// The first column of the first row as text (pragmas, scalar queries).
    public func firstText() throws(SQLiteError) -> String? {
        defer { sqlite3_reset(handle) }
        guard try step() else { return nil }
        return text(0)
    }

    /// The first column of the first row as an integer.
    public func firstInteger() throws(SQLiteError) -> Int64? {
        defer { sqlite3_reset(handle) }
        guard try step() else { return nil }
        return isNull(0) ? nil : integer(0)
    }

    public func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    public func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    public func isInteger(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_INTEGER }

    /// The column as a Swift string, copied at once (SQLite's buffer dies at the next step).
    public func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    public func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    /// The column's UTF-8 bytes, borrowed for the duration of `body` only (no copy).
    public func withText<T>(_ column: Int32, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        guard let pointer = sqlite3_column_text(handle, column) else {
            return body(UnsafeBufferPointer(start: nil, count: 0))
        }
        return body(UnsafeBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column))))
    }
    public func optionalInteger(_ column: Int32) -> Int64? { isNull(column) ? nil : integer(column) }
}

@available(*, unavailable)
extension Statement: Sendable {}
