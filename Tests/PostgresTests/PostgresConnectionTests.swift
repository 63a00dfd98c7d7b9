import Foundation
import Postgres
import TestSupport
import Testing

/// `PostgresConnection` against a private cluster: values both ways, pipelines whose
/// statements are separate transactions, errors with their SQLSTATE, and a value
/// PostgreSQL cannot store refused before it is sent.
@Suite struct PostgresConnectionTests {
    let uri: String

    init() throws {
        uri = try PostgresCluster.shared().makeDatabase("conn")
    }

    static let echo = PreparedStatement("echo", "SELECT $1::text, $2::bigint, $3::text IS NULL")

    @Test func valuesRoundTripThroughAPreparedStatement() throws {
        let connection = try PostgresConnection(uri: uri)
        for text in ["plain", "ünïcödé ✓ 𝄞", "", "quote ' and \" and \\"] {
            let row = try connection.query(Self.echo, [text, "-9223372036854775808", nil]) { rows in
                (rows.count, rows.text(0, 0), rows.integer(0, 1), rows.integer(0, 2))
            }
            #expect(row.0 == 1)
            #expect(row.1 == text)
            #expect(row.2 == Int64.min)
            #expect(row.3 == 1)
        }
    }

    @Test func aPipelineRunsEachStatementInItsOwnTransaction() throws {
        let connection = try PostgresConnection(uri: uri)
        try connection.execute("CREATE TABLE items (key text PRIMARY KEY)")
        let insert = PreparedStatement("insert_item", "INSERT INTO items (key) VALUES ($1) RETURNING key")
        var outcomes: [String] = []
        connection.pipeline([(insert, ["a"]), (insert, ["a"]), (insert, ["b"]), (Self.echo, ["x", "1", "y"])]) {
            index, result in
            switch result {
            case .success(let rows): outcomes.append("\(index):\(rows.count > 0 ? rows.text(0, 0) : "-")")
            case .failure(let error): outcomes.append("\(index):\(error.sqlState ?? "?")")
            }
        }
        // The duplicate fails alone (unique_violation); the statements after it commit.
        #expect(outcomes == ["0:a", "1:23505", "2:b", "3:x"])
        let keys = try connection.query(sql: "SELECT string_agg(key, ',' ORDER BY key) FROM items") { $0.text(0, 0) }
        #expect(keys == "a,b")
    }

    @Test func aFailedParseFailsOnlyItsStatement() throws {
        let connection = try PostgresConnection(uri: uri)
        let broken = PreparedStatement("broken", "SELEKT 1")
        var states: [String?] = []
        connection.pipeline([(broken, []), (Self.echo, ["ok", "2", nil])]) { _, result in
            switch result {
            case .success(let rows): states.append(rows.text(0, 0))
            case .failure(let error): states.append(error.sqlState)
            }
        }
        #expect(states == ["42601", "ok"])  // syntax_error, then the next statement runs
        #expect(connection.isConnected)
    }

    @Test func textWithNULIsRefusedBeforeItIsSent() throws {
        let connection = try PostgresConnection(uri: uri)
        #expect {
            try connection.query(Self.echo, ["a\u{0}b", "1", nil]) { $0.text(0, 0) }
        } throws: { error in
            (error as? PostgresError)?.sqlState == "22021" && (error as? PostgresError)?.kind == .server
        }
        // The connection is still fine.
        #expect(try connection.query(Self.echo, ["after", "1", nil]) { $0.text(0, 0) } == "after")
    }

    @Test func aRefusedConnectionIsAConnectionError() throws {
        let missing = "postgresql:///nowhere?host=/nonexistent-usersd-dir&port=5432&user=postgres"
        #expect {
            _ = try PostgresConnection(uri: missing)
        } throws: { error in
            guard let error = error as? PostgresError else { return false }
            return error.kind == .connection(wasSent: false) && error.isUnavailable
        }
    }

    @Test func passwordsAreRedacted() {
        #expect(
            ConnectionURI.redacted("postgresql://app:s3cret@db.example:5432/users")
                == "postgresql://app:***@db.example:5432/users")
        #expect(
            ConnectionURI.redacted("postgres://db/users?sslmode=require&password=s3cret&user=app")
                == "postgres://db/users?sslmode=require&password=***&user=app")
        #expect(ConnectionURI.redacted("postgresql://app@db/users") == "postgresql://app@db/users")
        #expect(
            ConnectionURI.redacted("postgresql:///users?host=/run/postgresql")
                == "postgresql:///users?host=/run/postgresql")
        #expect(ConnectionURI.isPostgres("postgres://x") && ConnectionURI.isPostgres("postgresql://x"))
        #expect(!ConnectionURI.isPostgres("./data/users.sqlite3") && !ConnectionURI.isPostgres("postgresql.db"))
    }
}
