import Basics
import Dispatch
import Lifecycle
import Logging
public import Metrics
import Synchronization

/// A bounded set of PostgreSQL connections, each owned by a dedicated OS thread.
///
/// libpq calls block, so they never run on Swift's cooperative pool (2 threads on a
/// 2-core machine): callers suspend on a continuation while a connection thread does
/// the work, as the SQLite threads do. `size` connections at most exist, whatever the
/// number of requests: the bound an operator sets against the server's
/// `max_connections` (`--db-pool`).
///
/// A thread that wakes up takes every statement waiting (up to `maximumPipeline`)
/// and sends them in one pipeline (`PostgresConnection.pipeline`): under load, many
/// requests share one round trip. Each statement is its own transaction, so one
/// failing changes nothing for the others.
///
/// Connections are checked before each batch and replaced when the server closed
/// them (a restart, a failover, an administrator); while no connection can be made,
/// work fails at once with a connection error (the service answers 503) and a new
/// attempt is made at most every `reconnectMilliseconds`, so the service is back
/// within that time of the database.
public final class PostgresPool: Sendable {
    public struct Settings: Sendable {
        /// Handed to libpq unchanged (never logged: see `ConnectionURI.redacted`).
        public var uri: String
        public var size: Int
        /// Thread names: `<name>-1`, `<name>-2`, ...
        public var name: String
        public var maximumPipeline = 32
        public var reconnectMilliseconds: Int64 = 100
        public var defaults: [(String, String)] = PostgresConnection.defaults

        public init(uri: String, size: Int, name: String = "usersd-pg") {
            self.uri = uri
            self.size = size
            self.name = name
        }
    }

    /// One piece of work for a connection thread.
    struct Job: Sendable {
        enum Work: Sendable {
            /// Prepared statements run as one transaction, which may share a pipeline with
            /// others; `deliver` gets the last one's rows. `isRead`: they change nothing,
            /// so they may be sent again after a lost connection.
            case statements(
                [(PreparedStatement, [String?])], isRead: Bool,
                deliver: @Sendable (Result<PostgresRows, PostgresError>) -> Void)
            /// Exclusive use of a connection (transactions over several round trips).
            case session(@Sendable (Result<PostgresConnection, PostgresError>) -> Void)
        }

        let work: Work
        /// Times it was sent again after a lost connection.
        var retries = 0
    }

    private struct State {
        var jobs: [Job] = []
        var head = 0
        var isStopping = false
        /// When the last connection attempt failed (monotonic ns), and why.
        var lastFailure: (at: UInt64, error: PostgresError)?
        var isDown = false
    }

    public let settings: Settings
    private let state = SleepingMutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    let statistics = SleepingMutex(PoolStatistics())

    /// Starts the threads; connections are made on first use.
    public init(_ settings: Settings) {
        self.settings = settings
        statistics.withLock { $0.size = settings.size }
        for index in 1...max(1, settings.size) {
            NamedThread.start("\(settings.name)-\(index)") { [self] in
                var thread = ConnectionThread(pool: self)
                thread.run()
                finished.signal()
            }
        }
    }

    /// The figures so far.
    public var currentStatistics: PoolStatistics { statistics.withLock { $0 } }

    /// Runs a prepared statement and returns what `decode` makes of its rows (on the
    /// connection thread, while the rows exist). Reads (`isRead`) are sent again once
    /// when the connection was lost under them; any statement is when it never left.
    public func query<T: Sendable>(
        _ statement: PreparedStatement, _ parameters: [String?], isRead: Bool = false,
        _ decode: @escaping @Sendable (PostgresRows) throws -> T
    ) async throws -> T {
        try await transaction([(statement, parameters)], isRead: isRead, decode)
    }

    /// Runs prepared statements as one transaction in one round trip (no sync point
    /// between them: libpq's pipeline mode makes them one implicit transaction), and
    /// returns what `decode` makes of the last one's rows. Any failing rolls all back.
    public func transaction<T: Sendable>(
        _ statements: [(PreparedStatement, [String?])], isRead: Bool = false,
        _ decode: @escaping @Sendable (PostgresRows) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let job = Job(
                work: .statements(
                    statements, isRead: isRead,
                    deliver: { result in
                        continuation.resume(with: Result { try decode(try result.get()) })
                    }))
            if !submit(job) { continuation.resume(throwing: PostgresError(.closed, "database pool is closed")) }
        }
    }

    /// Runs `body` with a connection of its own until it returns (a transaction of
    /// several statements, `BEGIN` to `COMMIT`); it must leave no transaction open.
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let job = Job(
                work: .session { connection in
                    continuation.resume(with: Result { try body(try connection.get()) })
                })
            if !submit(job) { continuation.resume(throwing: PostgresError(.closed, "database pool is closed")) }
        }
    }

    private func submit(_ job: Job) -> Bool {
        let accepted = state.withLock { state in
            guard !state.isStopping else { return false }
            state.jobs.append(job)
            return true
        }
        if accepted { wakeup.signal() }
        return accepted
    }

    /// Runs the work already queued, closes the connections and ends the threads.
    public func close() {
        let alreadyStopping = state.withLock { state in
            defer { state.isStopping = true }
            return state.isStopping
        }
        guard !alreadyStopping else { return }
        for _ in 0..<max(1, settings.size) { wakeup.signal() }
        for _ in 0..<max(1, settings.size) { finished.wait() }
    }

    // MARK: - For the connection threads

    /// Waits for work: a session job alone, or up to `maximumPipeline` statements.
    /// `nil` once the pool is stopping and nothing is left.
    fileprivate func nextBatch() -> [Job]? {
        while true {
            wakeup.wait()
            let (batch, stopping) = state.withLock { state -> ([Job], Bool) in
                var batch: [Job] = []
                while state.head < state.jobs.count, batch.count < settings.maximumPipeline {
                    let job = state.jobs[state.head]
                    if case .session = job.work, !batch.isEmpty { break }
                    batch.append(job)
                    state.head += 1
                    if case .session = job.work { break }
                }
                if state.head == state.jobs.count {
                    state.jobs.removeAll(keepingCapacity: true)
                    state.head = 0
                } else if state.head > 1024 {
                    state.jobs.removeFirst(state.head)
                    state.head = 0
                }
                if state.isStopping && state.head < state.jobs.count {
                    // More is waiting than this batch: make sure a thread comes back for it.
                    wakeup.signal()
                }
                return (batch, state.isStopping)
            }
            if !batch.isEmpty { return batch }
            if stopping {
                wakeup.signal()  // the next thread sees the stop too
                return nil
            }
        }
    }

    /// Puts jobs back at the front of the queue (statements to send again).
    fileprivate func requeue(_ jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        state.withLock { state in
            state.jobs.insert(contentsOf: jobs, at: state.head)
        }
        wakeup.signal()
    }

    /// A new connection, unless an attempt failed less than `reconnectMilliseconds` ago
    /// (then that attempt's error, at once: while the database is down, requests fail
    /// fast instead of each waiting for a connect).
    fileprivate func connect() -> Result<PostgresConnection, PostgresError> {
        let now = MonotonicClock.nanoseconds()
        let recent = state.withLock { state -> PostgresError? in
            guard let failure = state.lastFailure,
                now &- failure.at < UInt64(settings.reconnectMilliseconds) * 1_000_000
            else { return nil }
            return failure.error
        }
        if let recent { return .failure(recent) }
        do {
            let connection = try PostgresConnection(uri: settings.uri, defaults: settings.defaults)
            let wasDown = state.withLock { state in
                defer {
                    state.isDown = false
                    state.lastFailure = nil
                }
                return state.isDown
            }
            statistics.withLock { $0.connects += 1 }
            if wasDown { Log.warning("database reachable again", ["db": ConnectionURI.redacted(settings.uri)]) }
            return .success(connection)
        } catch {
            let wasDown = state.withLock { state in
                defer {
                    state.isDown = true
                    state.lastFailure = (MonotonicClock.nanoseconds(), error)
                }
                return state.isDown
            }
            statistics.withLock { $0.connectFailures += 1 }
            if !wasDown {
                Log.error(
                    "database unreachable",
                    ["db": ConnectionURI.redacted(settings.uri), "error": error.message])
            }
            return .failure(error)
        }
    }

    fileprivate func connectionLost(_ error: PostgresError?) {
        statistics.withLock { $0.lost += 1 }
        Log.warning(
            "database connection lost; reconnecting",
            ["db": ConnectionURI.redacted(settings.uri), "error": error?.message ?? "closed by the server"])
    }
}

/// The figures of a pool, for metrics.
public struct PoolStatistics: Sendable {
    public var size = 0
    /// Connections open now, and threads running work now.
    public var open = 0
    public var busy = 0
    /// Statements run, batches they went in, and statements that failed.
    public var statements = 0
    public var batches = 0
    public var failures = 0
    public var sessions = 0
    /// Connections made, attempts that failed, connections found lost.
    public var connects = 0
    public var connectFailures = 0
    public var lost = 0
    /// Statements sent again after a lost connection.
    public var retries = 0
    public var batchSizes = Histogram(bounds: [1, 2, 4, 8, 16, 32, 64])
}

/// The loop of one connection thread: owns its connection, which no other thread sees.
private struct ConnectionThread {
    let pool: PostgresPool
    var connection: PostgresConnection?

    init(pool: PostgresPool) {
        self.pool = pool
    }

    mutating func run() {
        while let batch = pool.nextBatch() {
            pool.statistics.withLock { $0.busy += 1 }
            run(batch)
            pool.statistics.withLock { $0.busy -= 1 }
        }
        if connection != nil {
            connection = nil
            pool.statistics.withLock { $0.open -= 1 }
        }
    }

    /// The connection, checked after its idle time; a new one when it was lost.
    private mutating func usableConnection() -> Result<PostgresConnection, PostgresError> {
        if let connection {
            if connection.isUsableAfterIdle() { return .success(connection) }
            drop(nil)
        }
        let result = pool.connect()
        if case .success(let connection) = result {
            self.connection = connection
            pool.statistics.withLock { $0.open += 1 }
        }
        return result
    }

    private mutating func drop(_ error: PostgresError?) {
        guard connection != nil else { return }
        connection = nil
        pool.statistics.withLock { $0.open -= 1 }
        pool.connectionLost(error)
    }

    private mutating func run(_ batch: [PostgresPool.Job]) {
        let connection: PostgresConnection
        switch usableConnection() {
        case .success(let open): connection = open
        case .failure(let error):
            for job in batch { fail(job, error) }
            return
        }
        if case .session(let body) = batch[0].work {
            pool.statistics.withLock { $0.sessions += 1 }
            body(.success(connection))
            if !connection.isConnected { drop(nil) }
            return
        }
        var transactions: [[(PreparedStatement, [String?])]] = []
        transactions.reserveCapacity(batch.count)
        for job in batch {
            if case .statements(let statements, _, _) = job.work { transactions.append(statements) }
        }
        pool.statistics.withLock { statistics in
            statistics.batches += 1
            statistics.batchSizes.observe(Double(batch.count))
        }
        var again: [PostgresPool.Job] = []
        var lostError: PostgresError?
        let pool = self.pool
        connection.pipeline(transactions) { index, result in
            var job = batch[index]
            guard case .statements(_, let isRead, let deliver) = job.work else { return }
            var failed = false
            if case .failure(let error) = result {
                if case .connection(let wasSent) = error.kind {
                    lostError = error
                    if job.retries == 0 && (!wasSent || isRead) {
                        job.retries += 1
                        again.append(job)
                        pool.statistics.withLock { $0.retries += 1 }
                        return
                    }
                }
                failed = true
            }
            // Counted before the caller resumes: figures read after an answer include it.
            pool.statistics.withLock { statistics in
                statistics.statements += 1
                if failed { statistics.failures += 1 }
            }
            deliver(result)
        }
        if !connection.isConnected { drop(lostError) }
        pool.requeue(again)
    }

    private func fail(_ job: PostgresPool.Job, _ error: PostgresError) {
        switch job.work {
        case .statements(_, _, let deliver): deliver(.failure(error))
        case .session(let body): body(.failure(error))
        }
        pool.statistics.withLock { $0.failures += 1 }
    }
}
