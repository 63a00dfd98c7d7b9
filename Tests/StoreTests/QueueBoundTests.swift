import Foundation
import Store
import Synchronization
import TestSupport
import Testing

@testable import SQLite
@testable import StoreSQLite

/// The queue bound counts what earlier jobs of the same group commit queued, though
/// `task_counts` is written only at its commit.
@Suite struct QueueBoundInOneTransactionTests {
    @Test func aBatchOfEnqueuesStopsAtTheBound() async throws {
        let temporary = try TemporaryDatabase()
        _ = try await temporary.migratedStore()
        let connection = try Connection(path: temporary.directory.appendingPathComponent("users.sqlite3").path)
        let outcome = Mutex<[Bool]>([])
        let jobs = (0..<5).map { index in
            DatabaseThread.Job(
                run: { connection in
                    let task = NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: Int64(index))
                    return (try? SQLiteStore.enqueue(task, queueLimit: 3, on: connection)) != nil
                },
                complete: { error in outcome.withLock { $0.append(error == nil) } }
            )
        }
        #expect(DatabaseThread.runBatch(jobs, on: connection))
        #expect(try connection.prepare("SELECT count(*) FROM tasks").firstInteger() == 3)
        #expect(try connection.prepare("SELECT count FROM task_counts WHERE state = 'queued'").firstInteger() == 3)
    }
}
