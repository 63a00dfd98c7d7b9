import Foundation
import JSON
import SQLite
import Scheduler
import Store
import Synchronization
import Testing

@testable import StoreSQLite

/// The welcome task: its payload, its one-transaction completion, and the fast path by id.
@Suite struct WelcomeTaskTests {
    /// The payload written with each new user is the one the kind's own validation
    /// writes, and that validation accepts it back.
    @Test func welcomePayloadIsTheValidatedOne() async throws {
        let fixture = try await SchedulerFixture()
        let welcome = BuiltInTasks.welcome(store: fixture.store)
        for id: Int64 in [1, 42, 9_007_199_254_740_993, Int64.max] {
            let payload = WelcomeTask.payload(userID: id)
            #expect(payload == (try welcome.validate(["user_id": .number(Double(id), integer: id)])))
            guard case .object(let members) = try JSONParser.parse(Array(payload.utf8)) else {
                Issue.record("not an object: \(payload)")
                continue
            }
            #expect(try welcome.validate(members) == payload)
        }
    }

    /// The outbox row and the task's success commit together, once.
    @Test func welcomeCompletesInOneTransactionOnlyWhileRunning() async throws {
        let fixture = try await SchedulerFixture()
        let store = fixture.store
        let user = try await store.createUser(name: "Ann", email: "ann@x.io").user
        let payload = WelcomeTask.payload(userID: user.id)
        for userID in [user.id, 999] {
            _ = try await store.enqueue(
                NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0), queueLimit: 10)
            let claimed = try #require(try await store.claimDue(now: 1, limit: 1).first)
            let stored = try await store.completeWelcome(taskID: claimed.id, userID: userID)
            #expect(stored == WelcomeTask.result(written: userID == user.id))
            let task = try #require(try await store.task(id: claimed.id))
            #expect(task.state == .succeeded && task.result == stored)
            // A second completion finds the task finished: nothing written, nothing changed.
            await #expect(throws: TaskStoreError.notRunning) {
                try await store.completeWelcome(taskID: claimed.id, userID: userID)
            }
        }
        // A welcome for a user who already has the row: counted as written, no second row.
        _ = try await store.enqueue(
            NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0), queueLimit: 10)
        let again = try #require(try await store.claimDue(now: 1, limit: 1).first)
        #expect(try await store.completeWelcome(taskID: again.id, userID: user.id) == WelcomeTask.result(written: true))
        let rows = try await fixture.database.read { try $0.prepare("SELECT user_id FROM outbox").firstInteger() }
        let count = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(rows == user.id && count == 1)
        #expect(
            try await fixture.outboxMessage(userID: user.id) == [
                "ann@x.io", "Welcome to usersd", "Hello Ann, your account is ready.",
            ])
    }

    /// A completion for a task that is not running (here: still queued) writes no outbox row.
    @Test func welcomeForATaskThatIsNotRunningWritesNothing() async throws {
        let fixture = try await SchedulerFixture()
        let user = try await fixture.store.createUser(name: "Bo", email: "bo@x.io").user
        let queued = try await fixture.store.enqueue(
            NewTask(kind: "welcome", payload: WelcomeTask.payload(userID: user.id), maxAttempts: 3, runAt: 0),
            queueLimit: 10
        ).task
        await #expect(throws: TaskStoreError.notRunning) {
            try await fixture.store.completeWelcome(taskID: queued.id, userID: user.id)
        }
        let count = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(count == 0)
        #expect(try await fixture.state(queued.id) == .queued)
    }

    /// Through the scheduler's claim path (a welcome task that was not noted at insert,
    /// such as one found at start-up): it succeeds with its result and one outbox row.
    @Test func welcomeTaskRunsThroughTheScheduler() async throws {
        let fixture = try await SchedulerFixture()
        let user = try await fixture.store.createUser(name: "Cy", email: "cy@x.io").user
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let payload = WelcomeTask.payload(userID: user.id)
        let id = try await fixture.store.enqueue(
            NewTask(kind: "welcome", payload: payload, maxAttempts: 3, runAt: 0), queueLimit: 10
        ).task.id
        fixture.scheduler.wakeUp()
        #expect(await next(&events) { if case .started = $0 { true } else { false } } == .started(id))
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
        let ann = try await store.createUser(name: "Ann", email: "ann@x.io").user
        func enqueue(_ kind: String, _ payload: String, runAt: Int64 = 0) async throws -> Int64 {
            try await store.enqueue(
                NewTask(kind: kind, payload: payload, maxAttempts: 3, runAt: runAt), queueLimit: 100
            ).task.id
        }
        let running = try await enqueue("welcome", WelcomeTask.payload(userID: ann.id))
        #expect(try await store.claimDue(now: 1, limit: 1).map(\.id) == [running])
        let forAnn = try await enqueue("welcome", WelcomeTask.payload(userID: ann.id))
        let forGone = try await enqueue("welcome", WelcomeTask.payload(userID: 999))
        let later = try await enqueue("welcome", WelcomeTask.payload(userID: ann.id), runAt: 5000)
        let sleep = try await enqueue("sleep", #"{"seconds":5}"#)
        let cancelled = try await enqueue("welcome", WelcomeTask.payload(userID: ann.id))
        _ = try await store.cancel(id: cancelled)
        var malformed: [Int64] = []
        for payload in [#"{"user_id":"ann"}"#, #"{"user_id":1.5}"#, #"{"user_id":99999999999999999999}"#, "{}", "[]"] {
            malformed.append(try await enqueue("welcome", payload))
        }
        // forAnn twice: it runs once.
        let ids = [running, forGone, forAnn, later, sleep, cancelled] + malformed + [12_345, forAnn]

        let ran = try await store.runQueuedWelcomes(ids: ids, now: 1000)

        #expect(ran == [forGone, forAnn])
        let annTask = try #require(try await store.task(id: forAnn))
        #expect(
            annTask.state == .succeeded && annTask.result == WelcomeTask.result(written: true) && annTask.attempts == 1)
        #expect(annTask.startedAt != nil && annTask.finishedAt != nil)
        let goneTask = try #require(try await store.task(id: forGone))
        #expect(goneTask.state == .succeeded && goneTask.result == WelcomeTask.result(written: false))
        #expect(try await fixture.state(running) == .running)
        #expect(try await fixture.state(later) == .queued)
        #expect(try await fixture.state(sleep) == .queued)
        #expect(try await fixture.state(cancelled) == .cancelled)
        for id in malformed {
            #expect(try await fixture.state(id) == .queued)  // left to the claim path, which fails it
        }
        let outbox = try await fixture.database.read { try $0.prepare("SELECT count(*) FROM outbox").firstInteger() }
        #expect(outbox == 1)
        #expect(
            try await fixture.outboxMessage(userID: ann.id) == [
                "ann@x.io", "Welcome to usersd", "Hello Ann, your account is ready.",
            ])
        let counts = try await store.taskCounts()
        // Queued: Ann's own welcome (inserted with her, never run here) and the six skipped.
        #expect(counts[.succeeded] == 2 && counts[.queued] == 8 && counts[.running] == 1 && counts[.cancelled] == 1)
        // Run again: all finished or not due, so nothing runs and nothing changes.
        #expect(try await store.runQueuedWelcomes(ids: ids, now: 1000) == [])
        #expect(try await store.task(id: forAnn) == annTask)
    }

    /// A welcome task inserted with its user (in the user's transaction, then handed to
    /// the scheduler, as the route does; internal kinds are not enqueued through the
    /// scheduler) runs at once even while every slot is taken: it needs no claim and no slot.
    @Test(.timeLimit(.minutes(1))) func notedWelcomeRunsWhileAllSlotsAreBusy() async throws {
        let fixture = try await SchedulerFixture(concurrency: 1, welcomeWithEachUser: true)
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let gated = try await fixture.enqueue("gated")
        #expect(await next(&events) { $0 == .started(gated) } != nil)
        let user = try await fixture.createUser(name: "Di", email: "di@x.io")
        let welcome = try #require(try await fixture.store.tasks(state: nil, afterID: gated, limit: 10).first).id
        #expect(try await fixture.store.task(id: welcome)?.payload == WelcomeTask.payload(userID: user.id))
        #expect(await next(&events) { $0 == .finished(welcome, .succeeded) } != nil)
        #expect(try await fixture.state(gated) == .running)
        #expect(await fixture.scheduler.runningCount == 1)
        let task = try #require(try await fixture.store.task(id: welcome))
        #expect(task.result == #"{"outbox":"written"}"# && task.attempts == 1)
        fixture.gate.open()
        await fixture.scheduler.shutdown(graceMilliseconds: 1000)
    }
}
