/// A user as stored.
public struct User: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var email: String
    /// ISO 8601 UTC timestamps with milliseconds.
    public var createdAt: String
    public var updatedAt: String

    public init(id: Int64, name: String, email: String, createdAt: String, updatedAt: String) {
        self.id = id
        self.name = name
        self.email = email
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// A user just created, with the welcome task committed in the same transaction
/// (the transactional outbox): the route hands the task to the scheduler.
public struct CreatedUser: Sendable, Equatable {
    public var user: User
    /// The id of the user's `welcome` task, queued and due now.
    public var welcomeTaskID: Int64

    public init(user: User, welcomeTaskID: Int64) {
        self.user = user
        self.welcomeTaskID = welcomeTaskID
    }
}

/// One page of users as JSON object text, for streaming lists.
public struct UserSummaryPage: Sendable {
    /// `{...},{...}` without brackets.
    public var json: [UInt8]
    public var count: Int
    public var lastID: Int64?

    public init(json: [UInt8], count: Int, lastID: Int64?) {
        self.json = json
        self.count = count
        self.lastID = lastID
    }
}

/// Errors every store backend reports the same way, so handlers map them to statuses
/// without knowing the backend.
public enum StoreError: Error, Sendable, Equatable {
    /// Another user already has this email (by `EmailKey`).
    case duplicateEmail
    /// The database cannot take the operation right now (locked, disk full,
    /// read-only, unreachable); the message says which. Maps to 503.
    case unavailable(String)
    /// A value this backend cannot store as given (PostgreSQL text cannot hold U+0000);
    /// nothing was written. Maps to 422 naming the field.
    case unstorable(field: String, message: String)
}
