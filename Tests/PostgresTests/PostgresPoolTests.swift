import Foundation
import Postgres
import Synchronization
import TestSupport
import Testing

/// `PostgresPool`: at most `size` connections whatever the load, statements waiting
/// for a connection share pipelines, a connection the server ends is replaced (a read
/// on it is sent again), and a database that cannot be reached fails fast.
@Suite struct PostgresPoolTests {
    let uri: String

    init() throws {
        uri = try PostgresCluster.shared().makeDatabase("pool")
    }

    static let sleepy = PreparedStatement("sleepy", "SELECT pg_backend_pid(), pg_sleep(0.02)")
    static let pid = PreparedStatement("pid", "SELECT pg_backend_pid()")

    @Test func neverMoreConnectionsThanItsSize() async throws {
        let pool = PostgresPool(PostgresPool.Settings(uri: uri, size: 3, name: "test-pg"))
        defer { pool.close() }
        let pids = try await withThrowingTaskGroup(of: Int64.self) { group in
            for _ in 0..<60 {
                group.addTask { try await pool.query(Self.sleepy, [], isRead: true) { $0.integer(0, 0) } }
            }
            var pids = Set<Int64>()
            for try await pid in group { pids.insert(pid) }
            return pids
        }
        #expect(pids.count <= 3)
        let statistics = pool.currentStatistics
        #expect(statistics.open <= 3 && statistics.connects <= 3)
        #expect(statistics.statements == 60)
        // 60 statements on 3 connections: waiting ones went out together.
        #expect(statistics.batches < 60)
    }

    @Test func aConnectionTheServerEndsIsReplacedAndTheReadSentAgain() async throws {
        let pool = PostgresPool(PostgresPool.Settings(uri: uri, size: 1, name: "test-pg"))
        defer { pool.close() }
        let first = try await pool.query(Self.pid, [], isRead: true) { $0.integer(0, 0) }
        let admin = try PostgresConnection(uri: uri)
        let terminated = try admin.query(sql: "SELECT pg_terminate_backend($1::int)", [String(first)]) {
            $0.text(0, 0)
        }
        #expect(terminated == "t")
        // The server's goodbye may arrive after the check before the batch: either way the
        // read succeeds, on a new connection.
        let second = try await pool.query(Self.pid, [], isRead: true) { $0.integer(0, 0) }
        #expect(second != first)
        let statistics = pool.currentStatistics
        #expect(statistics.lost == 1 && statistics.connects == 2)
    }

    @Test func aTransactionOnItsOwnConnection() async throws {
        let pool = PostgresPool(PostgresPool.Settings(uri: uri, size: 2, name: "test-pg"))
        defer { pool.close() }
        try await pool.withConnection { try $0.execute("CREATE TABLE counter (n int); INSERT INTO counter VALUES (0)") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await pool.withConnection { connection in
                        try connection.execute("BEGIN")
                        let n = try connection.query(sql: "SELECT n FROM counter FOR UPDATE") { $0.integer(0, 0) }
                        _ = try connection.query(sql: "UPDATE counter SET n = $1", [String(n + 1)]) { $0.affectedRows }
                        try connection.execute("COMMIT")
                    }
                }
            }
            try await group.waitForAll()
        }
        let n = try await pool.query(PreparedStatement("count", "SELECT n FROM counter"), []) { $0.integer(0, 0) }
        #expect(n == 20)
    }

    @Test func anUnreachableDatabaseFailsFastWithAConnectionError() async throws {
        var settings = PostgresPool.Settings(
            uri: "postgresql:///x?host=/nonexistent-usersd-dir&port=5432", size: 2, name: "test-pg")
        settings.reconnectMilliseconds = 60_000
        let pool = PostgresPool(settings)
        defer { pool.close() }
        for _ in 0..<50 {
            await #expect {
                try await pool.query(Self.pid, []) { $0.integer(0, 0) }
            } throws: { error in
                (error as? PostgresError)?.isUnavailable == true
            }
        }
        // One connect attempt (refused at once); the other 49 failed without trying.
        #expect(pool.currentStatistics.connectFailures == 1)
    }

    @Test func closedPoolRefusesWork() async throws {
        let pool = PostgresPool(PostgresPool.Settings(uri: uri, size: 1, name: "test-pg"))
        pool.close()
        await #expect {
            try await pool.query(Self.pid, []) { $0.integer(0, 0) }
        } throws: { error in
            (error as? PostgresError)?.kind == .closed
        }
    }
}
