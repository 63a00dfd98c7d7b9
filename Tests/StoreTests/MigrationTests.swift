import Foundation
import SQLite
import Testing

@testable import Store

/// Migration 5 rebuilds `tasks` with a CHECK SQLite evaluates without a temporary
/// b-tree. Checked on a database that has lived at version 4.
@Suite struct TaskCheckMigrationTests {
    let temporary: TemporaryDatabase

    init() async throws {
        temporary = try TemporaryDatabase()
        // A database as version 4 left it, with tasks in every state, an idempotency
        // key, and the newest task deleted (so the id high-water mark is above max(id)).
        try await temporary.database.write { connection in
            try connection.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for migration in Migrations.all where migration.version <= 4 {
                try connection.execute(migration.sql)
                try connection.execute(
                    "INSERT INTO schema_migrations VALUES (\(migration.version), '\(migration.name)', 'then')"
                )
            }
            for (index, state) in ["queued", "running", "succeeded", "failed", "cancelled", "queued", "succeeded"].enumerated() {
                let key = index == 2 ? "'key-2'" : "NULL"
                try connection.execute(
                    """
                    INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, idempotency_key)
                    VALUES ('sleep', '{"seconds":1}', '\(state)', 1, 3, \(index), 'c\(index)', 'u\(index)', \(key))
                    """
                )
            }
            try connection.execute("DELETE FROM tasks WHERE id = 7")
        }
    }

    func rows(_ sql: String) async throws -> [String] {
        try await temporary.database.read { connection in
            var rows: [String] = []
            try connection.prepare(sql).forEachRow { row in rows.append(row.text(0)) }
            return rows
        }
    }

    @Test func keepsEveryRowCountAndIdAndDropsTheINList() async throws {
        let tasksBefore = try await rows("SELECT id || '|' || state || '|' || run_at || '|' || coalesce(idempotency_key, '') FROM tasks ORDER BY id")
        let countsBefore = try await rows("SELECT state || '=' || count FROM task_counts ORDER BY state")
        #expect(try await rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'").first?.contains("state IN (") == true)

        #expect(try await Migrations.migrate(temporary.database) == [5])

        #expect(try await rows("SELECT id || '|' || state || '|' || run_at || '|' || coalesce(idempotency_key, '') FROM tasks ORDER BY id") == tasksBefore)
        #expect(try await rows("SELECT state || '=' || count FROM task_counts ORDER BY state") == countsBefore)
        #expect(try await rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'").first?.contains(" IN (") == false)
        #expect(try await rows("SELECT name FROM sqlite_master WHERE tbl_name = 'tasks' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name")
            == ["task_counts_delete", "task_counts_insert", "task_counts_update", "tasks_due", "tasks_state_id"])
        #expect(try await rows("SELECT name FROM sqlite_master WHERE name = 'tasks_rebuilt'").isEmpty)
        #expect(try await rows("PRAGMA integrity_check") == ["ok"])

        try await temporary.database.write { connection in
            // The deleted task's id is not reused.
            try connection.execute(
                "INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at) VALUES ('sleep', '{}', 'queued', 3, 0, 'c', 'u')"
            )
            #expect(connection.lastInsertRowID == 8)
            // The rule still holds, and the triggers still count.
            #expect(throws: SQLiteError.self) {
                try connection.execute("UPDATE tasks SET state = 'done' WHERE id = 1")
            }
            #expect(throws: SQLiteError.self) {
                try connection.execute("INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at, idempotency_key) VALUES ('s', '{}', 'queued', 3, 0, 'c', 'u', 'key-2')")
            }
            try connection.execute("UPDATE tasks SET state = 'succeeded' WHERE id = 1")
        }
        #expect(try await rows("SELECT count FROM task_counts WHERE state = 'queued'") == ["2"])
        #expect(try await rows("SELECT count FROM task_counts WHERE state = 'succeeded'") == ["2"])
    }

    /// The point of the migration: writing a task row opens no temporary b-tree.
    @Test func writingATaskNeedsNoTemporaryTable() async throws {
        let insert = "EXPLAIN INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at) VALUES ('s', '{}', 'queued', 3, 0, 'c', 'u')"
        let update = "EXPLAIN UPDATE tasks SET state = 'running' WHERE id = 1"
        // On the writer: a read-only connection compiles no constraint checks at all.
        func opcodes(_ sql: String) async throws -> [String] {
            try await temporary.database.write { connection in
                var names: [String] = []
                try connection.prepare(sql).forEachRow { row in names.append(row.text(1)) }
                return names
            }
        }
        #expect(try await opcodes(insert).contains("OpenEphemeral"))  // at version 4
        try await Migrations.migrate(temporary.database)
        #expect(try await !opcodes(insert).contains("OpenEphemeral"))
        #expect(try await !opcodes(update).contains("OpenEphemeral"))
    }
}
