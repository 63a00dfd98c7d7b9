import Basics
public import Metrics
import Synchronization

/// Figures of the WAL checkpoints, for metrics.
public struct CheckpointStatistics: Sendable {
    /// Passes of the checkpoint thread, and the writer's short passes that finish them
    /// (or that it ran alone, past `Checkpointer.writerPages`).
    public var backgroundPasses = 0
    public var writerPasses = 0
    /// The WAL's size in pages after the last commit.
    public var walPages = 0
    /// Time each background pass took (copying frames and two `fdatasync`s).
    public var backgroundSeconds = Histogram()
}

/// Moves the bulk of WAL checkpointing off the writer thread.
///
/// SQLite's default checkpoints inside the COMMIT that takes the WAL past 1000
/// pages ("automatic checkpoint", run by the committing connection): the writer
/// copies every frame into the database file and syncs the WAL and the file while
/// every write queued behind it waits.
///
/// Here the writer's commit hook hands that pass to a thread of its own, which
/// runs it on its own connection (PASSIVE: it waits for nobody) while the writer
/// goes on committing. Frames appended meanwhile keep the WAL from starting over,
/// so once the pass is done the writer runs a second PASSIVE checkpoint itself
/// after its next commit: only those few frames, and two small syncs. Then the next
/// transaction starts the WAL from the beginning again, as SQLite's own does.
/// A checkpoint changes nothing about durability: a commit is durable once its
/// frames are in the WAL.
///
/// Should the WAL still reach `writerPages` (the thread cannot keep up, or readers
/// pin old frames), or the thread have stopped, the writer checkpoints on its own,
/// as SQLite would.
final class Checkpointer: Sendable {
    /// WAL size (pages) that starts a pass: SQLite's own default threshold.
    static let wakePages = 1000
    /// WAL size at which the writer checkpoints without waiting for a pass.
    static let writerPages = 10_000

    /// 0: no pass asked for; 1: a pass is running; 2: a pass is done (or cannot run),
    /// the writer finishes.
    private let phase = Atomic<Int>(0)
    let statistics = Mutex(CheckpointStatistics())
    /// The thread and its connection, opened here (so their descriptors are there from
    /// the start, not at the first pass); each pass is one job on it.
    private let thread: DatabaseThread

    init(open: @escaping @Sendable () throws -> Connection) throws {
        thread = try DatabaseThread(name: "usersd-ckpt", batching: false, open: open)
    }

    /// Installs the commit hook on the writer's connection (call on the writer's thread).
    func watch(_ writer: Connection) {
        writer.onWALCommit { [self] writer, pages in
            statistics.withLock { $0.walPages = pages }
            guard pages >= Self.wakePages else {
                // The WAL started over (the writer's pass): a pass that ended since
                // was for the old one.
                _ = phase.compareExchange(expected: 2, desired: 0, ordering: .relaxed)
                return
            }
            switch phase.load(ordering: .acquiring) {
            case 0:
                phase.store(1, ordering: .relaxed)
                requestPass()
            case 2:
                finish(on: writer)
            default:
                if pages >= Self.writerPages { finish(on: writer) }
            }
        }
    }

    /// Queues a background pass; once the thread has stopped (the database is
    /// closing), the writer does the whole checkpoint, as without this thread.
    private func requestPass() {
        let pass = DatabaseThread.Job(
            run: { [self] connection in
                let start = MonotonicClock.seconds()
                let passed = (try? connection.checkpointPassive()) != nil
                let seconds = MonotonicClock.seconds() - start
                if passed {
                    statistics.withLock {
                        $0.backgroundPasses += 1
                        $0.backgroundSeconds.observe(seconds)
                    }
                }
                return passed
            },
            complete: { [self] _ in phase.store(2, ordering: .releasing) }
        )
        if !thread.submit(pass) { phase.store(2, ordering: .releasing) }
    }

    /// The writer's own pass: what the background pass left, then a fresh start.
    private func finish(on writer: Connection) {
        if (try? writer.checkpointPassive()) != nil {
            statistics.withLock { $0.writerPasses += 1 }
        }
        // A pass still running (the `writerPages` case) sets 2 when it ends; the
        // writer then runs one more short pass, which is harmless.
        _ = phase.compareExchange(expected: 2, desired: 0, ordering: .relaxed)
    }

    /// Ends the thread after the pass it may be running, and closes its connection.
    func stop() {
        thread.stop()
    }
}
