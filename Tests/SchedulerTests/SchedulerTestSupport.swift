import Basics
import Foundation
import JSON
import SQLite
import Store
import Synchronization
import TestSupport
import Testing

@testable import Scheduler
@testable import StoreSQLite

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
        TaskKind(
            name: "gated", validate: { _ in "{}" },
            run: { _ in
                await self.wait()
                return "{}"
            })
    }
}

/// The real store with two calls the test can hold after their real work returned:
/// the next `cancel(id:)`, and the next claim that claimed something. Everything
/// else is forwarded as is.
final class HoldingStore: TaskStore {
    let base: SQLiteStore
    /// Opened when the held cancel's real call has returned; the test opens `releaseCancel`.
    let cancelReturned = Gate(), releaseCancel = Gate()
    /// Opened when the held claim's transaction has committed; the test opens `releaseClaim`.
    let claimReturned = Gate(), releaseClaim = Gate()
    private let armed = Mutex<(cancel: Bool, claim: Bool)>((false, false))

    /// Whether a hold was armed; disarms it.
    private func disarm(_ hold: WritableKeyPath<(cancel: Bool, claim: Bool), Bool>) -> Bool {
        armed.withLock { armed in
            defer { armed[keyPath: hold] = false }
            return armed[keyPath: hold]
        }
    }

    init(base: SQLiteStore) {
        self.base = base
    }

    /// Holds the next `cancel(id:)` once the real one has returned.
    func holdNextCancel() { armed.withLock { $0.cancel = true } }

    /// Holds the next claim that claims a task, once its transaction has committed.
    func holdNextClaim() { armed.withLock { $0.claim = true } }

    func cancel(id: Int64) async throws -> CancelOutcome {
        let outcome = try await base.cancel(id: id)
        if disarm(\.cancel) {
            cancelReturned.open()
            await releaseCancel.wait()
        }
        return outcome
    }

    func claimDue(now: Int64, limit: Int, skipping: (@Sendable () -> Set<Int64>)?) async throws -> [TaskRecord] {
        let claimed = try await base.claimDue(now: now, limit: limit, skipping: skipping)
        if !claimed.isEmpty, disarm(\.claim) {
            claimReturned.open()
            await releaseClaim.wait()
        }
        return claimed
    }

    func enqueue(_ task: NewTask, queueLimit: Int) async throws -> (task: TaskRecord, created: Bool) {
        try await base.enqueue(task, queueLimit: queueLimit)
    }

    func task(id: Int64) async throws -> TaskRecord? { try await base.task(id: id) }

    func tasks(state: TaskState?, afterID: Int64, limit: Int) async throws -> [TaskRecord] {
        try await base.tasks(state: state, afterID: afterID, limit: limit)
    }

    func nextRunAt(skipping: Set<Int64>) async throws -> Int64? { try await base.nextRunAt(skipping: skipping) }

    func markSucceeded(id: Int64, result: String) async throws -> Bool {
        try await base.markSucceeded(id: id, result: result)
    }

    func markRetry(id: Int64, runAt: Int64, error: String) async throws -> Bool {
        try await base.markRetry(id: id, runAt: runAt, error: error)
    }

    func markFailed(id: Int64, error: String) async throws -> Bool { try await base.markFailed(id: id, error: error) }

    func markCancelled(id: Int64) async throws -> Bool { try await base.markCancelled(id: id) }

    func requeue(id: Int64, now: Int64) async throws -> Bool { try await base.requeue(id: id, now: now) }

    func recoverInterrupted(now: Int64) async throws -> [Int64] { try await base.recoverInterrupted(now: now) }

    func taskCounts() async throws -> [TaskState: Int] { try await base.taskCounts() }
}

/// A scheduler on a temporary database with a manual clock; the test awaits its
/// events instead of sleeping.
final class SchedulerFixture: Sendable {
    let directory: URL
    let database: Database
    let store: SQLiteStore
    /// The store the scheduler uses when the fixture was made `throughHoldingStore`.
    let holding: HoldingStore
    let clock: ManualClock
    let scheduler: TaskScheduler
    let events: AsyncStream<TaskScheduler.Event>
    let gate = Gate()
    let handsOverWelcomes: Bool

    /// `welcomeWithEachUser`: `createUser` hands each new user's welcome task to the
    /// scheduler, as the route does; without it the task only waits in the queue.
    init(
        concurrency: Int = 2, maxAttempts: Int = 3, queueLimit: Int = 100, extraKinds: [TaskKind] = [],
        throughHoldingStore: Bool = false, welcomeWithEachUser: Bool = false
    ) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("usersd-sched-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        database = try Database(options: DatabaseOptions(path: directory.appendingPathComponent("db.sqlite3").path))
        _ = try await Migrations.migrate(database)
        let clock = ManualClock()
        self.clock = clock
        store = SQLiteStore(database: database, welcomeMaxAttempts: maxAttempts, now: { clock.now() })
        handsOverWelcomes = welcomeWithEachUser
        holding = HoldingStore(base: store)
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
            store: throughHoldingStore ? holding : store,
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

    /// Creates a user (and its welcome task, in the same transaction), handing the task
    /// to the scheduler when the fixture was made `welcomeWithEachUser`.
    func createUser(name: String, email: String) async throws -> User {
        let created = try await store.createUser(name: name, email: email)
        if handsOverWelcomes { scheduler.committed(taskID: created.welcomeTaskID, kind: WelcomeTask.kind) }
        return created.user
    }

    func enqueue(_ kind: String, _ payload: [String: JSONValue] = [:], delay: Int64 = 0) async throws -> Int64 {
        try await scheduler.enqueue(kind: kind, payload: payload, delayMilliseconds: delay).task.id
    }

    func state(_ id: Int64) async throws -> TaskState? {
        try await store.task(id: id)?.state
    }
}

/// Waits until `condition` holds, letting other tasks run between looks. For actor
/// state that no event reports (a cancel that is waiting); the test's time limit is
/// the deadline.
func waitUntil(
    isolation: isolated (any Actor)? = #isolation, _ condition: () async -> Bool
) async {
    while await !condition() { await Task.yield() }
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
