import Basics
public import SQLite

/// One schema change, applied once, in order, inside a write transaction together
/// with its row in `schema_migrations`.
///
/// Most are SQL. A change SQL cannot compute (the email key is a Swift function)
/// is Swift code run on the same connection, in the same transaction: when it throws,
/// the whole migration run rolls back and the database stays as it was.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    /// The SQL of the change; empty when the change is Swift code.
    public let sql: String
    private let code: (@Sendable (Connection) throws -> Void)?

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
        self.code = nil
    }

    public init(version: Int, name: String, code: @escaping @Sendable (Connection) throws -> Void) {
        self.version = version
        self.name = name
        self.sql = ""
        self.code = code
    }

    /// Makes the change on `connection`, inside the caller's transaction.
    public func apply(to connection: Connection) throws {
        if let code { try code(connection) } else { try connection.execute(sql) }
    }
}

/// The schema of usersd, oldest first. Never edit a shipped migration: add one.
public enum Migrations {
    public static let all: [Migration] = [
        Migration(
            version: 1,
            name: "create users",
            sql: """
                CREATE TABLE users (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL,
                    email TEXT NOT NULL,
                    email_key TEXT NOT NULL UNIQUE,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL
                ) STRICT;
                """
        ),
        Migration(
            version: 2,
            name: "create tasks and outbox",
            sql: """
                CREATE TABLE tasks (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    max_attempts INTEGER NOT NULL,
                    run_at INTEGER NOT NULL,
                    created_at TEXT NOT NULL,
                    started_at TEXT,
                    finished_at TEXT,
                    last_error TEXT,
                    result TEXT,
                    idempotency_key TEXT UNIQUE,
                    updated_at TEXT NOT NULL
                ) STRICT;
                CREATE INDEX tasks_due ON tasks (state, run_at, id);
                CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    user_id INTEGER NOT NULL UNIQUE,
                    recipient TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    body TEXT NOT NULL,
                    created_at TEXT NOT NULL
                ) STRICT;
                """
        ),
        Migration(
            version: 3,
            name: "count tasks by state",
            // Kept exact by triggers in the same transactions as the task rows, so the
            // queue bound and the metrics read one row instead of counting the queue.
            sql: """
                CREATE TABLE task_counts (state TEXT PRIMARY KEY, count INTEGER NOT NULL) STRICT, WITHOUT ROWID;
                INSERT INTO task_counts (state, count)
                    SELECT s.state, (SELECT count(*) FROM tasks t WHERE t.state = s.state)
                    FROM (SELECT 'queued' AS state UNION ALL SELECT 'running' UNION ALL SELECT 'succeeded'
                          UNION ALL SELECT 'failed' UNION ALL SELECT 'cancelled') AS s;
                CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
                    UPDATE task_counts SET count = count + 1 WHERE state = new.state;
                END;
                CREATE TRIGGER task_counts_update AFTER UPDATE OF state ON tasks WHEN old.state <> new.state BEGIN
                    UPDATE task_counts SET count = count - 1 WHERE state = old.state;
                    UPDATE task_counts SET count = count + 1 WHERE state = new.state;
                END;
                CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
                    UPDATE task_counts SET count = count - 1 WHERE state = old.state;
                END;
                """
        ),
        Migration(
            version: 4,
            name: "index tasks by state and id",
            // GET /tasks?state=...&after_id=... pages in id order within a state.
            sql: "CREATE INDEX tasks_state_id ON tasks (state, id);"
        ),
        Migration(
            version: 5,
            name: "task state check without an IN list",
            // `CHECK (state IN (...5 values...))` makes SQLite build a temporary b-tree of
            // the five values every time a statement writes a task row (`OpenEphemeral`
            // in EXPLAIN); the same rule as comparisons needs none. SQLite cannot alter a
            // CHECK in place, so
            // this is its documented rebuild: new table, copy, drop, rename, then the
            // indexes and triggers again. The AUTOINCREMENT high-water mark is carried
            // over, so ids of deleted tasks are never reused; `task_counts` is unchanged
            // (the copy fires no trigger, and the rows are the same).
            sql: """
                CREATE TABLE tasks_rebuilt (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (
                        state = 'queued' OR state = 'running' OR state = 'succeeded' OR state = 'failed' OR state = 'cancelled'
                    ),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    max_attempts INTEGER NOT NULL,
                    run_at INTEGER NOT NULL,
                    created_at TEXT NOT NULL,
                    started_at TEXT,
                    finished_at TEXT,
                    last_error TEXT,
                    result TEXT,
                    idempotency_key TEXT UNIQUE,
                    updated_at TEXT NOT NULL
                ) STRICT;
                INSERT INTO tasks_rebuilt (id, kind, payload, state, attempts, max_attempts, run_at, created_at,
                                           started_at, finished_at, last_error, result, idempotency_key, updated_at)
                    SELECT id, kind, payload, state, attempts, max_attempts, run_at, created_at,
                           started_at, finished_at, last_error, result, idempotency_key, updated_at
                    FROM tasks ORDER BY id;
                DELETE FROM sqlite_sequence WHERE name = 'tasks_rebuilt';
                INSERT INTO sqlite_sequence (name, seq)
                    SELECT 'tasks_rebuilt', max(seq) FROM (
                        SELECT seq FROM sqlite_sequence WHERE name = 'tasks'
                        UNION ALL SELECT coalesce(max(id), 0) FROM tasks
                    );
                DROP TABLE tasks;
                ALTER TABLE tasks_rebuilt RENAME TO tasks;
                CREATE INDEX tasks_due ON tasks (state, run_at, id);
                CREATE INDEX tasks_state_id ON tasks (state, id);
                CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
                    UPDATE task_counts SET count = count + 1 WHERE state = new.state;
                END;
                CREATE TRIGGER task_counts_update AFTER UPDATE OF state ON tasks WHEN old.state <> new.state BEGIN
                    UPDATE task_counts SET count = count - 1 WHERE state = old.state;
                    UPDATE task_counts SET count = count + 1 WHERE state = new.state;
                END;
                CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
                    UPDATE task_counts SET count = count - 1 WHERE state = old.state;
                END;
                """
        ),
        Migration(
            version: 6,
            name: "tasks without per-row bookkeeping",
            // A new user costs two task-row writes (the welcome task's insert and its
            // completion). Per row, the triggers of migration 3 ran three task_counts
            // updates in trigger frames with statement journals, the NULL idempotency key
            // took an index entry, and a finished task took a tasks_due entry nothing reads.
            // Instead each write job updates task_counts once per state it changed
            // (`TaskCounts`), the unique key indexes only the tasks that have one,
            // and tasks_due holds the queued tasks only (it keeps its `state` column: with
            // it the planner prefers it to tasks_state_id for the claim's range on run_at).
            // Same rebuild as migration 5; rows, ids, the AUTOINCREMENT mark and task_counts
            // are kept.
            sql: """
                DROP TRIGGER task_counts_insert;
                DROP TRIGGER task_counts_update;
                DROP TRIGGER task_counts_delete;
                CREATE TABLE tasks_rebuilt (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (
                        state = 'queued' OR state = 'running' OR state = 'succeeded' OR state = 'failed' OR state = 'cancelled'
                    ),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    max_attempts INTEGER NOT NULL,
                    run_at INTEGER NOT NULL,
                    created_at TEXT NOT NULL,
                    started_at TEXT,
                    finished_at TEXT,
                    last_error TEXT,
                    result TEXT,
                    idempotency_key TEXT,
                    updated_at TEXT NOT NULL
                ) STRICT;
                INSERT INTO tasks_rebuilt (id, kind, payload, state, attempts, max_attempts, run_at, created_at,
                                           started_at, finished_at, last_error, result, idempotency_key, updated_at)
                    SELECT id, kind, payload, state, attempts, max_attempts, run_at, created_at,
                           started_at, finished_at, last_error, result, idempotency_key, updated_at
                    FROM tasks ORDER BY id;
                DELETE FROM sqlite_sequence WHERE name = 'tasks_rebuilt';
                INSERT INTO sqlite_sequence (name, seq)
                    SELECT 'tasks_rebuilt', max(seq) FROM (
                        SELECT seq FROM sqlite_sequence WHERE name = 'tasks'
                        UNION ALL SELECT coalesce(max(id), 0) FROM tasks
                    );
                DROP TABLE tasks;
                ALTER TABLE tasks_rebuilt RENAME TO tasks;
                CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
                CREATE INDEX tasks_due ON tasks (state, run_at, id) WHERE state = 'queued';
                CREATE INDEX tasks_state_id ON tasks (state, id);
                """
        ),
        Migration(
            version: 7,
            name: "email keys under Unicode caseless matching",
            // Keys were `lowercased()`, which let `STRASSE`/`straße`, `ſam`/`sam` and `café`
            // precomposed/decomposed be two users. Every key is rebuilt with `EmailKey`;
            // when two existing users' emails become one, the migration refuses and names
            // them (`EmailKeyMigration`).
            code: EmailKeyMigration.rebuildKeys
        ),
    ]

    /// Applies every migration not yet recorded; returns the versions applied.
    @discardableResult
    public static func migrate(_ database: Database) async throws -> [Int] {
        try await database.write(changesSchema: true) { connection in
            try connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            let applied = try appliedVersions(connection)
            var done: [Int] = []
            for migration in all where !applied.contains(migration.version) {
                try migration.apply(to: connection)
                try connection.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
                    .bind([.integer(Int64(migration.version)), .text(migration.name), .text(UTCTimestamp.now())]).run()
                done.append(migration.version)
            }
            return done
        }
    }

    /// Versions recorded as applied.
    public static func appliedVersions(_ connection: Connection) throws -> Set<Int> {
        let exists =
            try connection.prepare(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).firstInteger() ?? 0
        guard exists > 0 else { return [] }
        var versions = Set<Int>()
        try connection.prepare("SELECT version FROM schema_migrations").forEachRow { row in
            versions.insert(Int(row.integer(0)))
        }
        return versions
    }

    /// Migrations the database has not applied yet.
    public static func pending(_ database: Database) async throws -> [Migration] {
        let applied = try await database.read { try appliedVersions($0) }
        return all.filter { !applied.contains($0.version) }
    }
}
