import FastCGI
import HTTP
import Lifecycle
import Logging
import Metrics
import Scheduler
import Store
import Synchronization

/// The database: migrated when the process starts, closed last when it stops.
struct StoreService: Service {
    let backend: any StoreBackend
    var name: String { "database" }

    func start() throws {
        let backend = self.backend
        let applied = try blockingWait { try await backend.migrate() }
        if !applied.isEmpty {
            Log.info("migrations applied", ["versions": applied.map(String.init).joined(separator: ",")])
        }
    }

    func stop() {
        backend.close()
    }
}

/// The task scheduler: recovers interrupted tasks and starts claiming; on stop, lets
/// running tasks finish within `graceMilliseconds`, then re-queues the rest.
struct SchedulerService: Service {
    let scheduler: TaskScheduler
    let graceMilliseconds: Int64
    var name: String { "task scheduler" }

    func start() throws {
        let scheduler = self.scheduler
        try blockingWait { try await scheduler.start() }
    }

    func stop() {
        let (scheduler, grace) = (self.scheduler, graceMilliseconds)
        _ = try? blockingWait { await scheduler.shutdown(graceMilliseconds: grace) }
    }
}

/// The FastCGI server: listens and serves once started; on stop, finishes in-flight
/// requests within `graceSeconds` and closes its connections.
final class FastCGIService: Service {
    let configuration: FastCGIConfiguration
    let responder: any Responder
    let hooks: WorkerThreadHooks
    let graceSeconds: Double
    /// Where the running server adds its own figures.
    let metrics: MetricsRegistry
    private let running = Mutex<FastCGIServer?>(nil)
    var name: String { "FastCGI server" }

    init(
        configuration: FastCGIConfiguration, responder: any Responder, hooks: WorkerThreadHooks, graceSeconds: Double,
        metrics: MetricsRegistry
    ) {
        self.configuration = configuration
        self.responder = responder
        self.hooks = hooks
        self.graceSeconds = graceSeconds
        self.metrics = metrics
    }

    /// The server, once started.
    var server: FastCGIServer? { running.withLock { $0 } }

    func start() throws {
        let server = try FastCGIServer(configuration: configuration, responder: responder, hooks: hooks)
        server.start()
        metrics.add(server)
        running.withLock { $0 = server }
    }

    /// Stops accepting: every response from now on is its connection's last.
    func beginDraining() {
        server?.beginDraining()
    }

    func stop() {
        guard let server else { return }
        if !server.drain(grace: graceSeconds) {
            Log.warning("requests still running after the grace period; exiting anyway")
        }
    }
}
