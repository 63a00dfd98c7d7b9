public import Basics
import JSON
import Logging
import Postgres
public import Store
import Synchronization

/// The PostgreSQL backend: users, tasks and the outbox in a database several usersd
/// hosts share. Every call is one statement (a data-modifying `WITH` where a change
/// takes several), so it is one transaction and one round trip, and statements of
/// concurrent requests share pipelines (`PostgresPool`).
///
/// Other hosts write too, so nothing is cached: `changeVersion` is `nil`, and every
/// read sees every write acknowledged before it, by any host.
public final class PostgresStore: StoreBackend, SharedTaskQueue {
    public struct Settings: Sendable {
        /// libpq URI, handed over unchanged.
        public var uri: String
        /// Connections of this host (`--db-pool`).
        public var poolSize = 8
        public var welcomeMaxAttempts = 5
        /// The name claims are made under (unique per process).
        public var hostID = HostIdentity.current
        /// How long a claim holds without a heartbeat (the database's clock).
        public var leaseSeconds = 10.0
        /// How often the host extends its leases, and rescues expired ones.
        public var heartbeatSeconds = 2.0
        /// How often the host looks for cancels of its tasks and for due tasks no host took.
        public var pollMilliseconds = 500

        public init(uri: String) {
            self.uri = uri
        }
    }

    public let settings: Settings
    let pool: PostgresPool
    /// The scheduler's time (milliseconds since the Unix epoch) for new welcome tasks.
    let now: @Sendable () -> Int64
    /// This host's claims: task id -> attempt. Every move of a running task is fenced by
    /// host and attempt (`owner = $host AND attempts = $attempt`).
    let claims = Mutex<[Int64: Int]>([:])
    /// The last `nextRunAt` answer and when it was read (monotonic ns): see there.
    let nextRunAtMemo = Mutex<(at: UInt64, value: Int64?)?>(nil)
    let leases: LeaseKeeper

    public init(settings: Settings, now: @escaping @Sendable () -> Int64 = WallClock.milliseconds) {
        self.settings = settings
        self.now = now
        pool = PostgresPool(PostgresPool.Settings(uri: settings.uri, size: settings.poolSize, name: "usersd-pg"))
        leases = LeaseKeeper(settings: settings)
    }

    /// Other hosts change users too: nothing above the store may cache them.
    public var changeVersion: UInt64? { nil }

    static let userColumns = "id, name, email, created_at, updated_at"

    static func user(_ rows: PostgresRows, _ row: Int = 0) -> User {
        User(
            id: rows.integer(row, 0), name: rows.text(row, 1), email: rows.text(row, 2), createdAt: rows.text(row, 3),
            updatedAt: rows.text(row, 4))
    }

    /// The user and its welcome task in one statement (one transaction): a duplicate
    /// email inserts nothing (`ON CONFLICT DO NOTHING`) and aborts nothing.
    static let createUser = PreparedStatement(
        "create_user",
        """
        WITH u AS (
            INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
            ON CONFLICT (email_key) DO NOTHING RETURNING id
        ), t AS (
            INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at,
                enqueued_by)
            SELECT 'welcome', '{"user_id":' || u.id || '}', 'queued', 0, $5, $6, $4, $4, $7 FROM u RETURNING id
        )
        SELECT u.id, t.id FROM u, t
        """)

    /// PostgreSQL text cannot hold U+0000 (a C string ends there): such a value is
    /// refused, never cut short.
    static func refuseNUL(_ values: (field: String, value: String?)...) throws {
        for (field, value) in values where value?.utf8.contains(0) == true {
            throw StoreError.unstorable(
                field: field, message: "\(field) must not contain U+0000 (NUL) on this database")
        }
    }

    public func createUser(name: String, email: String) async throws -> CreatedUser {
        try Self.refuseNUL(("name", name), ("email", email))
        let stamp = UTCTimestamp.now()
        let parameters = [
            name, email, EmailKey.of(email), stamp, String(settings.welcomeMaxAttempts), String(now()),
            settings.hostID,
        ]
        let ids = try await mapErrors {
            try await pool.query(Self.createUser, parameters) { rows in
                rows.count == 1 ? (rows.integer(0, 0), rows.integer(0, 1)) : nil
            }
        }
        guard let (userID, taskID) = ids else { throw StoreError.duplicateEmail }
        return CreatedUser(
            user: User(id: userID, name: name, email: email, createdAt: stamp, updatedAt: stamp),
            welcomeTaskID: taskID)
    }

    static let userByID = PreparedStatement("user_by_id", "SELECT \(userColumns) FROM users WHERE id = $1")

    public func user(id: Int64) async throws -> User? {
        try await mapErrors {
            try await pool.query(Self.userByID, [String(id)], isRead: true) { rows in
                rows.count == 1 ? Self.user(rows) : nil
            }
        }
    }

    static let userPage = PreparedStatement(
        "user_page", "SELECT id, name, email FROM users WHERE id > $1 ORDER BY id LIMIT $2")

    /// Encoded on the connection thread, straight from libpq's result.
    public func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage {
        try await mapErrors {
            try await pool.query(Self.userPage, [String(afterID), String(limit)], isRead: true) { rows in
                var json = JSONWriter(capacity: min(rows.count, 1000) * 64 + 16)
                var lastID: Int64?
                rows.forEachRow { row in
                    let id = rows.integer(row, 0)
                    json.append(row == 0 ? "{\"id\":" : ",{\"id\":")
                    json.integer(id)
                    json.append(",\"name\":")
                    rows.withBytes(row, 1) { json.string(utf8: $0) }
                    json.append(",\"email\":")
                    rows.withBytes(row, 2) { json.string(utf8: $0) }
                    json.append("}")
                    lastID = id
                }
                return UserSummaryPage(json: json.bytes, count: rows.count, lastID: lastID)
            }
        }
    }

    static let updateUser = PreparedStatement(
        "update_user",
        """
        UPDATE users SET name = coalesce($2, name), email = coalesce($3, email),
            email_key = coalesce($4, email_key), updated_at = $1
        WHERE id = $5 RETURNING \(userColumns)
        """)

    public func updateUser(id: Int64, name: String?, email: String?) async throws -> User? {
        try Self.refuseNUL(("name", name), ("email", email))
        let parameters = [UTCTimestamp.now(), name, email, email.map(EmailKey.of), String(id)]
        return try await mapErrors {
            try await pool.query(Self.updateUser, parameters) { rows in rows.count == 1 ? Self.user(rows) : nil }
        }
    }

    static let deleteUser = PreparedStatement("delete_user", "DELETE FROM users WHERE id = $1")

    public func deleteUser(id: Int64) async throws -> Bool {
        try await mapErrors {
            try await pool.query(Self.deleteUser, [String(id)]) { $0.affectedRows > 0 }
        }
    }

    static let ping = PreparedStatement("ping", "SELECT 1")

    public func ping() async throws {
        try await mapErrors {
            try await pool.query(Self.ping, [], isRead: true) { _ in () }
        }
    }
}

/// Translates PostgreSQL errors into the backend-neutral `StoreError`.
func mapErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PostgresError {
        if error.isUniqueViolation { throw StoreError.duplicateEmail }
        if error.kind == .closed { throw StoreError.unavailable("shutting down, try again") }
        if error.isUnavailable { throw StoreError.unavailable("database unavailable, try again") }
        throw error
    }
}
