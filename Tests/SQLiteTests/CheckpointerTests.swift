import Foundation
import Synchronization
import TestSupport
import Testing

@testable import SQLite

/// The WAL is checkpointed in two passes: the bulk on the checkpoint thread, the
/// rest by the writer after its next commit, after which the WAL starts over.
/// The loops below write until what they wait for has happened (bounded, so a
/// checkpoint that never comes fails the test instead of hanging it).
@Suite struct CheckpointerTests {
    static let maximumCommits = 20_000

    /// Descriptors of this process open on the database's files (other tests' databases
    /// live at other paths).
    static func descriptors(on path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "").hasPrefix(path)
        }.count
    }

    @Test func theCheckpointThreadDoesTheBulkAndTheWALStartsOver() async throws {
        let temporary = try TemporaryDatabase()
        let database = temporary.database
        try await database.write { try $0.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)") }
        // The checkpoint thread's files are open from the start, so a monitor of
        // descriptors sees no change at the first pass.
        let descriptorsBefore = Self.descriptors(on: database.options.path)
        var commits = 0
        var statistics = database.checkpointStatistics
        // Until a background pass ran, the writer finished it, and the WAL started over.
        while commits < Self.maximumCommits
            && !(statistics.backgroundPasses >= 1 && statistics.writerPasses >= 1
                && statistics.walPages < Checkpointer.wakePages)
        {
            try await database.write { try $0.execute("INSERT INTO blobs (data) VALUES (zeroblob(12000))") }
            commits += 1
            statistics = database.checkpointStatistics
        }
        #expect(statistics.backgroundPasses >= 1)
        #expect(statistics.writerPasses >= 1)
        #expect(statistics.walPages < Checkpointer.wakePages, "the WAL did not start over")
        // (Whether the WAL also stayed below `writerPages` depends on how fast the
        // checkpoint thread ran meanwhile, so it is not asserted: on a loaded machine the
        // writer's own pass past that limit is the designed safety valve.)
        #expect(Self.descriptors(on: database.options.path) == descriptorsBefore)
        let rows = try await database.read { try $0.prepare("SELECT count(*) FROM blobs").firstInteger() }
        #expect(rows == Int64(commits))

        database.close()
        let reopened = try Connection(path: database.options.path)
        #expect(try reopened.prepare("PRAGMA integrity_check").firstText() == "ok")
        #expect(try reopened.prepare("SELECT count(*) FROM blobs").firstInteger() == Int64(commits))
    }

    /// As while the database closes: the checkpoint thread stops first, the writer
    /// still commits the work queued before it.
    @Test func onceTheThreadHasStoppedTheWriterCheckpointsAlone() throws {
        let temporary = try TemporaryDatabase()
        let path = temporary.directory.appendingPathComponent("alone.sqlite3").path
        let checkpointer = try Checkpointer { try Connection(path: path) }
        checkpointer.stop()
        let writer = try Connection(path: path)
        try writer.enableWAL(synchronous: "NORMAL")
        checkpointer.watch(writer)
        try writer.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        var commits = 0
        var statistics = checkpointer.statistics.withLock { $0 }
        while commits < Self.maximumCommits
            && !(statistics.writerPasses >= 1 && statistics.walPages < Checkpointer.wakePages)
        {
            try writer.execute("INSERT INTO blobs (data) VALUES (zeroblob(12000))")
            commits += 1
            statistics = checkpointer.statistics.withLock { $0 }
        }
        #expect(statistics.backgroundPasses == 0)
        #expect(statistics.writerPasses >= 1)
        #expect(statistics.walPages < Checkpointer.wakePages, "the WAL did not start over")
        #expect(try writer.prepare("SELECT count(*) FROM blobs").firstInteger() == Int64(commits))
    }
}
