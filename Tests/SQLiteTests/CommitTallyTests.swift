import Foundation
import Synchronization
import TestSupport
import Testing

@testable import SQLite

/// A `CommitTally` writes the sums of a group commit's successful jobs once, just
/// before COMMIT; rolled-back jobs and failed transactions leave nothing behind.
/// Batches are run directly (`DatabaseThread.runBatch`), so which jobs share a
/// transaction is decided by the test, not by timing.
@Suite struct CommitTallyTests {
    struct Planned: Error {}

    /// What happened, in order, from any thread.
    final class Record<Item: Sendable>: Sendable {
        private let items = Mutex<[Item]>([])
        func append(_ item: Item) { items.withLock { $0.append(item) } }
        var all: [Item] { items.withLock { $0 } }
    }

    let temporary: TemporaryDatabase
    let connection: Connection
    /// Every call of the tally's writer, with the sums it wrote.
    let writes = Record<[Int]>()
    let tally: CommitTally

    init() throws {
        temporary = try TemporaryDatabase()
        connection = try Connection(path: temporary.directory.appendingPathComponent("tally.sqlite3").path)
        try connection.execute(
            "CREATE TABLE sums (slot INTEGER PRIMARY KEY, total INTEGER NOT NULL); INSERT INTO sums VALUES (0, 0), (1, 0);"
                + "CREATE TABLE rows (id INTEGER PRIMARY KEY)"
        )
        let writes = self.writes
        tally = CommitTally(name: "sums", slots: 2) { connection, sums in
            writes.append(sums)
            for (slot, delta) in sums.enumerated() where delta != 0 {
                try connection.prepare("UPDATE sums SET total = total + ?1 WHERE slot = ?2")
                    .bind([.integer(Int64(delta)), .integer(Int64(slot))]).run()
            }
        }
    }

    func totals() throws -> [Int64] {
        var totals: [Int64] = []
        try connection.prepare("SELECT total FROM sums ORDER BY slot").forEachRow { totals.append($0.integer(0)) }
        return totals
    }

    func rowCount() throws -> Int64 { try connection.prepare("SELECT count(*) FROM rows").firstInteger() ?? -1 }

    /// A job that inserts a row and adds `delta` to `slot`, then fails when asked.
    func job(adding delta: Int, to slot: Int, failing: Bool = false, outcome: Record<Bool>) -> DatabaseThread.Job {
        let tally = tally
        return DatabaseThread.Job(
            run: { connection in
                do {
                    try connection.execute("INSERT INTO rows DEFAULT VALUES")
                    try connection.add(delta, to: slot, of: tally)
                    if failing { throw Planned() }
                    return true
                } catch {
                    return false
                }
            },
            complete: { error in outcome.append(error == nil) }
        )
    }

    @Test func oneWriteForTheJobsThatSucceeded() throws {
        let outcome = Record<Bool>()
        let jobs = [
            job(adding: 1, to: 0, outcome: outcome),
            job(adding: 1, to: 0, failing: true, outcome: outcome),
            job(adding: 1, to: 0, outcome: outcome),
            job(adding: -2, to: 1, outcome: outcome),
            job(adding: 5, to: 1, failing: true, outcome: outcome),
            job(adding: 1, to: 0, outcome: outcome),
        ]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(writes.all == [[3, -2]])
        #expect(try totals() == [3, -2])
        #expect(try rowCount() == 4)  // the failed jobs' rows were rolled back with their sums
        #expect(!connection.isInTransaction && !connection.isRunningBatch)
    }

    @Test func aBatchOfOneFailedJobWritesNothing() throws {
        let outcome = Record<Bool>()
        #expect(DatabaseThread.runBatch([job(adding: 7, to: 0, failing: true, outcome: outcome)], on: connection))
        #expect(writes.all.isEmpty)
        #expect(try totals() == [0, 0])
        // The next batch starts from zero: nothing of the failed job is carried over.
        #expect(DatabaseThread.runBatch([job(adding: 1, to: 1, outcome: outcome)], on: connection))
        #expect(writes.all == [[0, 1]])
        #expect(try totals() == [0, 1])
    }

    @Test func sumsThatCancelOutWriteNothing() throws {
        let outcome = Record<Bool>()
        let jobs = [job(adding: 1, to: 0, outcome: outcome), job(adding: -1, to: 0, outcome: outcome)]
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(writes.all.isEmpty)
        #expect(try rowCount() == 2)
    }

    /// When writing the sums fails, the whole transaction fails: no job's rows commit.
    @Test func aFailedTallyWriteFailsTheBatch() throws {
        let outcome = Record<Bool>()
        let failing = CommitTally(name: "broken", slots: 1) { _, _ in throw Planned() }
        let jobs = [
            job(adding: 1, to: 0, outcome: outcome),
            DatabaseThread.Job(
                run: { connection in (try? connection.add(1, to: 0, of: failing)) != nil },
                complete: { error in outcome.append(error == nil) }
            ),
        ]
        #expect(!DatabaseThread.runBatch(jobs, on: connection))
        #expect(outcome.all == [false, false])
        #expect(try rowCount() == 0)
        #expect(try totals() == [0, 0])
    }

    /// Outside a batch there is no commit to defer to: the sum is written at once.
    @Test func outsideABatchAnAdditionIsWrittenAtOnce() throws {
        try connection.add(4, to: 1, of: tally)
        #expect(writes.all == [[0, 4]])
        #expect(try totals() == [0, 4])
    }
}
