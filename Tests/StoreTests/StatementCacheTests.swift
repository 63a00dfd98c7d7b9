import Foundation
import Testing

@testable import SQLite

/// The statement cache hashes only the ends of the SQL text; the whole text decides.
@Suite struct StatementCacheTests {
    @Test func statementsThatDifferOnlyInTheMiddleAreDifferentEntries() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("usersd-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let connection = try Connection(path: directory.appendingPathComponent("cache.sqlite3").path)
        let padding = String(repeating: " ", count: 40)
        let first = "SELECT\(padding)1\(padding)AS value"
        let second = "SELECT\(padding)3\(padding)AS value"
        #expect(first.utf8.count == second.utf8.count && first.prefix(46) == second.prefix(46) && first.suffix(48) == second.suffix(48))
        #expect(StatementKey(sql: first).hashValue == StatementKey(sql: second).hashValue)
        #expect(StatementKey(sql: first) != StatementKey(sql: second))
        #expect(try connection.cached(first).firstInteger() == 1)
        #expect(try connection.cached(second).firstInteger() == 3)
        #expect(try connection.cached(first).firstInteger() == 1)
        // Equal text is one entry: the same statement object comes back.
        #expect(try connection.cached(first) === connection.cached(String(first)))
        // Short statements (under 8 bytes) hash their bytes.
        #expect(StatementKey(sql: "SELECT").hashValue != StatementKey(sql: "PRAGMA").hashValue)
    }
}
