public import Basics
import JSON
public import SQLite
public import Store
import Synchronization

/// The SQLite backend: users, tasks and the outbox in one database file, served by
/// one process (`ServingLock`), so it is the only writer and its caches are exact.
///
/// Writes go to the database's writer thread (group commit); reads run on the
/// calling worker thread's own read connection, or the shared reader thread.
public final class SQLiteStore: StoreBackend {
    public let database: Database
    /// Point reads by id (see `UserCache` for why it never serves a stale row).
    public let userCache: UserCache
    /// `max_attempts` of the welcome task every new user gets.
    let welcomeMaxAttempts: Int
    /// The scheduler's time (milliseconds since the Unix epoch): a new user's welcome
    /// task is due at it.
    let now: @Sendable () -> Int64
    private let changes = Atomic<UInt64>(0)

    public init(
        database: Database, userCache: UserCache = UserCache(), welcomeMaxAttempts: Int = 5,
        now: @escaping @Sendable () -> Int64 = WallClock.milliseconds
    ) {
        self.database = database
        self.userCache = userCache
        self.welcomeMaxAttempts = welcomeMaxAttempts
        self.now = now
    }

    /// Opens (creating it when missing) the database at `options.path`.
    public static func open(_ options: DatabaseOptions, welcomeMaxAttempts: Int = 5) throws -> SQLiteStore {
        SQLiteStore(database: try Database(options: options), welcomeMaxAttempts: welcomeMaxAttempts)
    }

    /// The only writer's version of the users: exact, so caches may use it.
    public var changeVersion: UInt64? { changes.load(ordering: .acquiring) }

    /// Called after a user write committed and before it is acknowledged.
    private func userChanged() {
        changes.add(1, ordering: .releasing)
    }

    static let userColumns = "id, name, email, created_at, updated_at"

    static func user(from row: Statement) -> User {
        User(id: row.integer(0), name: row.text(1), email: row.text(2), createdAt: row.text(3), updatedAt: row.text(4))
    }

    public func createUser(name: String, email: String) async throws -> CreatedUser {
        defer { userChanged() }
        let (maxAttempts, due) = (welcomeMaxAttempts, now() + WelcomeTask.handOverMilliseconds)
        let created = try await mapErrors {
            try await database.write { connection in
                // The row is known without RETURNING, which costs SQLite a quarter of the insert.
                let now = UTCTimestamp.now()
                try connection.cached(
                    "INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)"
                ).bind([.text(name), .text(email), .text(EmailKey.of(email)), .text(now)]).run()
                let user = User(
                    id: connection.lastInsertRowID, name: name, email: email, createdAt: now, updatedAt: now)
                let task = try Self.insertWelcome(for: user.id, maxAttempts: maxAttempts, runAt: due, on: connection)
                return CreatedUser(user: user, welcomeTaskID: task.id)
            }
        }
        userCache.invalidate(created.user.id)
        return created
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

    public func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage {
        try await mapErrors {
            try await database.read { connection in
                let statement = try connection.cached(
                    "SELECT id, name, email FROM users WHERE id > ? ORDER BY id LIMIT ?")
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
                    .text(UTCTimestamp.now()),
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
