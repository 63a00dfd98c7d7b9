public import Metrics
import Postgres
import Store
import Synchronization

/// What running the PostgreSQL database takes besides the store protocols: migrations
/// under an advisory lock, the check, the leases' thread, closing, figures.
extension PostgresStore {
    public func migrate() async throws -> [Int] {
        try await mapErrors { try await pool.withConnection { try PostgresMigrations.migrate($0) } }
    }

    public func pendingMigrations() async throws -> [(version: Int, name: String)] {
        let applied = try await mapErrors {
            try await pool.withConnection { try PostgresMigrations.appliedVersions($0) }
        }
        return PostgresMigrations.all.filter { !applied.contains($0.version) }.map { ($0.version, $0.name) }
    }

    /// What usersd can check from a client: the server answers, the tables exist, and
    /// every task count slot is there. (Page-level checks are the server's: `amcheck`.)
    public func integrityCheck() async throws -> String {
        try await mapErrors {
            try await pool.withConnection { connection in
                let applied = try PostgresMigrations.appliedVersions(connection)
                guard !applied.isEmpty else { return "no usersd schema (run usersd migrate)" }
                let slots = try connection.query(sql: "SELECT count(*) FROM task_counts") { $0.integer(0, 0) }
                return slots == Int64(3 * TaskCountSlots.count) ? "ok" : "task_counts has \(slots) rows"
            }
        }
    }

    /// Requests reach the pool's threads; FastCGI threads keep no connection.
    public func workerThreadStarted() {}
    public func workerThreadStopping() {}

    public func close() {
        leases.stop()
        pool.close()
    }

    public func startLeases(wake: @escaping @Sendable () -> Void, cancel: @escaping @Sendable (Int64) -> Void) {
        leases.start(claims: { [self] in claims.withLock { $0 } }, wake: wake, cancel: cancel)
    }

    public func stopLeases() {
        leases.stop()
    }

    /// The pool and the leases.
    public func render(into text: inout PrometheusText) async {
        let pool = self.pool.currentStatistics
        text.help("usersd_db_pool_connections", "Connections to PostgreSQL (--db-pool), by state.", type: "gauge")
        text.sample("usersd_db_pool_connections", ["state": "limit"], Double(pool.size))
        text.sample("usersd_db_pool_connections", ["state": "open"], Double(pool.open))
        text.sample("usersd_db_pool_connections", ["state": "busy"], Double(pool.busy))
        text.help("usersd_db_statements_total", "Statements sent to PostgreSQL.", type: "counter")
        text.sample("usersd_db_statements_total", [:], Double(pool.statements))
        text.help("usersd_db_statement_failures_total", "Statements that failed.", type: "counter")
        text.sample("usersd_db_statement_failures_total", [:], Double(pool.failures))
        text.help("usersd_db_pipeline_statements", "Statements per round trip (pipeline).", type: "histogram")
        text.histogram("usersd_db_pipeline_statements", [:], pool.batchSizes)
        text.help("usersd_db_connects_total", "Connections made, and attempts that failed.", type: "counter")
        text.sample("usersd_db_connects_total", ["outcome": "ok"], Double(pool.connects))
        text.sample("usersd_db_connects_total", ["outcome": "failed"], Double(pool.connectFailures))
        text.help(
            "usersd_db_connections_lost_total", "Connections found closed by the server or lost.", type: "counter")
        text.sample("usersd_db_connections_lost_total", [:], Double(pool.lost))
        text.help("usersd_db_retries_total", "Statements sent again after a lost connection.", type: "counter")
        text.sample("usersd_db_retries_total", [:], Double(pool.retries))

        text.help("usersd_task_leases_held", "Running tasks this host holds a lease on.", type: "gauge")
        text.sample("usersd_task_leases_held", [:], Double(claims.withLock { $0.count }))
        text.help("usersd_task_lease_heartbeats_total", "Heartbeats that extended this host's leases.", type: "counter")
        text.sample("usersd_task_lease_heartbeats_total", [:], Double(leases.heartbeats.load(ordering: .relaxed)))
        text.help(
            "usersd_task_lease_rounds_failed_total", "Heartbeat or poll rounds that could not reach the database.",
            type: "counter")
        text.sample("usersd_task_lease_rounds_failed_total", [:], Double(leases.failedRounds.load(ordering: .relaxed)))
        text.help(
            "usersd_task_leases_reaped_total", "Tasks this host re-queued because their lease expired.", type: "counter"
        )
        text.sample("usersd_task_leases_reaped_total", [:], Double(leases.reaped.load(ordering: .relaxed)))
        text.help(
            "usersd_task_leases_lost_total", "Leases of this host that another host's reaper took.", type: "counter")
        text.sample("usersd_task_leases_lost_total", [:], Double(leases.lost.load(ordering: .relaxed)))
        text.help(
            "usersd_task_moves_fenced_total", "Moves of a task refused because this host no longer held its attempt.",
            type: "counter")
        text.sample("usersd_task_moves_fenced_total", [:], Double(leases.fencedOut.load(ordering: .relaxed)))
        text.help(
            "usersd_task_cancels_relayed_total", "Cancels asked through any host and handed to this host's scheduler.",
            type: "counter")
        text.sample("usersd_task_cancels_relayed_total", [:], Double(leases.cancelsRelayed.load(ordering: .relaxed)))
    }
}
