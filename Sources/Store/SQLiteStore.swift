import HTTP
public import SQLite
import Synchronization

/// The SQLite implementation of the store: users, tasks and the outbox in one file.
public final class SQLiteStore: UserStore {
    public let database: Database
    /// Called inside the user-insert transaction; returns the task rows to enqueue with
    /// it (the transactional outbox). Set by the scheduler layer.
    let onUserCreated: @Sendable (Connection, User) throws -> Void
    private let changes = Atomic<UInt64>(0)
    /// Point reads by id (see `UserCache` for why it never serves a stale row).
    public let userCache: UserCache

    public var changeVersion: UInt64 { changes.load(ordering: .acquiring) }

    /// Called after a user write committed and before it is acknowledged.
    private func userChanged() {
        changes.add(1, ordering: .releasing)
    }

    public init(
        database: Database,
        userCache: UserCache = UserCache(),
        onUserCreated: @escaping @Sendable (Connection, User) throws -> Void = { _, _ in }
    ) {
        self.database = database
        self.userCache = userCache
        self.onUserCreated = onUserCreated
    }

    static let userColumns = "id, name, email, created_at, updated_at"

    static func user(from row: Statement) -> User {
        User(id: row.integer(0), name: row.text(1), email: row.text(2), createdAt: row.text(3), updatedAt: row.text(4))
    }

    public func createUser(name: String, email: String) async throws -> User {
        let hook = onUserCreated
        defer { userChanged() }
        let user = try await mapErrors {
            try await database.write { connection in
                // The row is known without RETURNING (which costs SQLite a quarter of the insert).
                let now = Timestamp.now()
                try connection.cached(
                    "INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)"
                ).bind([.text(name), .text(email), .text(EmailKey.of(email)), .text(now)]).run()
                let user = User(id: connection.lastInsertRowID, name: name, email: email, createdAt: now, updatedAt: now)
                try hook(connection, user)
                return user
            }
        }
        userCache.invalidate(user.id)
        return user
    }

    public func user(id: Int64) async throws -> User? {
        let token: UInt64?
        switch userCache.lookup(id) {
        case .hit(let user): return user
        case .miss(let missToken): token = missToken
        }
        let user = try await mapErrors {
            try await database.read { connection in
                let statement = try connection.cached("SELECT \(Self.userColumns) FROM users WHERE id = ?")
                try statement.bind([.integer(id)])
                defer { try? statement.run() }
                return try statement.step() ? Self.user(from: statement) : nil
            }
        }
        if let user, let token { userCache.store(user, token: token) }
        return user
    }

    public func users(afterID: Int64, limit: Int) async throws -> [User] {
        try await mapErrors {
            try await database.read { connection in
                let statement = try connection.cached(
                    "SELECT \(Self.userColumns) FROM users WHERE id > ? ORDER BY id LIMIT ?"
                )
                try statement.bind([.integer(afterID), .integer(Int64(limit))])
                var users: [User] = []
                users.reserveCapacity(min(limit, 1024))
                try statement.forEachRow { users.append(Self.user(from: $0)) }
                return users
            }
        }
    }

    public func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage {
        try await mapErrors {
            try await database.read { connection in
                let statement = try connection.cached("SELECT id, name, email FROM users WHERE id > ? ORDER BY id LIMIT ?")
                try statement.bind([.integer(afterID), .integer(Int64(limit))])
                var json = JSONWriter(capacity: min(limit, 1000) * 64)
                var count = 0
                var lastID: Int64?
                try statement.forEachRow { row in
                    let id = row.integer(0)
                    json.append(count == 0 ? "{\"id\":" : ",{\"id\":")
                    json.integer(id)
                    json.append(",\"name\":")
                    row.withText(1) { json.string(utf8: $0) }
                    json.append(",\"email\":")
                    row.withText(2) { json.string(utf8: $0) }
                    json.append("}")
                    count += 1
                    lastID = id
                }
                return UserSummaryPage(json: json.bytes, count: count, lastID: lastID)
            }
        }
    }

    public func updateUser(id: Int64, name: String?, email: String?) async throws -> User? {
        userCache.beginWrite(id)
        defer {
            userCache.endWrite(id)
            userChanged()
        }
        return try await mapErrors {
            try await database.write { connection in
                let statement = try connection.cached(
                    """
                    UPDATE users SET name = coalesce(?2, name), email = coalesce(?3, email),
                        email_key = coalesce(?4, email_key), updated_at = ?1
                    WHERE id = ?5 RETURNING \(Self.userColumns)
                    """
                )
                try statement.bind([
                    .text(Timestamp.now()),
                    name.map { .text($0) } ?? .null,
                    email.map { .text($0) } ?? .null,
                    email.map { .text(EmailKey.of($0)) } ?? .null,
                    .integer(id),
                ])
                guard try statement.step() else { return nil }
                let user = Self.user(from: statement)
                try statement.run()
                return user
            }
        }
    }

    public func deleteUser(id: Int64) async throws -> Bool {
        userCache.beginWrite(id)
        defer {
            userCache.endWrite(id)
            userChanged()
        }
        return try await mapErrors {
            try await database.write { connection in
                try connection.cached("DELETE FROM users WHERE id = ?").bind([.integer(id)]).run()
                return connection.changes > 0
            }
        }
    }

    public func ping() async throws {
        _ = try await mapErrors {
            try await database.read { connection in
                try connection.cached("SELECT 1").firstInteger()
            }
        }
    }
}

/// Translates SQLite errors into the backend-neutral `StoreError`.
func mapErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as SQLiteError {
        if error.isUniqueConstraint { throw StoreError.duplicateEmail }
        if error.isBusy { throw StoreError.unavailable("database is busy, try again") }
        if error.isResourceFailure { throw StoreError.unavailable("database unavailable: \(error.message)") }
        throw error
    } catch let error as StoreError {
        throw error
    } catch is DatabaseClosedError {
        throw StoreError.unavailable("shutting down, try again")
    }
}
