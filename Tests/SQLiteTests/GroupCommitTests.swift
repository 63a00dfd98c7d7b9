import Foundation
import Synchronization
import TestSupport
import Testing

@testable import SQLite

/// How a group commit keeps one failing job from undoing the others without a
/// savepoint per job (`DatabaseThread.runBatch`): a job that fails before changing a
/// row is just dropped; one that fails after changing rows makes the batch start over
/// with savepoints. Batches are run directly, so which jobs share a transaction is
/// decided by the test, not by timing.
@Suite struct GroupCommitTests {
    struct Planned: Error {}

    /// What the jobs of one test did, from any thread: the result of each run of a
    /// job's body, and each completion (whether the batch reported an error).
    final class Trace: Sendable {
        private let state = Mutex<(runs: [String: [Bool]], completions: [String: [Bool]])>(([:], [:]))
        func ran(_ name: String, _ succeeded: Bool) { state.withLock { $0.runs[name, default: []].append(succeeded) } }
        func completed(_ name: String, _ ok: Bool) { state.withLock { $0.completions[name, default: []].append(ok) } }
        func runs(_ name: String) -> [Bool] { state.withLock { $0.runs[name] ?? [] } }
        func completions(_ name: String) -> [Bool] { state.withLock { $0.completions[name] ?? [] } }
    }

    let temporary: TemporaryDatabase
    let connection: Connection
    let trace = Trace()

    init() throws {
        temporary = try TemporaryDatabase()
        connection = try Connection(path: temporary.directory.appendingPathComponent("group.sqlite3").path)
        try connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    }

    func names() throws -> [String] {
        var names: [String] = []
        try connection.prepare("SELECT name FROM rows ORDER BY id").forEachRow { names.append($0.text(0)) }
        return names
    }

    /// A job that runs `body` and records each run and its completion under `name`.
    func job(
        _ name: String, changesSchema: Bool = false, _ body: @escaping @Sendable (Connection) throws -> Void
    ) -> DatabaseThread.Job {
        let trace = trace
        return DatabaseThread.Job(
            run: { connection in
                do {
                    try body(connection)
                    trace.ran(name, true)
                    return true
                } catch {
                    trace.ran(name, false)
                    return false
                }
            },
            complete: { error in trace.completed(name, error == nil) },
            changesSchema: changesSchema
        )
    }

    func insert(_ name: String) -> @Sendable (Connection) throws -> Void {
        { try $0.prepare("INSERT INTO rows (name) VALUES (?)").bind([.text(name)]).run() }
    }

    /// The usual failure (a duplicate email): the statement fails and SQLite undoes it,
    /// so nothing of the job is left and no job runs twice.
    @Test func aJobThatFailsAtItsFirstWriteIsDroppedWithoutARerun() throws {
        let jobs = [
            job("a", insert("a")),
            job("duplicate", insert("a")),
            job("b", insert("b")),
        ]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(try names() == ["a", "b"])
        #expect(trace.runs("a") == [true] && trace.runs("duplicate") == [false] && trace.runs("b") == [true])
        // Completed once each, with no batch error (the duplicate's own error is its outcome).
        for name in ["a", "duplicate", "b"] { #expect(trace.completions(name) == [true]) }
        #expect(!connection.isInTransaction && !connection.isRunningBatch)
    }

    /// A job that changed rows and then failed: the batch rolls back and runs again
    /// with a savepoint per job, so exactly that job's rows are gone.
    @Test func aJobThatFailsAfterChangingRowsIsUndoneAlone() throws {
        let jobs = [
            job("a", insert("a")),
            job("half") { connection in
                try connection.prepare("INSERT INTO rows (name) VALUES ('half')").run()
                throw Planned()
            },
            job("b", insert("b")),
        ]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(try names() == ["a", "b"])
        // a and half ran before the failure and again after it; b only in the second pass.
        #expect(trace.runs("a") == [true, true] && trace.runs("half") == [false, false] && trace.runs("b") == [true])
        // Each job is completed once, after the commit.
        for name in ["a", "half", "b"] { #expect(trace.completions(name) == [true]) }
        #expect(!connection.isInTransaction && !connection.isRunningBatch)
    }

    /// SQLite ends the transaction by itself after some errors (disk full, I/O): the
    /// batch starts over instead of committing what is left.
    @Test func aFailureThatEndsTheTransactionStartsTheBatchOver() throws {
        let firstRun = Atomic<Bool>(true)
        let jobs = [
            job("a", insert("a")),
            job("flaky") { connection in
                if firstRun.exchange(false, ordering: .relaxed) {
                    try connection.execute("ROLLBACK")
                    throw Planned()
                }
                try connection.prepare("INSERT INTO rows (name) VALUES ('flaky')").run()
            },
            job("b", insert("b")),
        ]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(try names() == ["a", "flaky", "b"])
        #expect(trace.runs("a") == [true, true] && trace.runs("flaky") == [false, true] && trace.runs("b") == [true])
        for name in ["a", "flaky", "b"] { #expect(trace.completions(name) == [true]) }
    }

    /// When the second pass cannot work either, every job fails and nothing commits.
    @Test func aJobThatBreaksTheTransactionEveryTimeFailsTheBatch() throws {
        let jobs = [
            job("a", insert("a")),
            job("breaker") { connection in
                try connection.execute("ROLLBACK")
                throw Planned()
            },
        ]
        #expect(!DatabaseThread.runBatch(jobs, on: connection))
        #expect(try names().isEmpty)
        #expect(trace.completions("a") == [false] && trace.completions("breaker") == [false])
        #expect(!connection.isInTransaction && !connection.isRunningBatch)
    }

    /// A CREATE TABLE changes no row, so a job that fails after one would look like a
    /// job that changed nothing: a job that says it changes the schema makes its batch
    /// use savepoints from the start, and its table is undone with it.
    @Test func aFailedSchemaChangeIsUndoneAlone() throws {
        let jobs = [
            job("a", insert("a")),
            job("migration", changesSchema: true) { connection in
                try connection.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY)")
                throw Planned()
            },
            job("b", insert("b")),
        ]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(try names() == ["a", "b"])
        #expect(try connection.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'extra'").firstInteger() == 0)
        #expect(trace.runs("a") == [true] && trace.runs("migration") == [false] && trace.runs("b") == [true])
    }
}
