/// Why `usersd backup` failed, whatever the backend; the command line gives each kind
/// its own exit status.
public struct BackupFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The database is missing, unreadable, or not usersd's.
        case source
        /// The destination exists (as anything, a symbolic link included) or cannot be created.
        case destination
        /// The database stayed locked beyond the busy timeout: trying again later may work.
        case busy
        /// Reading the database or writing the copy failed (I/O error, disk full).
        case copy
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// Another process serves the database, and this backend allows one at a time
/// (`usersd serve` exits 75 then: try again once the other has stopped).
public struct DatabaseInUse: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
