public import Basics
internal import CFastCGI
import Dispatch
import Foundation
import Glibc
public import HTTP
public import Lifecycle
public import Metrics
import Synchronization

/// Settings of the FastCGI server.
public struct FastCGIConfiguration: Sendable {
    public var listen: ListenSource
    /// Peers a TCP socket serves (FastCGI has no authentication); others are closed at once.
    public var allowFrom: [AddressRange] = AddressRange.loopback
    /// Largest request body read; a larger one is answered 413 and discarded unread.
    public var maxBodyBytes: Int = 1_048_576
    /// Most connections served at once (one thread each); more wait in the backlog.
    public var maxConnections: Int = 1024
    /// Threads kept waiting for a new connection once theirs closed; beyond that, a
    /// thread whose connection closed exits (one always stays to accept).
    public var idleThreads: Int = 64
    /// A write the web server does not take within this time fails, and the
    /// connection is dropped (`SO_SNDTIMEO`): a client that stops reading a response
    /// the web server does not buffer must not hold a thread for ever.
    public var writeTimeoutSeconds: Double = 30
    /// How the kernel schedules the worker threads (see `ThreadScheduling.batch`).
    public var workerScheduling: ThreadScheduling = .batch

    public init(listen: ListenSource) {
        self.listen = listen
    }
}

/// Called on each worker thread when it starts and before it exits (the app attaches
/// a per-thread read connection there).
public struct WorkerThreadHooks: Sendable {
    public var started: @Sendable () -> Void
    public var stopping: @Sendable () -> Void

    public init(started: @escaping @Sendable () -> Void = {}, stopping: @escaping @Sendable () -> Void = {}) {
        self.started = started
        self.stopping = stopping
    }
}

/// Live figures of the server, for metrics and `STATUS=`.
public struct FastCGIStatistics: Sendable {
    public var threads: Int
    public var busyThreads: Int
    public var connectionsAccepted: Int
}

/// A FastCGI responder server on libfcgi.
///
/// Worker threads accept connections themselves (blocking `accept` on the listening
/// socket: the kernel wakes exactly one) and then loop in `FCGX_Accept_r` on that
/// connection only. When the last idle thread takes a connection it starts another,
/// so some thread is always accepting. libfcgi pins a kept-alive nginx connection to
/// one thread; serving every connection nginx opens with its own thread is what
/// guarantees that no request ever waits behind an idle kept connection. The thread
/// count follows nginx's connection count (in-flight requests + `keepalive` idle per
/// nginx worker), bounded by `maxConnections`.
public final class FastCGIServer: MetricsSource {
    let configuration: FastCGIConfiguration
    let listener: Listener
    let pool: WorkerPool
    private static let initialized: Bool = { FCGX_Init() == 0 }()

    public init(
        configuration: FastCGIConfiguration, responder: any Responder, hooks: WorkerThreadHooks = .init()
    )
        throws(ListenError)
    {
        guard Self.initialized else { throw ListenError(description: "FCGX_Init failed") }
        self.configuration = configuration
        let listener = try Listener(source: configuration.listen, allowFrom: configuration.allowFrom)
        self.listener = listener
        self.pool = WorkerPool(
            listener: listener,
            context: ConnectionContext(
                responder: responder, checksAdmission: responder.checksAdmission,
                maxBodyBytes: configuration.maxBodyBytes,
                writeTimeoutSeconds: configuration.writeTimeoutSeconds, hooks: hooks
            ),
            maxThreads: configuration.maxConnections,
            maxIdleThreads: configuration.idleThreads,
            scheduling: configuration.workerScheduling
        )
    }

    /// Starts the first accepting worker threads.
    public func start() {
        pool.start(threads: 2)
    }

    public var statistics: FastCGIStatistics { pool.statistics }

    /// Worker threads and connections.
    public func render(into text: inout PrometheusText) async {
        let figures = statistics
        text.help(
            "usersd_worker_threads", "FastCGI worker threads (one per web server connection), by state.", type: "gauge")
        text.sample("usersd_worker_threads", ["state": "busy"], Double(figures.busyThreads))
        text.sample("usersd_worker_threads", ["state": "total"], Double(figures.threads))
        text.help("usersd_fastcgi_connections_total", "FastCGI connections accepted.", type: "counter")
        text.sample("usersd_fastcgi_connections_total", [:], Double(figures.connectionsAccepted))
    }

    var listenFd: Int32 { listener.fd }

    /// Stops accepting connections; from here on each response is the last on its
    /// connection. `drain(grace:)` does this too; calling it first lets the caller
    /// announce the drain once it has begun.
    public func beginDraining() {
        pool.beginDraining()
    }

    /// Stops accepting, lets in-flight requests finish within `grace`, closes idle
    /// kept-alive connections, and waits for every worker thread to end. Returns
    /// `false` when requests were still running at the deadline.
    @available(*, noasync, message: "blocks until the server drained")
    public func drain(grace: Double) -> Bool {
        let deadline = DispatchTime.now() + grace
        pool.beginDraining()
        let clean = pool.waitUntilEmpty(deadline: deadline)
        listener.close()
        return clean
    }
}

/// Everything a worker thread needs to serve a connection.
struct ConnectionContext: Sendable {
    let responder: any Responder
    /// `responder.checksAdmission`, asked once.
    let checksAdmission: Bool
    let maxBodyBytes: Int
    let writeTimeoutSeconds: Double
    let hooks: WorkerThreadHooks
}
