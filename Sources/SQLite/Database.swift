import Dispatch
import Foundation
import Synchronization

/// How a database is opened.
public struct DatabaseOptions: Sendable {
    public var path: String
    public var busyTimeoutMilliseconds: Int32 = 5000
    /// `NORMAL` survives a crash of the process (the contract: `kill -9` loses no
    /// acknowledged write); `FULL` also survives power loss, at an fsync per commit.
    public var synchronous: String = "NORMAL"

    public init(path: String) {
        self.path = path
    }
}

/// A SQLite database in WAL mode: one writer thread with group commit, one shared
/// reader thread, and optional per-thread reader connections.
///
/// Reads made on a thread that called `attachReaderToCurrentThread()` (the FastCGI
/// workers) run inline on that thread's own read-only connection: no thread hop.
/// Reads from anywhere else go to the shared reader thread. Writes always go to the
/// writer thread. Nothing here ever runs SQLite on the cooperative pool.
public final class Database: Sendable {
    public let options: DatabaseOptions
    private let writer: DatabaseThread
    private let reader: DatabaseThread
    /// Runs the WAL checkpoints' bulk off the writer's thread (see `Checkpointer`).
    private let checkpointer: Checkpointer
    /// Distinguishes this database in per-thread reader slots.
    let serial: Int
    private static let serials = Atomic<Int>(0)
    private let isClosed = Atomic<Bool>(false)
    /// Read connections not attached to a thread, kept so their statement caches
    /// outlive worker threads (nginx churns connections, and with them threads), and
    /// how many read connections exist in all (attached + idle).
    private let readers = Mutex<(idle: [ReaderHandoff], total: Int)>(([], 0))
    /// At most this many worker read connections ever exist. Worker threads follow
    /// nginx's connections (up to `--max-connections`), but only as many reads run at
    /// once as there are cores; a thread that finds the set exhausted reads through
    /// the shared reader thread until a connection comes free. (Never closing them
    /// also matters: SQLite keeps the descriptor of a connection closed while others
    /// hold locks on the file open, so churned connections would pile up descriptors.)
    static let maximumReaders = 64

    /// Opens the database (creating it), switches to WAL and starts its threads.
    public init(options: DatabaseOptions) throws {
        self.options = options
        serial = Self.serials.add(1, ordering: .relaxed).newValue
        let path = options.path
        let timeout = options.busyTimeoutMilliseconds
        let synchronous = options.synchronous
        // Opened first, it is the connection that switches the file to WAL (the
        // writer's switch then finds it done).
        let checkpointer = try Checkpointer {
            let connection = try Connection(path: path, busyTimeoutMilliseconds: timeout)
            try connection.enableWAL(synchronous: synchronous)
            // One read opens its WAL file now rather than at the first pass.
            _ = try connection.prepare("SELECT count(*) FROM sqlite_master").firstInteger()
            return connection
        }
        self.checkpointer = checkpointer
        do {
            writer = try DatabaseThread(name: "usersd-writer", batching: true) {
                let connection = try Connection(path: path, busyTimeoutMilliseconds: timeout)
                try connection.enableWAL(synchronous: synchronous)
                checkpointer.watch(connection)
                return connection
            }
        } catch {
            checkpointer.stop()
            throw error
        }
        do {
            reader = try DatabaseThread(name: "usersd-reader", batching: false) {
                try Connection(path: path, readOnly: true, busyTimeoutMilliseconds: timeout)
            }
        } catch {
            writer.stop()
            checkpointer.stop()
            throw error
        }
    }

    /// Runs `body` in a write transaction shared with other concurrent writers
    /// (group commit). Returns only after the transaction committed; if `body` throws,
    /// only its own changes are rolled back.
    ///
    /// A body that changes the schema (CREATE, DROP, ALTER) says so with
    /// `changesSchema`: its batch then runs every job in a savepoint, since a failure
    /// after such a change is not seen by the cheaper check (`DatabaseThread.runBatch`).
    public func write<T: Sendable>(
        changesSchema: Bool = false, _ body: @escaping @Sendable (Connection) throws -> T
    ) async throws -> T {
        try await submit(to: writer, changesSchema: changesSchema, body)
    }

    /// Runs `body` with a read connection: inline when this thread has its own reader,
    /// otherwise on the shared reader thread. Keep reads short: one page per call.
    public func read<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        if let connection = ThreadReaders.connection(for: self) {
            return try body(connection)
        }
        if ThreadReaders.isWaiting(for: self), let connection = takeReader() {
            ThreadReaders.attach(connection, for: self)
            return try body(connection)
        }
        return try await submit(to: reader, body)
    }

    private func submit<T: Sendable>(
        to thread: DatabaseThread,
        changesSchema: Bool = false,
        _ body: @escaping @Sendable (Connection) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = Mutex<Result<T, any Error>?>(nil)
            let job = DatabaseThread.Job(
                run: { connection in
                    do {
                        let value = try body(connection)
                        outcome.withLock { $0 = .success(value) }
                        return true
                    } catch {
                        outcome.withLock { $0 = .failure(error) }
                        return false
                    }
                },
                complete: { error in
                    if let error {
                        continuation.resume(throwing: error)
                    } else {
                        continuation.resume(with: outcome.withLock { $0 }!)
                    }
                },
                changesSchema: changesSchema
            )
            if !thread.submit(job) {
                continuation.resume(throwing: DatabaseClosedError())
            }
        }
    }

    /// The writer's figures so far.
    public var writeStatistics: WriteStatistics { writer.statistics.withLock { $0 } }

    /// The checkpoints' figures so far.
    public var checkpointStatistics: CheckpointStatistics { checkpointer.statistics.withLock { $0 } }

    /// Gives the calling thread its own read-only connection, used by `read` on it.
    /// Call `detachReaderFromCurrentThread()` on the same thread before it exits.
    /// When all `maximumReaders` are taken, the thread waits for one (it reads through
    /// the shared reader thread meanwhile and takes the next that comes free).
    public func attachReaderToCurrentThread() {
        guard !isClosed.load(ordering: .relaxed) else { return }
        if let connection = takeReader() {
            ThreadReaders.attach(connection, for: self)
        } else {
            ThreadReaders.setWaiting(true, for: self)
        }
    }

    /// An idle read connection, or a new one while fewer than `maximumReaders` exist.
    private func takeReader() -> Connection? {
        enum Take {
            case idle(ReaderHandoff)
            case open, none
        }
        let take: Take = readers.withLock { readers in
            if let handoff = readers.idle.popLast() { return .idle(handoff) }
            guard readers.total < Self.maximumReaders else { return .none }
            readers.total += 1
            return .open
        }
        switch take {
        case .idle(let handoff): return handoff.take()
        case .none: return nil
        case .open:
            if let connection = try? Connection(
                path: options.path, readOnly: true,
                busyTimeoutMilliseconds: options.busyTimeoutMilliseconds)
            {
                return connection
            }
            readers.withLock { $0.total -= 1 }
            return nil
        }
    }

    /// Returns the thread's reader to the idle set (call on the same thread).
    public func detachReaderFromCurrentThread() {
        ThreadReaders.setWaiting(false, for: self)
        guard let connection = ThreadReaders.detach(for: self) else { return }
        guard !isClosed.load(ordering: .relaxed) else { return }
        let handoff = ReaderHandoff(connection)
        readers.withLock { $0.idle.append(handoff) }
    }

    /// Finishes queued work and closes the checkpoint thread, the shared reader and
    /// the writer (the writer last, so its close checkpoints the WAL).
    public func close() {
        guard !isClosed.exchange(true, ordering: .relaxed) else { return }
        ThreadReaders.detach(for: self)
        readers.withLock { $0.idle.removeAll() }
        checkpointer.stop()
        reader.stop()
        writer.stop()
    }
}

/// Thrown for work submitted after `close()`.
public struct DatabaseClosedError: Error, Sendable, CustomStringConvertible {
    public var description: String { "database is closed" }
}

/// Moves a read connection between threads through the idle pool.
///
/// `@unchecked Sendable`: a connection in the pool belongs to no thread. It is put
/// in by the thread that used it last (after its last use) and taken out by exactly
/// one thread under the pool's lock, so it is never used by two threads at once.
final class ReaderHandoff: @unchecked Sendable {
    private var connection: Connection?

    init(_ connection: Connection) {
        self.connection = connection
    }

    func take() -> Connection {
        defer { connection = nil }
        return connection!
    }
}
