internal import CFastCGI
import Dispatch
import Foundation
import Glibc
public import HTTP
import Lifecycle
import Synchronization

/// Settings of the FastCGI server.
public struct FastCGIConfiguration: Sendable {
    public var listen: ListenSource
    /// Largest request body read; a larger one is answered 413 and discarded unread.
    public var maxBodyBytes: Int = 1_048_576
    /// Most connections served at once (one thread each); more wait in the backlog.
    public var maxConnections: Int = 1024
    /// How long a thread whose connection closed waits for the next one before exiting.
    public var idleThreadSeconds: Double = 30

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
/// One thread accepts connections; each connection gets its own worker thread (reused
/// from a small idle cache) that loops in `FCGX_Accept_r` on that connection only.
/// libfcgi pins a kept-alive nginx connection to one thread, so serving every
/// connection nginx opens with its own thread is what guarantees that no request ever
/// waits behind an idle kept connection; the thread count follows nginx's connection
/// count (in-flight requests + `keepalive` idle per nginx worker), bounded by
/// `maxConnections`.
public final class FastCGIServer: Sendable {
    let configuration: FastCGIConfiguration
    let responder: any Responder
    let hooks: WorkerThreadHooks
    private let listener: Listener
    private let pool: WorkerPool
    private let acceptorDone = DispatchSemaphore(value: 0)
    private static let initialized: Bool = { FCGX_Init() == 0 }()

    public init(configuration: FastCGIConfiguration, responder: any Responder, hooks: WorkerThreadHooks = .init())
        throws(ListenError)
    {
        guard Self.initialized else { throw ListenError(description: "FCGX_Init failed") }
        self.configuration = configuration
        self.responder = responder
        self.hooks = hooks
        self.listener = try Listener(source: configuration.listen)
        self.pool = WorkerPool(maxThreads: configuration.maxConnections, idleSeconds: configuration.idleThreadSeconds)
    }

    /// Starts accepting connections on a dedicated thread.
    public func start() {
        let thread = Thread { [self] in
            acceptLoop()
            acceptorDone.signal()
        }
        thread.name = "usersd-accept"
        thread.start()
    }

    public var statistics: FastCGIStatistics { pool.statistics }

    var listenFd: Int32 { listener.fd }

    private func acceptLoop() {
        let context = ConnectionContext(
            responder: responder,
            maxBodyBytes: configuration.maxBodyBytes,
            hooks: hooks,
            pool: pool
        )
        while true {
            guard pool.waitForCapacity() else { return }
            switch listener.accept() {
            case .connection(let fd):
                pool.serve(fd, context: context)
            case .stopped:
                return
            case .failed(let code):
                Log.acceptFailed(code)
                // Out of descriptors or similar: back off briefly instead of spinning.
                usleep(100_000)
            }
        }
    }

    /// Stops accepting, lets in-flight requests finish within `grace`, closes idle
    /// kept-alive connections, and waits for every worker thread to end. Returns
    /// `false` when requests were still running at the deadline.
    @available(*, noasync, message: "blocks until the server drained")
    public func drain(grace: Double) -> Bool {
        pool.beginDraining()
        listener.wake()
        acceptorDone.wait()
        listener.close()
        return pool.waitUntilEmpty(deadline: DispatchTime.now() + grace)
    }
}

/// Everything a worker thread needs to serve a connection.
struct ConnectionContext: Sendable {
    let responder: any Responder
    let maxBodyBytes: Int
    let hooks: WorkerThreadHooks
    let pool: WorkerPool
}
