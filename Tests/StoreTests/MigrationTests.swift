import Foundation
import SQLite
import TestSupport
import Testing

@testable import Store
@testable import StoreSQLite

/// Migrations 5 and 6 rebuild `tasks`: 5 with a CHECK SQLite evaluates without a
/// temporary b-tree; 6 without the counting triggers, with the idempotency key indexed
/// only where there is one and `tasks_due` holding queued tasks only. Checked on a
/// database that has lived at version 4.
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
            for (index, state) in ["queued", "running", "succeeded", "failed", "cancelled", "queued", "succeeded"]
                .enumerated()
            {
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

    @Test func keepsEveryRowCountAndIdAndDropsTheINListAndTriggers() async throws {
        let tasksBefore = try await rows(
            "SELECT id || '|' || state || '|' || run_at || '|' || coalesce(idempotency_key, '') FROM tasks ORDER BY id")
        let countsBefore = try await rows("SELECT state || '=' || count FROM task_counts ORDER BY state")
        #expect(
            try await rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'").first?.contains("state IN (") == true)

        #expect(try await Migrations.migrate(temporary.database) == [5, 6, 7])

        #expect(
            try await rows(
                "SELECT id || '|' || state || '|' || run_at || '|' || coalesce(idempotency_key, '') FROM tasks ORDER BY id"
            ) == tasksBefore)
        #expect(try await rows("SELECT state || '=' || count FROM task_counts ORDER BY state") == countsBefore)
        #expect(try await rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'").first?.contains(" IN (") == false)
        #expect(
            try await rows(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'tasks' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name"
            )
                == ["tasks_due", "tasks_idempotency_key", "tasks_state_id"])
        #expect(try await rows("SELECT name FROM sqlite_master WHERE name = 'tasks_rebuilt'").isEmpty)
        #expect(try await rows("PRAGMA integrity_check") == ["ok"])

        try await temporary.database.write { connection in
            // The deleted task's id is not reused.
            try connection.execute(
                "INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at) VALUES ('sleep', '{}', 'queued', 3, 0, 'c', 'u')"
            )
            #expect(connection.lastInsertRowID == 8)
            // The rule and the unique key still hold.
            #expect(throws: SQLiteError.self) {
                try connection.execute("UPDATE tasks SET state = 'done' WHERE id = 1")
            }
            #expect(throws: SQLiteError.self) {
                try connection.execute(
                    "INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at, idempotency_key) VALUES ('s', '{}', 'queued', 3, 0, 'c', 'u', 'key-2')"
                )
            }
        }
    }

    /// The point of the migrations: writing a task row opens no temporary b-tree (5)
    /// and runs no trigger program (6).
    @Test func writingATaskNeedsNoTemporaryTableNorTrigger() async throws {
        let insert =
            "EXPLAIN INSERT INTO tasks (kind, payload, state, max_attempts, run_at, created_at, updated_at) VALUES ('s', '{}', 'queued', 3, 0, 'c', 'u')"
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
        #expect(try await opcodes(insert).contains("Program"))
        #expect(try await opcodes(update).contains("Program"))
        try await Migrations.migrate(temporary.database)
        for sql in [insert, update] {
            let names = try await opcodes(sql)
            #expect(!names.contains("OpenEphemeral") && !names.contains("Program"))
        }
    }

    /// The partial indexes still serve the queries that need them.
    @Test func claimAndIdempotencyLookupsUseThePartialIndexes() async throws {
        try await Migrations.migrate(temporary.database)
        // The plan's text is column 3.
        func detail(_ sql: String) async throws -> String {
            try await temporary.database.read { connection in
                var details: [String] = []
                try connection.prepare("EXPLAIN QUERY PLAN " + sql).forEachRow { details.append($0.text(3)) }
                return details.joined(separator: "; ")
            }
        }
        #expect(
            try await detail("SELECT id FROM tasks WHERE state = 'queued' AND run_at <= 5 ORDER BY run_at, id LIMIT 4")
                .contains("USING COVERING INDEX tasks_due (state=? AND run_at<?)"))
        #expect(try await detail("SELECT min(run_at) FROM tasks WHERE state = 'queued'").contains("tasks_due"))
        #expect(
            try await detail("SELECT id FROM tasks WHERE idempotency_key = 'key-2'").contains("tasks_idempotency_key"))
        #expect(
            try await detail("SELECT id FROM tasks WHERE state = 'failed' AND id > 0 ORDER BY id LIMIT 3").contains(
                "tasks_state_id"))
        #expect(try await rows("SELECT id FROM tasks WHERE idempotency_key = 'key-2'") == ["3"])
    }
}

/// The set statements of `runQueuedWelcomes` reach each task by its id, whatever the
/// backlog of queued tasks (through tasks_due they would scan it), and build no
/// temporary b-tree.
@Suite struct WelcomeStatementPlanTests {
    @Test func welcomesAreLookedUpByRowid() async throws {
        let temporary = try TemporaryDatabase()
        try await Migrations.migrate(temporary.database)
        for sql in [SQLiteStore.runnableWelcomesSQL, SQLiteStore.welcomeOutboxSQL, SQLiteStore.succeedWelcomesSQL] {
            let (plan, opcodes) = try await temporary.database.write { connection in
                var details: [String] = []
                try connection.prepare("EXPLAIN QUERY PLAN " + sql).forEachRow { details.append($0.text(3)) }
                var names: [String] = []
                try connection.prepare("EXPLAIN " + sql).forEachRow { names.append($0.text(1)) }
                return (details, names)
            }
            #expect(plan.first?.hasPrefix("SCAN j VIRTUAL TABLE") == true, "\(plan)")
            #expect(
                plan.dropFirst().allSatisfy {
                    $0.hasPrefix("SEARCH") && $0.contains("USING INTEGER PRIMARY KEY (rowid=?)")
                }, "\(plan)")
            // An UPDATE ... FROM first collects the rows it changes (at most one batch of
            // ids, in memory); the SELECT and the INSERT build no temporary b-tree.
            if sql != SQLiteStore.succeedWelcomesSQL {
                #expect(!opcodes.contains("OpenEphemeral"))
            }
        }
    }
}
