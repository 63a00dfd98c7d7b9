internal import CSQLite

/// An error reported by SQLite, with its (extended) result code and message.
///
/// The message comes from `sqlite3_errmsg` on the connection's own thread right after
/// the failing call. SQL arguments are never part of it.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The extended result code (`SQLITE_CONSTRAINT_UNIQUE`, ...).
    public let extendedCode: Int32
    public let message: String

    public init(extendedCode: Int32, message: String) {
        self.extendedCode = extendedCode
        self.message = message
    }

    /// The primary result code (`SQLITE_CONSTRAINT`, `SQLITE_BUSY`, ...).
    public var primaryCode: Int32 { extendedCode & 0xFF }

    public var description: String { "SQLite error \(extendedCode): \(message)" }

    /// `SQLITE_CONSTRAINT_UNIQUE` (a macro Swift cannot import).
    public var isUniqueConstraint: Bool { extendedCode == SQLITE_CONSTRAINT | (8 << 8) }
    /// The database stayed locked by someone else beyond the busy timeout.
    public var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }
    /// Conditions an operator can fix (disk full, read-only file, I/O error): the
    /// service answers 503 and recovers once they are gone.
    public var isResourceFailure: Bool {
        isBusy || [SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PROTOCOL].contains(primaryCode)
    }
}
