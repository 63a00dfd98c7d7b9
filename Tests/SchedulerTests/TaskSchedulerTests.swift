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

@Suite struct TaskSchedulerTests {
    @Test func concurrencyLimitHolds() async throws {
        let fixture = try await SchedulerFixture(concurrency: 2)
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        var ids: [Int64] = []
        for _ in 0..<5 { ids.append(try await fixture.enqueue("gated")) }
        var started: [Int64] = []
        while started.count < 2, let event = await next(&events, where: { if case .started = $0 { true } else { false } }) {
            if case .started(let id) = event { started.append(id) }
        }
        #expect(started == [ids[0], ids[1]])
        #expect(await fixture.scheduler.runningCount == 2)
        let running = try await fixture.store.tasks(state: .running, afterID: 0, limit: 10)
        #expect(running.map(\.id) == [ids[0], ids[1]])
        // Finishing the first two frees both slots for the next two, in order.
        fixture.gate.open()
        var finished = 0
        var nextStarted: [Int64] = []
        while finished < 2 || nextStarted.count < 3, let event = await events.next(isolation: #isolation) {
            switch event {
            case .finished(_, .succeeded): finished += 1
            case .started(let id): nextStarted.append(id)
            default: break
            }
        }
        #expect(nextStarted == [ids[2], ids[3], ids[4]])
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func retriesWithBackoffThenSucceeds() async throws {
        let flaky = TaskKind(name: "flaky", validate: { _ in "{}" }) { context in
            if context.task.attempts < 3 { throw PlannedFailure() }
            return "{\"ok\":true}"
        }
        let fixture = try await SchedulerFixture(maxAttempts: 5, extraKinds: [flaky])
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let start = fixture.clock.now()
        let id = try await fixture.enqueue("flaky")
        let first = await next(&events) { if case .retried = $0 { true } else { false } }
        #expect(first == .retried(id, runAt: start + 1000))
        fixture.clock.advance(by: 1000)
        let second = await next(&events) { if case .retried = $0 { true } else { false } }
        #expect(second == .retried(id, runAt: start + 1000 + 2000))
        fixture.clock.advance(by: 2000)
        let done = await next(&events) { if case .finished = $0 { true } else { false } }
        #expect(done == .finished(id, .succeeded))
        let task = try await fixture.store.task(id: id)
        #expect(task?.attempts == 3)
        #expect(task?.result == "{\"ok\":true}")
        #expect(task?.lastError == "planned failure")
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func exhaustedRetriesEndFailedWithTheLastError() async throws {
        let broken = TaskKind(name: "broken", validate: { _ in "{}" }) { _ in throw PlannedFailure() }
        let fixture = try await SchedulerFixture(maxAttempts: 2, extraKinds: [broken])
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("broken")
        _ = await next(&events) { if case .retried = $0 { true } else { false } }
        fixture.clock.advance(by: 1000)
        let end = await next(&events) { if case .finished = $0 { true } else { false } }
        #expect(end == .finished(id, .failed))
        let task = try await fixture.store.task(id: id)
        #expect(task?.state == .failed && task?.attempts == 2 && task?.lastError == "planned failure")
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func cancellingAQueuedTaskIsImmediate() async throws {
        let fixture = try await SchedulerFixture()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("sleep", delay: 60_000)
        let outcome = try await fixture.scheduler.cancel(id: id)
        guard case .cancelled(let task) = outcome else {
            Issue.record("expected cancelled, got \(outcome)")
            return
        }
        #expect(task.state == .cancelled && task.attempts == 0)
        #expect(try await fixture.scheduler.cancel(id: id) == .alreadyFinished(task))
        #expect(try await fixture.scheduler.cancel(id: 999) == .notFound)
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func cancellingARunningTaskStopsItsSwiftTask() async throws {
        let fixture = try await SchedulerFixture()
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("sleep", ["seconds": .number(3600, integer: 3600)])
        _ = await next(&events) { $0 == .started(id) }
        let outcome = try await fixture.scheduler.cancel(id: id)
        guard case .cancelled(let task) = outcome else {
            Issue.record("expected cancelled, got \(outcome)")
            return
        }
        #expect(task.state == .cancelled)
        #expect(await fixture.scheduler.runningCount == 0)
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func shutdownRequeuesRunningTasksWithoutCountingTheAttempt() async throws {
        let fixture = try await SchedulerFixture()
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("sleep", ["seconds": .number(3600, integer: 3600)])
        _ = await next(&events) { $0 == .started(id) }
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
        #expect(await next(&events) { if case .requeued = $0 { true } else { false } } == .requeued(id))
        let task = try await fixture.store.task(id: id)
        #expect(task?.state == .queued && task?.attempts == 0)
    }

    @Test func shutdownLetsTasksFinishWithinTheGracePeriod() async throws {
        let fixture = try await SchedulerFixture()
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("gated")
        _ = await next(&events) { $0 == .started(id) }
        async let stopped: Void = fixture.scheduler.shutdown(graceMilliseconds: 5000)
        fixture.gate.open()
        await stopped
        #expect(try await fixture.state(id) == .succeeded)
    }

    @Test func recoveryRequeuesTasksLeftRunningByACrash() async throws {
        let fixture = try await SchedulerFixture()
        // Simulate a crash: a row claimed (running, attempt counted) by a dead process.
        let id = try await fixture.enqueue("gated")
        let claimed = try await fixture.store.claimDue(now: fixture.clock.now(), limit: 1)
        #expect(claimed.map(\.id) == [id])
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        #expect(await events.next(isolation: #isolation) == .recovered([id]))
        #expect(await events.next(isolation: #isolation) == .started(id))
        fixture.gate.open()
        #expect(await next(&events) { if case .finished = $0 { true } else { false } } == .finished(id, .succeeded))
        #expect(try await fixture.store.task(id: id)?.attempts == 2)
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    @Test func queueBoundRejectsWhenFull() async throws {
        let fixture = try await SchedulerFixture(queueLimit: 2)
        _ = try await fixture.enqueue("sleep", delay: 60_000)
        _ = try await fixture.enqueue("sleep", delay: 60_000)
        await #expect(throws: TaskStoreError.queueFull) { try await fixture.enqueue("sleep", delay: 60_000) }
    }

    /// Since migration 6 the write jobs keep `task_counts` themselves (`TaskCounts`):
    /// after every kind of transition, and after a job that counted and then rolled back,
    /// it equals counting the rows.
    @Test func taskCountsStayExactThroughEveryTransition() async throws {
        let fixture = try await SchedulerFixture()
        let store = fixture.store
        let now = fixture.clock.now()
        for _ in 0..<8 { _ = try await fixture.enqueue("sleep") }
        let claimed = try await store.claimDue(now: now, limit: 6)
        #expect(claimed.count == 6)
        #expect(try await store.markSucceeded(id: claimed[0].id, result: "{}"))
        #expect(try await store.markFailed(id: claimed[1].id, error: "x"))
        #expect(try await store.requeue(id: claimed[2].id, now: now))
        guard case .cancelled = try await store.cancel(id: claimed[2].id) else { Issue.record("not cancelled"); return }
        #expect(try await store.markRetry(id: claimed[3].id, runAt: now, error: "again"))
        #expect(try await store.markCancelled(id: claimed[4].id))
        // A task that is not running any more is not moved, nor counted.
        #expect(try await store.markSucceeded(id: claimed[0].id, result: "{}") == false)

        // Welcome tasks: one run straight from the queue; one claimed, completed, and
        // completed again (that job throws and rolls back).
        let user = try await store.createUser(name: "Ann", email: "ann@x.io")
        let payload = BuiltInTasks.welcomePayload(userID: user.id)
        let welcome = NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0)
        let first = try await store.enqueue(welcome, queueLimit: 100).task.id
        #expect(try await store.runQueuedWelcomes(ids: [first], now: now) { _ in "ok" } == [first])
        let second = try await store.enqueue(welcome, queueLimit: 100).task.id
        #expect(try await store.claimDue(now: now, limit: 1).map(\.id) == [second])
        _ = try await store.completeWelcome(taskID: second, userID: user.id) { _ in "ok" }
        await #expect(throws: TaskStoreError.notRunning) {
            try await store.completeWelcome(taskID: second, userID: user.id) { _ in "ok" }
        }

        // A job that inserted (and counted) a task, then failed: both roll back.
        struct HookFailed: Error {}
        let failing = SQLiteStore(database: fixture.database) { connection, user in
            _ = try SQLiteStore.insertTask(
                NewTask(kind: "welcome", payload: BuiltInTasks.welcomePayload(userID: user.id), maxAttempts: 3, runAt: 0),
                on: connection)
            throw HookFailed()
        }
        await #expect(throws: (any Error).self) { try await failing.createUser(name: "Bo", email: "bo@x.io") }

        // The restart recovery puts the last running task back in the queue.
        #expect(try await store.recoverInterrupted(now: now) == [claimed[5].id])

        let counted = try await fixture.database.read { connection -> [TaskState: Int] in
            var counts: [TaskState: Int] = [:]
            try connection.prepare("SELECT state, count(*) FROM tasks GROUP BY state").forEachRow { row in
                counts[TaskState(rawValue: row.text(0))!] = Int(row.integer(1))
            }
            return counts
        }
        let kept = try await store.taskCounts().filter { $0.value != 0 }
        #expect(kept == counted)
        #expect(kept == [.queued: 4, .succeeded: 3, .failed: 1, .cancelled: 2])
    }

    /// The payload written with each new user is the one the kind's own validation
    /// writes, and that validation accepts it back.
    @Test func welcomePayloadIsTheValidatedOne() async throws {
        let fixture = try await SchedulerFixture()
        let welcome = BuiltInTasks.welcome(store: fixture.store)
        for id: Int64 in [1, 42, 9_007_199_254_740_993, Int64.max] {
            let payload = BuiltInTasks.welcomePayload(userID: id)
            #expect(payload == (try welcome.validate(["user_id": .number(Double(id), integer: id)])))
            guard case .object(let members) = try JSONParser.parse(Array(payload.utf8)) else {
                Issue.record("not an object: \(payload)")
                continue
            }
            #expect(try welcome.validate(members) == payload)
        }
    }

    @Test func idempotencyKeyReturnsTheSameTask() async throws {
        let fixture = try await SchedulerFixture()
        let first = try await fixture.scheduler.enqueue(kind: "sleep", payload: [:], idempotencyKey: "k1")
        let again = try await fixture.scheduler.enqueue(kind: "sleep", payload: [:], idempotencyKey: "k1")
        #expect(first.created && !again.created && first.task.id == again.task.id)
    }

    @Test func badKindsAndPayloadsNameTheProblem() async throws {
        let fixture = try await SchedulerFixture()
        await #expect(throws: TaskPayloadError.self) { try await fixture.enqueue("nope") }
        for bad: JSONValue in [.number(0, integer: 0), .number(3601, integer: 3601), .string("5")] {
            do {
                _ = try await fixture.enqueue("sleep", ["seconds": bad])
                Issue.record("accepted \(bad)")
            } catch let error as TaskPayloadError {
                #expect(error.field == "seconds")
            }
        }
    }

    /// The outbox row and the task's success commit together, once.
    @Test func welcomeCompletesInOneTransactionOnlyWhileRunning() async throws {
        let fixture = try await SchedulerFixture()
        let store = fixture.store
        let user = try await store.createUser(name: "Ann", email: "ann@x.io")
        let payload = BuiltInTasks.welcomePayload(userID: user.id)
        for userID in [user.id, 999] {
            _ = try await store.enqueue(NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0), queueLimit: 10)
            let claimed = try #require(try await store.claimDue(now: 1, limit: 1).first)
            let label: @Sendable (Bool) -> String = { $0 ? "written" : "gone" }
            let stored = try await store.completeWelcome(taskID: claimed.id, userID: userID, result: label)
            #expect(stored == (userID == user.id ? "written" : "gone"))
            let task = try #require(try await store.task(id: claimed.id))
            #expect(task.state == .succeeded && task.result == stored)
            // A second completion finds the task finished: nothing written, nothing changed.
            await #expect(throws: TaskStoreError.notRunning) {
                try await store.completeWelcome(taskID: claimed.id, userID: userID, result: label)
            }
        }
        // A welcome for a user who already has the row: counted as written, no second row.
        _ = try await store.enqueue(NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0), queueLimit: 10)
        let again = try #require(try await store.claimDue(now: 1, limit: 1).first)
        #expect(try await store.completeWelcome(taskID: again.id, userID: user.id) { $0 ? "written" : "gone" } == "written")
        let rows = try await fixture.database.read { try $0.prepare("SELECT user_id FROM outbox").firstInteger() }
        let count = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(rows == user.id && count == 1)
        #expect(try await fixture.outboxMessage(userID: user.id) == ["ann@x.io", "Welcome to usersd", "Hello Ann, your account is ready."])
    }

    /// A completion for a task that is not running (here: still queued) writes no outbox row.
    @Test func welcomeForATaskThatIsNotRunningWritesNothing() async throws {
        let fixture = try await SchedulerFixture()
        let user = try await fixture.store.createUser(name: "Bo", email: "bo@x.io")
        let queued = try await fixture.store.enqueue(
            NewTask(kind: "welcome", payload: BuiltInTasks.welcomePayload(userID: user.id), maxAttempts: 3, runAt: 0), queueLimit: 10
        ).task
        await #expect(throws: TaskStoreError.notRunning) {
            try await fixture.store.completeWelcome(taskID: queued.id, userID: user.id) { _ in "x" }
        }
        let count = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(count == 0)
        #expect(try await fixture.state(queued.id) == .queued)
    }

    /// Through the scheduler: the welcome task succeeds with its result and one outbox row.
    @Test func welcomeTaskRunsThroughTheScheduler() async throws {
        let fixture = try await SchedulerFixture()
        let user = try await fixture.store.createUser(name: "Cy", email: "cy@x.io")
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("welcome", ["user_id": .number(Double(user.id), integer: user.id)])
        let finished = await next(&events) { $0 == .finished(id, .succeeded) }
        #expect(finished != nil)
        let task = try #require(try await fixture.store.task(id: id))
        #expect(task.state == .succeeded && task.result == #"{"outbox":"written"}"#)
        let count = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(count == 1)
        await fixture.scheduler.shutdown(graceMilliseconds: 1000)
    }

    /// Welcome tasks run by id, queued to succeeded in one transaction; every id that is not
    /// a queued, due welcome task is left exactly as it was.
    @Test func queuedWelcomesRunByIDAndSkipEverythingElse() async throws {
        let fixture = try await SchedulerFixture()
        let store = fixture.store
        let ann = try await store.createUser(name: "Ann", email: "ann@x.io")
        func enqueue(_ kind: String, _ payload: String, runAt: Int64 = 0) async throws -> Int64 {
            try await store.enqueue(NewTask(kind: kind, payload: payload, maxAttempts: 3, runAt: runAt), queueLimit: 100).task.id
        }
        let running = try await enqueue("welcome", BuiltInTasks.welcomePayload(userID: ann.id))
        #expect(try await store.claimDue(now: 1, limit: 1).map(\.id) == [running])
        let forAnn = try await enqueue("welcome", BuiltInTasks.welcomePayload(userID: ann.id))
        let forGone = try await enqueue("welcome", BuiltInTasks.welcomePayload(userID: 999))
        let later = try await enqueue("welcome", BuiltInTasks.welcomePayload(userID: ann.id), runAt: 5000)
        let sleep = try await enqueue("sleep", #"{"seconds":5}"#)
        let cancelled = try await enqueue("welcome", BuiltInTasks.welcomePayload(userID: ann.id))
        _ = try await store.cancel(id: cancelled)
        var malformed: [Int64] = []
        for payload in [#"{"user_id":"ann"}"#, #"{"user_id":1.5}"#, #"{"user_id":99999999999999999999}"#, "{}", "[]"] {
            malformed.append(try await enqueue("welcome", payload))
        }
        let ids = [running, forGone, forAnn, later, sleep, cancelled] + malformed + [12_345, forAnn]  // forAnn twice: runs once
        let label: @Sendable (Bool) -> String = { $0 ? "written" : "gone" }

        let ran = try await store.runQueuedWelcomes(ids: ids, now: 1000, result: label)

        #expect(ran == [forGone, forAnn])
        let annTask = try #require(try await store.task(id: forAnn))
        #expect(annTask.state == .succeeded && annTask.result == "written" && annTask.attempts == 1)
        #expect(annTask.startedAt != nil && annTask.finishedAt != nil)
        let goneTask = try #require(try await store.task(id: forGone))
        #expect(goneTask.state == .succeeded && goneTask.result == "gone")
        #expect(try await fixture.state(running) == .running)
        #expect(try await fixture.state(later) == .queued)
        #expect(try await fixture.state(sleep) == .queued)
        #expect(try await fixture.state(cancelled) == .cancelled)
        for id in malformed {
            #expect(try await fixture.state(id) == .queued)  // left to the claim path, which fails it
        }
        let outbox = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(outbox == 1)
        #expect(try await fixture.outboxMessage(userID: ann.id) == ["ann@x.io", "Welcome to usersd", "Hello Ann, your account is ready."])
        let counts = try await store.taskCounts()
        #expect(counts[.succeeded] == 2 && counts[.queued] == 7 && counts[.running] == 1 && counts[.cancelled] == 1)
        // Run again: all finished or not due, so nothing runs and nothing changes.
        #expect(try await store.runQueuedWelcomes(ids: ids, now: 1000, result: label) == [])
        #expect(try await store.task(id: forAnn) == annTask)
    }

    /// A welcome task noted at insert runs at once even while every slot is taken: it
    /// needs no claim and no slot.
    @Test(.timeLimit(.minutes(1))) func notedWelcomeRunsWhileAllSlotsAreBusy() async throws {
        let fixture = try await SchedulerFixture(concurrency: 1)
        let user = try await fixture.store.createUser(name: "Di", email: "di@x.io")
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let gated = try await fixture.enqueue("gated")
        #expect(await next(&events) { $0 == .started(gated) } != nil)
        let welcome = try await fixture.enqueue("welcome", ["user_id": .number(Double(user.id), integer: user.id)])
        #expect(await next(&events) { $0 == .finished(welcome, .succeeded) } != nil)
        #expect(try await fixture.state(gated) == .running)
        #expect(await fixture.scheduler.runningCount == 1)
        let task = try #require(try await fixture.store.task(id: welcome))
        #expect(task.result == #"{"outbox":"written"}"# && task.attempts == 1)
        fixture.gate.open()
        await fixture.scheduler.shutdown(graceMilliseconds: 1000)
    }

    /// The claim path leaves the tasks it is told to skip queued and takes the next due ones.
    @Test func claimAndNextDueTimeSkipTheTasksTheyAreToldTo() async throws {
        let fixture = try await SchedulerFixture()
        var ids: [Int64] = []
        for runAt: Int64 in [30, 10, 20, 40] {
            ids.append(try await fixture.store.enqueue(NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: runAt), queueLimit: 10).task.id)
        }
        let skipped = ids[1]
        #expect(try await fixture.store.nextRunAt(skipping: [skipped]) == 20)
        let claimed = try await fixture.store.claimDue(now: 35, limit: 5, skipping: { [skipped] })
        #expect(claimed.map(\.id) == [ids[2], ids[0]])
        #expect(claimed.allSatisfy { $0.state == .running && $0.attempts == 1 })
        #expect(try await fixture.state(skipped) == .queued)
        #expect(try await fixture.state(ids[3]) == .queued)
        // The next due time leaves the skipped task out; with it, it counts.
        #expect(try await fixture.store.nextRunAt(skipping: [skipped]) == 40)
        #expect(try await fixture.store.nextRunAt() == 10)
        // A limit of one with the first due task skipped still claims the next one.
        let next = try await fixture.store.claimDue(now: 45, limit: 1, skipping: { [skipped] })
        #expect(next.map(\.id) == [ids[3]])
    }
}
