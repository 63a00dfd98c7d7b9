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
    /// Another user already has this email (compared case-insensitively).
    case duplicateEmail
    /// The database cannot take the operation right now (locked, disk full,
    /// read-only); the message says which. Maps to 503.
    case unavailable(String)
}

/// The users table, independent of the database engine.
///
/// Handlers depend on this protocol only; `SQLiteStore` is the implementation, and a
/// PostgreSQL backend would be a second one.
public protocol UserStore: Sendable {
    /// Inserts a user (and whatever the backend enqueues with it, such as the welcome
    /// task) in one transaction; returns after commit.
    func createUser(name: String, email: String) async throws -> User
    func user(id: Int64) async throws -> User?
    /// Users with `id > afterID` in id order, at most `limit`.
    func users(afterID: Int64, limit: Int) async throws -> [User]
    /// The same page already encoded as comma-separated `{"id","name","email"}`
    /// objects (the list hot path: no intermediate values per row).
    func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage
    /// Changes the given fields; `nil` when there is no such user.
    func updateUser(id: Int64, name: String?, email: String?) async throws -> User?
    /// `false` when there was no such user.
    func deleteUser(id: Int64) async throws -> Bool
    /// Checks that the database answers.
    func ping() async throws
    /// Grows with every committed change to users made through this store, before the
    /// change is acknowledged; caches of user data compare it to know they are fresh.
    /// (usersd is the only writer of its database.)
    var changeVersion: UInt64 { get }
}
