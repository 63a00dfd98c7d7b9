import Foundation
import SQLite
import TestSupport
import Testing

@testable import StoreSQLite

/// SQLite's statement and savepoint journals: in memory up to the process-wide spill
/// size, in a temporary file past it. Serialized: the first test looks for such files
/// among all the process's descriptors, which the second one opens on purpose.
@Suite(.serialized) struct JournalSpillTests {
    let temporary: TemporaryDatabase

    init() throws {
        temporary = try TemporaryDatabase()
    }

    /// A group commit that runs again after a job failed half-way puts every job in a
    /// savepoint (`DatabaseThread.runBatch`), whose sub-journal holds the original of
    /// each page the job changes. It must stay in memory: by default SQLite spills
    /// one over 64 KiB to a new file in /var/tmp, created and unlinked per transaction.
    /// Here a savepoint rewrites about 80 KiB of existing pages (more than a job that
    /// creates a user, about 50 KiB) on a writer-like connection (WAL, inside BEGIN
    /// IMMEDIATE), and no such file is ever open. (Larger journals spill; see
    /// `LargeMigrationTests`.)
    @Test func savepointJournalsStayInMemory() throws {
        let path = temporary.directory.appendingPathComponent("journal.sqlite3").path
        let connection = try Connection(path: path)
        try connection.enableWAL(synchronous: "NORMAL")
        try connection.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        try connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80) INSERT INTO ballast (data) SELECT zeroblob(1000) FROM n"
        )
        try connection.execute("BEGIN IMMEDIATE")
        try connection.execute("SAVEPOINT job")
        try connection.execute("UPDATE ballast SET data = randomblob(1000)")
        let spilled = Self.openTemporaryFiles()
        try connection.execute("RELEASE job")
        try connection.execute("COMMIT")
        #expect(Connection.processSettingsApplied)
        #expect(spilled.isEmpty, "sub-journal spilled to \(spilled)")
        #expect(
            try connection.prepare("SELECT count(*) FROM ballast WHERE data <> zeroblob(1000)").firstInteger() == 80)
    }

    /// The files this process holds open that SQLite made for temporary data.
    static func openTemporaryFiles() -> [String] {
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return descriptors.compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")
        }
        .filter { $0.contains("etilqs") }
    }

    /// A migration that rewrites more than a few MiB in one transaction. (With SQLite's
    /// statement journal held in memory up to 4 MiB, Debian's SQLite 3.40 failed such a
    /// transaction with "database or disk is full" once the journal spilled to a file.)

    @Test func rebuildsTwoHundredThousandTasks() async throws {
        let temporary = try TemporaryDatabase()
        try await temporary.database.write { connection in
            try connection.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for migration in Migrations.all where migration.version <= 5 {
                try connection.execute(migration.sql)
                try connection.execute(
                    "INSERT INTO schema_migrations VALUES (\(migration.version), '\(migration.name)', 'then')")
            }
        }
        try await temporary.database.write { connection in
            try connection.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
                INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, idempotency_key)
                SELECT 'sleep', '{"seconds":1}', CASE i % 2 WHEN 0 THEN 'queued' ELSE 'succeeded' END, 1, 3, i, 'c', 'u',
                       CASE WHEN i % 100 = 0 THEN 'key-' || i END
                FROM n
                """
            )
        }
        #expect(try await Migrations.migrate(temporary.database) == [6, 7])
        let (count, counts, check) = try await temporary.database.read { connection in
            (
                try connection.prepare("SELECT count(*) FROM tasks").firstInteger(),
                try connection.prepare(
                    "SELECT group_concat(state || '=' || count, ',') FROM (SELECT * FROM task_counts WHERE count > 0 ORDER BY state)"
                ).firstText(),
                try connection.prepare("PRAGMA integrity_check").firstText()
            )
        }
        #expect(count == 200_000)
        #expect(counts == "queued=100000,succeeded=100000")
        #expect(check == "ok")
    }
}
