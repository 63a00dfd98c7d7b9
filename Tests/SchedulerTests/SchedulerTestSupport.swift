import Foundation
import HTTP
import SQLite
import Scheduler
import Store
import Synchronization
import Testing

/// Failure a test kind throws on purpose.
struct PlannedFailure: Error, CustomStringConvertible {
    var description: String { "planned failure" }
}

/// Holds tasks of the `gated` kind until the test opens it (no clock races).
final class Gate: Sendable {
    private let state = Mutex<(isOpen: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.isOpen { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.isOpen = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// A task kind whose attempts wait for this gate.
    var kind: TaskKind {
        TaskKind(name: "gated", validate: { _ in "{}" }) { _ in
            await self.wait()
            return "{}"
        }
    }
}

/// A scheduler on a temporary database with a manual clock; the test awaits its
/// events instead of sleeping.
final class SchedulerFixture: Sendable {
    let directory: URL
    let database: Database
    let store: SQLiteStore
    let clock = ManualClock()
    let scheduler: TaskScheduler
    let events: AsyncStream<TaskScheduler.Event>
    let gate = Gate()

    init(concurrency: Int = 2, maxAttempts: Int = 3, queueLimit: Int = 100, extraKinds: [TaskKind] = []) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("usersd-sched-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        database = try Database(options: DatabaseOptions(path: directory.appendingPathComponent("db.sqlite3").path))
        try await Migrations.migrate(database)
        store = SQLiteStore(database: database)
        let (stream, continuation) = AsyncStream<TaskScheduler.Event>.makeStream()
        events = stream
        var configuration = TaskScheduler.Configuration()
        configuration.concurrency = concurrency
        configuration.maxAttempts = maxAttempts
        configuration.queueLimit = queueLimit
        configuration.retry = RetryPolicy(baseMilliseconds: 1000, capMilliseconds: 60_000, jitter: 0.2)
        configuration.random = { 0.5 }
        configuration.onEvent = { continuation.yield($0) }
        scheduler = TaskScheduler(
            store: store,
            registry: TaskRegistry([BuiltInTasks.sleep, BuiltInTasks.welcome(store: store), gate.kind] + extraKinds),
            clock: clock,
            configuration: configuration
        )
    }

    deinit {
        database.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// The recipient, subject and body of the user's outbox row, if any.
    func outboxMessage(userID: Int64) async throws -> [String]? {
        try await database.read { connection in
            let row = try connection.prepare("SELECT recipient, subject, body FROM outbox WHERE user_id = ?")
            try row.bind([.integer(userID)])
            return try row.step() ? [row.text(0), row.text(1), row.text(2)] : nil
        }
    }

    func enqueue(_ kind: String, _ payload: [String: JSONValue] = [:], delay: Int64 = 0) async throws -> Int64 {
        try await scheduler.enqueue(kind: kind, payload: payload, delayMilliseconds: delay).task.id
    }

    func state(_ id: Int64) async throws -> TaskState? {
        try await store.task(id: id)?.state
    }
}

/// Reads events until one matches.
func next(
    _ iterator: inout AsyncStream<TaskScheduler.Event>.Iterator,
    isolation: isolated (any Actor)? = #isolation,
    where matches: (TaskScheduler.Event) -> Bool
) async -> TaskScheduler.Event? {
    while let event = await iterator.next(isolation: isolation) {
        if matches(event) { return event }
    }
    return nil
}
