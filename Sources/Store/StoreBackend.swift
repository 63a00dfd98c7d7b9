public import Metrics

/// A database holding users, tasks and the outbox, as the process runs it: the store
/// protocols plus what opening, upgrading, checking and closing it take. The process's
/// wiring names a backend once, where it opens one; everything else sees protocols.
///
/// A backend renders its own figures (`MetricsSource`) for `GET /metrics`.
public protocol StoreBackend: UserStore, TaskStore, WelcomeOutbox, MetricsSource {
    /// Applies every migration not yet applied; returns the versions applied. Safe to
    /// call from several processes at once (the backend serialises them).
    func migrate() async throws -> [Int]
    /// Migrations the database has not applied yet, as `(version, name)`.
    func pendingMigrations() async throws -> [(version: Int, name: String)]
    /// The database's own consistency check: `"ok"`, or what it found.
    func integrityCheck() async throws -> String
    /// Called on each FastCGI worker thread when it starts, and before it exits: a
    /// backend may keep per-thread connections for reads.
    func workerThreadStarted()
    func workerThreadStopping()
    /// Finishes queued work and closes the connections.
    func close()
}
