import Basics
import Dispatch
import Foundation
import Glibc
import Lifecycle
public import Metrics
import Synchronization

/// Figures of the writer thread, for metrics.
public struct WriteStatistics: Sendable {
    /// Transactions committed (or failed) and the jobs they carried.
    public var batches = 0
    public var jobs = 0
    public var failedBatches = 0
    /// Time from BEGIN IMMEDIATE to the end of COMMIT.
    public var transactionSeconds = Histogram()
}

/// A dedicated OS thread that owns one `Connection` and runs jobs on it in order.
///
/// SQLite calls block, so they never run on Swift's cooperative pool (2 threads on a
/// 2-core box): callers suspend on a continuation while this thread does the work.
/// With `batching`, every job that is waiting when the thread wakes runs inside one
/// `BEGIN IMMEDIATE ... COMMIT` (group commit), where one failing job does not undo
/// the others (see `runBatch`); nobody is resumed before the commit.
final class DatabaseThread: Sendable {
    struct Job: Sendable {
        /// Runs the body on the thread; returns `false` when the body threw (what it
        /// changed is then undone). May run twice in one batch (see `runBatch`).
        let run: @Sendable (Connection) -> Bool
        /// Resumes the caller: with the body's outcome, or with `error` when the
        /// surrounding transaction could not begin or commit.
        let complete: @Sendable (_ error: (any Error)?) -> Void
        /// The body may run CREATE, DROP or ALTER, which `totalChanges` does not count:
        /// its batch runs every job in a savepoint from the start.
        var changesSchema = false
    }

    private struct State {
        var jobs: [Job] = []
        var isStopping = false
    }

    private let state = Mutex(State())
    let statistics = Mutex(WriteStatistics())
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let batching: Bool
    static let maximumBatch = 512

    /// Starts the thread; `open` creates the connection on it.
    init(name: String, batching: Bool, open: @escaping @Sendable () throws -> Connection) throws {
        self.batching = batching
        let opened = Mutex<Result<Void, any Error>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        NamedThread.start(name) { [self] in
            let connection: Connection
            do {
                connection = try open()
                opened.withLock { $0 = .success(()) }
                ready.signal()
            } catch {
                opened.withLock { $0 = .failure(error) }
                ready.signal()
                finished.signal()
                return
            }
            loop(connection: connection)
            finished.signal()
        }
        ready.wait()
        if case .failure(let error) = opened.withLock({ $0! }) { throw error }
    }

    /// Queues a job; `false` once the thread is stopping.
    func submit(_ job: Job) -> Bool {
        let accepted = state.withLock { state in
            guard !state.isStopping else { return false }
            state.jobs.append(job)
            return true
        }
        if accepted { wakeup.signal() }
        return accepted
    }

    /// Runs the jobs already queued, closes the connection and ends the thread.
    func stop() {
        let alreadyStopping = state.withLock { state in
            defer { state.isStopping = true }
            return state.isStopping
        }
        guard !alreadyStopping else { return }
        wakeup.signal()
        finished.wait()
    }

    private func loop(connection: Connection) {
        while true {
            wakeup.wait()
            while true {
                let (jobs, stopping) = state.withLock { state -> ([Job], Bool) in
                    let count = batching ? min(state.jobs.count, Self.maximumBatch) : min(state.jobs.count, 1)
                    let taken = Array(state.jobs.prefix(count))
                    state.jobs.removeFirst(count)
                    return (taken, state.isStopping)
                }
                if jobs.isEmpty {
                    if stopping { return }
                    break
                }
                if batching {
                    let start = MonotonicClock.seconds()
                    let committed = Self.runBatch(jobs, on: connection)
                    let seconds = MonotonicClock.seconds() - start
                    statistics.withLock { statistics in
                        statistics.batches += 1
                        statistics.jobs += jobs.count
                        if !committed { statistics.failedBatches += 1 }
                        statistics.transactionSeconds.observe(seconds)
                    }
                } else {
                    for job in jobs {
                        _ = job.run(connection)
                        job.complete(nil)
                    }
                }
            }
        }
    }

    /// Runs the jobs in one transaction; `false` when it could not commit.
    ///
    /// A failing job must not undo the others. The jobs first run one after another
    /// with nothing around them: a job that fails before it has changed a row (a
    /// duplicate email fails at its only INSERT, which SQLite undoes by itself) is
    /// simply dropped. Only when a job fails after changing rows does the whole
    /// transaction roll back and the jobs run again, each in a savepoint that is
    /// rolled back if it fails. A savepoint for every job would cost SQLite a copy of
    /// each page the job touches plus two statements, for a case that almost never
    /// happens.
    /// (A job may therefore run twice; jobs change nothing but the database and their
    /// own outcome, or only what tolerates a repeat, such as noting a task id.)
    /// SQLite does not count schema changes as changed rows, so a batch with a job that
    /// `changesSchema` (a migration) uses savepoints from the start.
    ///
    /// The transaction statements are prepared once (from the connection's cache):
    /// `sqlite3_exec` would parse them again for every batch. A batch of one job needs
    /// no savepoint: when that job fails, rolling back the transaction undoes exactly it.
    /// The sums the jobs deferred (`CommitTally`) are written just before COMMIT.
    static func runBatch(_ jobs: [Job], on connection: Connection) -> Bool {
        guard begin(jobs, on: connection) else { return false }
        if jobs.count == 1 {
            guard jobs[0].run(connection) else {
                try? connection.execute("ROLLBACK")
                connection.endBatch()
                jobs[0].complete(nil)  // delivers the job's own error
                return true
            }
            connection.endJob(succeeded: true)
        } else if jobs.contains(where: \.changesSchema) {
            guard runInSavepoints(jobs, on: connection) else { return false }
        } else if !runWithoutSavepoints(jobs, on: connection) {
            if connection.isInTransaction { try? connection.execute("ROLLBACK") }
            connection.endBatch()
            guard begin(jobs, on: connection) else { return false }
            guard runInSavepoints(jobs, on: connection) else { return false }
        }
        defer { connection.endBatch() }
        do {
            try connection.writeTallies()
            try connection.cached("COMMIT").run()
            for job in jobs { job.complete(nil) }
            return true
        } catch {
            try? connection.execute("ROLLBACK")
            for job in jobs { job.complete(error) }
            return false
        }
    }

    /// BEGIN IMMEDIATE and the start of the batch's tallies; on failure (the write lock
    /// could not be taken: busy beyond the timeout, read-only file, disk) every job
    /// fails with that error without running.
    private static func begin(_ jobs: [Job], on connection: Connection) -> Bool {
        do {
            try connection.cached("BEGIN IMMEDIATE").run()
        } catch {
            for job in jobs { job.complete(error) }
            return false
        }
        connection.beginBatch()
        return true
    }

    /// Runs the jobs in the open transaction; `false` as soon as one fails after it
    /// changed rows, or takes the transaction with it (the caller then starts over).
    private static func runWithoutSavepoints(_ jobs: [Job], on connection: Connection) -> Bool {
        for job in jobs {
            let changesBefore = connection.totalChanges
            if job.run(connection) {
                connection.endJob(succeeded: true)
            } else if connection.totalChanges == changesBefore && connection.isInTransaction {
                connection.endJob(succeeded: false)
            } else {
                return false
            }
        }
        return true
    }

    /// Runs the jobs in the open transaction, each in its own savepoint; on `false` the
    /// transaction is rolled back and every job has been completed with the error.
    private static func runInSavepoints(_ jobs: [Job], on connection: Connection) -> Bool {
        for job in jobs {
            do {
                try connection.cached("SAVEPOINT job").run()
                if job.run(connection) {
                    try connection.cached("RELEASE job").run()
                    connection.endJob(succeeded: true)
                } else {
                    connection.endJob(succeeded: false)
                    try connection.execute("ROLLBACK TO job; RELEASE job")
                }
            } catch {
                // A savepoint statement failed: the transaction is unusable.
                try? connection.execute("ROLLBACK")
                connection.endBatch()
                for job in jobs { job.complete(error) }
                return false
            }
        }
        return true
    }
}
