import Foundation
import TestSupport
import Testing

@testable import SQLite

/// The statement cache hashes only the ends of the SQL text; the whole text decides.
@Suite struct StatementCacheTests {
    @Test func statementsThatDifferOnlyInTheMiddleAreDifferentEntries() throws {
        let temporary = try TemporaryDatabase()
        let connection = try Connection(path: temporary.directory.appendingPathComponent("cache.sqlite3").path)
        let padding = String(repeating: " ", count: 40)
        let first = "SELECT\(padding)1\(padding)AS value"
        let second = "SELECT\(padding)3\(padding)AS value"
        #expect(
            first.utf8.count == second.utf8.count && first.prefix(46) == second.prefix(46)
                && first.suffix(48) == second.suffix(48))
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

/// Text is bound from the string's own bytes, with its length.
@Suite struct TextBindingTests {
    @Test func emptyUnicodeAndNULTextRoundTrip() throws {
        let temporary = try TemporaryDatabase()
        let connection = try Connection(path: temporary.directory.appendingPathComponent("bind.sqlite3").path)
        let long = String(repeating: "Zoë ✓ ", count: 200)
        for text in ["", "a", "exactly15bytes!", "Zoë \"Z\" ✓ שלום 😀", long, "nul\u{0}inside"] {
            let statement = try connection.prepare("SELECT ?1 IS NULL, typeof(?1), length(CAST(?1 AS BLOB)), ?1")
            try statement.bind([.text(text)])
            #expect(try statement.step())
            #expect(statement.integer(0) == 0)  // never NULL, even when empty
            #expect(statement.text(1) == "text")
            #expect(statement.integer(2) == Int64(text.utf8.count))  // every byte, a NUL included
            #expect(statement.text(3) == text)
        }
    }
}
