import Foundation
import SQLite
import TestSupport
import Testing

@testable import Store
@testable import StoreSQLite

/// Migration 7 rebuilds every `email_key` with `EmailKey`, on a database that has lived
/// at version 6 with `lowercased()` keys; when two users' emails become one it refuses,
/// names them, and changes nothing.
@Suite struct EmailKeyMigrationTests {
    let temporary: TemporaryDatabase

    /// A database at version 6 holding `emails` (ids 1, 2, ... in order) with the keys
    /// version 6 wrote.
    init() async throws {
        temporary = try TemporaryDatabase()
        try await temporary.database.write(changesSchema: true) { connection in
            try connection.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for migration in Migrations.all where migration.version <= 6 {
                try migration.apply(to: connection)
                try connection.execute(
                    "INSERT INTO schema_migrations VALUES (\(migration.version), '\(migration.name)', 'then')"
                )
            }
        }
    }

    func insert(_ emails: [String]) async throws {
        try await temporary.database.write { connection in
            let insert = try connection.prepare(
                "INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES ('n', ?1, ?2, 'c', 'u')"
            )
            for email in emails { try insert.bind([.text(email), .text(email.lowercased())]).run() }
        }
    }

    /// Every row, every column, text as hex (byte for byte), and the applied versions.
    func snapshot() async throws -> [String] {
        try await temporary.database.read { connection in
            var rows: [String] = []
            try connection.prepare(
                """
                SELECT id || ' ' || name || ' ' || hex(email) || ' ' || hex(email_key) || ' ' || created_at || ' '
                    || updated_at FROM users ORDER BY id
                """
            ).forEachRow { rows.append($0.text(0)) }
            try connection.prepare("SELECT version FROM schema_migrations ORDER BY version").forEachRow {
                rows.append("version \($0.text(0))")
            }
            return rows
        }
    }

    func keys() async throws -> [[UInt8]] {
        try await temporary.database.read { connection in
            var keys: [[UInt8]] = []
            try connection.prepare("SELECT email_key FROM users ORDER BY id").forEachRow { row in
                keys.append(row.withText(0) { Array($0) })
            }
            return keys
        }
    }

    @Test func rebuildsEveryKeyAndKeepsTheRows() async throws {
        let emails = [
            "STRASSE@x.io", "\u{17F}am@x.io", "cafe\u{301}@x.io", "Bob@x.io", "zo\u{EB}@x.io", "\u{13A0}@x.io",
        ]
        try await insert(emails)
        let before = try await snapshot()

        #expect(try await Migrations.migrate(temporary.database) == [7])

        #expect(
            try await keys() == [
                Array("strasse@x.io".utf8), Array("sam@x.io".utf8), Array("caf\u{E9}@x.io".utf8),
                Array("bob@x.io".utf8),
                Array("zo\u{EB}@x.io".utf8), Array("\u{13A0}@x.io".utf8),  // Cherokee folds to its capitals
            ])
        // Only the keys changed: ids, names, emails (byte for byte) and timestamps are kept.
        let after = try await snapshot()
        func withoutKeys(_ rows: [String]) -> [String] {
            rows.map { row in
                let fields = row.split(separator: " ")
                guard fields.count == 6 else { return row }
                return fields.enumerated().filter { $0.offset != 3 }.map(\.element).joined(separator: " ")
            }
        }
        #expect(withoutKeys(after) == withoutKeys(before) + ["version 7"])

        // The rebuilt keys hold: the other spellings are duplicates now.
        let store = SQLiteStore(database: temporary.database)
        for email in ["stra\u{DF}e@x.io", "sam@x.io", "caf\u{E9}@x.io", "\u{AB70}@x.io"] {
            await #expect(throws: StoreError.duplicateEmail) { _ = try await store.createUser(name: "n", email: email) }
        }
    }

    @Test func refusesCollidingUsersNamingThemAndChangesNothing() async throws {
        try await insert([
            "STRASSE@x.io", "bob@x.io", "stra\u{DF}e@x.io", "caf\u{E9}@x.io", "cafe\u{301}@x.io", "Sam@x.io",
        ])
        let before = try await snapshot()

        var collision: EmailKeyCollision?
        do {
            try await Migrations.migrate(temporary.database)
        } catch let error as EmailKeyCollision {
            collision = error
        }
        let error = try #require(collision)
        #expect(error.groups.map { $0.map(\.id) } == [[1, 3], [4, 5]])
        let message = error.description
        #expect(message.contains("users 1 <STRASSE@x.io> and 3 <stra\u{DF}e@x.io>"), "\(message)")
        #expect(message.contains("users 4 <caf\u{E9}@x.io> and 5 <cafe\\u{301}@x.io>"), "\(message)")
        let path = temporary.directory.appendingPathComponent("users.sqlite3").path
        #expect(message.contains("sqlite3 '\(path)'"), "\(message)")
        #expect(message.contains("UPDATE users SET email = 'another@example.com' WHERE id = 3"), "\(message)")
        #expect(message.contains("DELETE FROM users WHERE id = 3"), "\(message)")
        #expect(!message.contains("\n"))
        // Nothing changed: still version 6, every row as it was.
        #expect(try await snapshot() == before)
        #expect(before.last == "version 6")

        // The operator's fix the message describes: user 1 gets another email (its old
        // key `strasse@x.io` is user 3's new one, so keys must be parked first), user 5
        // is deleted.
        try await temporary.database.write { connection in
            try connection.execute("UPDATE users SET email = 'other@x.io' WHERE id = 1")
            try connection.execute("DELETE FROM users WHERE id = 5")
        }
        #expect(try await Migrations.migrate(temporary.database) == [7])
        #expect(
            try await keys() == [
                Array("other@x.io".utf8), Array("bob@x.io".utf8), Array("strasse@x.io".utf8),
                Array("caf\u{E9}@x.io".utf8),
                Array("sam@x.io".utf8),
            ])
    }

    /// A user whose new key is an unchanged user's key collides with it.
    @Test func aNewKeyEqualToAnUnchangedKeyCollides() async throws {
        try await insert(["sam@x.io", "x@x.io", "\u{17F}am@x.io"])
        let before = try await snapshot()
        await #expect(throws: EmailKeyCollision.self) { try await Migrations.migrate(temporary.database) }
        do {
            try await Migrations.migrate(temporary.database)
        } catch let error as EmailKeyCollision {
            #expect(error.groups == [[.init(id: 1, email: "sam@x.io"), .init(id: 3, email: "\u{17F}am@x.io")]])
        }
        #expect(try await snapshot() == before)
    }
}
