/// A failure of the database or of the way to it.
///
/// `kind` separates what the caller can act on: a lost or refused connection (the
/// database is down or unreachable: try again later), a statement the server
/// refused (its SQLSTATE says why, e.g. `23505` for a unique violation), and work
/// submitted to a closed pool.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// No connection could be made, or it was lost. `wasSent` tells whether the
        /// statement may have taken effect: `false` when it never reached the server, or
        /// when the server ended the session instead of running it (a FATAL error).
        case connection(wasSent: Bool)
        /// The server ran the statement and refused it.
        case server
        /// The pool was closed.
        case closed
    }

    public let kind: Kind
    /// The five-character SQLSTATE of a server error.
    public let sqlState: String?
    public let message: String

    public init(_ kind: Kind, sqlState: String? = nil, _ message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    /// `unique_violation`.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// The database is down, restarting or unreachable: the operation may work later.
    public var isUnavailable: Bool {
        switch kind {
        case .connection, .closed: return true
        case .server:
            // Class 08 (connection exception), 57P01-57P03 (admin or crash shutdown, cannot
            // connect now), 53 (insufficient resources: too many connections, disk full),
            // 40001/40P01 (serialization failure, deadlock: retry).
            guard let state = sqlState else { return false }
            return state.hasPrefix("08") || state.hasPrefix("57P") || state.hasPrefix("53") || state == "40001"
                || state == "40P01"
        }
    }

    public var description: String {
        sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message
    }
}
