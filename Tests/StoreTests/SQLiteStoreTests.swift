import Foundation
import JSON
import TestSupport
import Testing

@testable import SQLite
@testable import Store
@testable import StoreSQLite

@Suite struct SQLiteStoreTests {
    let temporary: TemporaryDatabase
    let store: SQLiteStore

    init() async throws {
        temporary = try TemporaryDatabase()
        try await Migrations.migrate(temporary.database)
        store = SQLiteStore(database: temporary.database)
    }

    @Test func migrationsRunOnceAndAreRecorded() async throws {
        let again = try await Migrations.migrate(temporary.database)
        #expect(again.isEmpty)
        #expect(try await Migrations.pending(temporary.database).isEmpty)
        let mode = try await temporary.database.read { try $0.prepare("PRAGMA journal_mode").firstText() }
        #expect(mode == "wal")
    }

    @Test func createsAndReadsUsersByteForByte() async throws {
        let name = "  O'Brien \"quoted\" '); DROP TABLE users;-- 😀 שלום  "
        let created = try await store.createUser(name: name, email: "Ob@Example.com").user
        #expect(created.id == 1)
        let fetched = try await store.user(id: created.id)
        #expect(fetched == created)
        #expect(fetched?.name == name)
        #expect(try await store.user(id: 999) == nil)
    }

    @Test func emailsAreUniqueCaseInsensitivelyIncludingNonASCII() async throws {
        _ = try await store.createUser(name: "a", email: "Bob@X.io")
        await #expect(throws: StoreError.duplicateEmail) { try await store.createUser(name: "b", email: "bob@x.io") }
        _ = try await store.createUser(name: "c", email: "Ä@x.io")
        await #expect(throws: StoreError.duplicateEmail) { try await store.createUser(name: "d", email: "ä@x.io") }
    }

    /// A page of users as (id, name, email), read through `userSummaryPage`.
    func users(afterID: Int64, limit: Int) async throws -> [(id: Int64, name: String, email: String)] {
        let page = try await store.userSummaryPage(afterID: afterID, limit: limit)
        guard case .array(let rows) = try JSONParser.parse(Array("[".utf8) + page.json + Array("]".utf8)) else {
            return []
        }
        return rows.compactMap { row in
            guard case .number(_, let id?)? = row["id"], case .string(let name)? = row["name"],
                case .string(let email)? = row["email"]
            else { return nil }
            return (id, name, email)
        }
    }

    @Test func listsInIdOrderWithKeysetPaging() async throws {
        for index in 1...7 { _ = try await store.createUser(name: "u\(index)", email: "u\(index)@x.io") }
        let first = try await users(afterID: 0, limit: 3)
        #expect(first.map(\.id) == [1, 2, 3])
        let next = try await users(afterID: 3, limit: 10)
        #expect(next.map(\.id) == [4, 5, 6, 7])
        #expect(try await users(afterID: 7, limit: 10).isEmpty)
    }

    @Test func summaryPagesEncodeTheSameRowsAsJSON() async throws {
        let names = ["plain", "quote\" back\\slash", "tab\tnew\nline", "emoji 😀 שלום", "ctl\u{1}"]
        for (index, name) in names.enumerated() { _ = try await store.createUser(name: name, email: "p\(index)@x.io") }
        let page = try await store.userSummaryPage(afterID: 1, limit: 3)
        #expect(page.count == 3 && page.lastID == 4)
        let parsed = try JSONParser.parse(Array("[".utf8) + page.json + Array("]".utf8))
        let expected = try await ([2, 3, 4] as [Int64]).asyncMap { id -> JSONValue in
            let user = try #require(try await store.user(id: id))
            return .object([
                "id": .number(Double(user.id), integer: user.id), "name": .string(user.name),
                "email": .string(user.email),
            ])
        }
        #expect(parsed == .array(expected))
        let empty = try await store.userSummaryPage(afterID: 99, limit: 3)
        #expect(empty.count == 0 && empty.json.isEmpty && empty.lastID == nil)
    }

    @Test func updatesOnlyTheGivenFields() async throws {
        let user = try await store.createUser(name: "old", email: "old@x.io").user
        let renamed = try await store.updateUser(id: user.id, name: "new", email: nil)
        #expect(renamed?.name == "new" && renamed?.email == "old@x.io")
        let moved = try await store.updateUser(id: user.id, name: nil, email: "NEW@x.io")
        #expect(moved?.name == "new" && moved?.email == "NEW@x.io")
        _ = try await store.createUser(name: "other", email: "other@x.io")
        await #expect(throws: StoreError.duplicateEmail) {
            try await store.updateUser(id: user.id, name: nil, email: "OTHER@x.io")
        }
        #expect(try await store.updateUser(id: 999, name: "x", email: nil) == nil)
    }

    @Test func deletesOnce() async throws {
        let user = try await store.createUser(name: "gone", email: "gone@x.io").user
        #expect(try await store.deleteUser(id: user.id))
        #expect(try await store.deleteUser(id: user.id) == false)
        #expect(try await store.user(id: user.id) == nil)
    }

    @Test func concurrentWritesShareTransactionsAndAllCommit() async throws {
        let store = self.store
        let ids = try await withThrowingTaskGroup(of: Int64.self) { group in
            for index in 0..<300 {
                group.addTask { try await store.createUser(name: "n\(index)", email: "c\(index)@x.io").user.id }
            }
            var ids: [Int64] = []
            for try await id in group { ids.append(id) }
            return ids
        }
        #expect(Set(ids).count == 300)
        let count = try await temporary.database.read { try $0.prepare("SELECT count(*) FROM users").firstInteger() }
        #expect(count == 300)
    }

    @Test func oneFailingWriteInABatchDoesNotUndoTheOthers() async throws {
        let store = self.store
        let results = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<50 {
                // Every other insert reuses one email: exactly one of those may win.
                let email = index.isMultiple(of: 2) ? "same@x.io" : "u\(index)@x.io"
                group.addTask { (try? await store.createUser(name: "n", email: email)) != nil }
            }
            var results: [Bool] = []
            for await result in group { results.append(result) }
            return results
        }
        #expect(results.filter { $0 }.count == 26)
        let count = try await temporary.database.read { try $0.prepare("SELECT count(*) FROM users").firstInteger() }
        #expect(count == 26)
    }

    /// A write that runs alone (no savepoint) and fails is rolled back whole, reports
    /// its own error, and leaves the writer ready for the next one.
    @Test func aLoneFailingWriteIsUndoneAndTheNextCommits() async throws {
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            try await temporary.database.write { connection in
                try connection.prepare(
                    "INSERT INTO outbox (user_id, recipient, subject, body, created_at) VALUES (1, 'r', 's', 'b', 't')"
                ).run()
                throw Refused()
            }
        }
        let written = try await temporary.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(written == 0)
        _ = try await store.createUser(name: "after", email: "after@x.io")
        #expect(try await users(afterID: 0, limit: 10).map(\.email) == ["after@x.io"])
    }

    @Test func readsFromAnAttachedThreadRunInline() async throws {
        _ = try await store.createUser(name: "a", email: "a@x.io")
        // A plain thread with its own reader reads without any hop.
        let database = temporary.database
        let found = await withCheckedContinuation { continuation in
            Thread {
                database.attachReaderToCurrentThread()
                let connection = ThreadReaders.connection(for: database)
                let count = try? connection?.prepare("SELECT count(*) FROM users").firstInteger()
                database.detachReaderFromCurrentThread()
                continuation.resume(returning: count ?? -1)
            }.start()
        }
        #expect(found == 1)
    }

    @Test func writesAfterCloseFailAsUnavailable() async throws {
        temporary.database.close()
        await #expect(throws: StoreError.unavailable("shutting down, try again")) {
            try await store.createUser(name: "late", email: "late@x.io")
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
