import Basics
import Foundation
import JSON
import SQLite
import Scheduler
import Store
import Synchronization
import Testing

@testable import StoreSQLite

/// Enqueueing, the queue bound, claiming into slots and the task counts.
@Suite struct EnqueueAndClaimTests {
    @Test func concurrencyLimitHolds() async throws {
        let fixture = try await SchedulerFixture(concurrency: 2)
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        var ids: [Int64] = []
        for _ in 0..<5 { ids.append(try await fixture.enqueue("gated")) }
        var started: [Int64] = []
        while started.count < 2,
            let event = await next(&events, where: { if case .started = $0 { true } else { false } })
        {
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

    @Test func queueBoundRejectsWhenFull() async throws {
        let fixture = try await SchedulerFixture(queueLimit: 2)
        _ = try await fixture.enqueue("sleep", delay: 60_000)
        _ = try await fixture.enqueue("sleep", delay: 60_000)
        await #expect(throws: TaskStoreError.queueFull) { try await fixture.enqueue("sleep", delay: 60_000) }
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

    /// Internal kinds (the welcome task) are refused to clients by the registry and by
    /// `enqueue`, named as internal, left out of the list of known kinds, and nothing is
    /// written; the kinds clients may create still are.
    @Test func internalKindsAreNotClientCreatable() async throws {
        let fixture = try await SchedulerFixture()
        let registry = fixture.scheduler.registry
        #expect(registry.kinds["welcome"]?.isInternal == true)
        #expect(registry.kinds["sleep"]?.isInternal == false)
        let payload: [String: JSONValue] = ["user_id": .number(1, integer: 1)]
        #expect(
            throws: TaskPayloadError(
                field: "kind",
                message: "task kind 'welcome' is internal: usersd creates these tasks itself, clients cannot"
            )
        ) { try registry.validate(kind: "welcome", payload: payload) }
        #expect(throws: TaskPayloadError(field: "kind", message: "unknown task kind 'nope' (known: gated, sleep)")) {
            try registry.validate(kind: "nope", payload: [:])
        }
        do {
            _ = try await fixture.scheduler.enqueue(kind: "welcome", payload: payload)
            Issue.record("enqueue accepted an internal kind")
        } catch let error as TaskPayloadError {
            #expect(error.field == "kind" && error.message.contains("internal"))
        }
        #expect(try await fixture.store.tasks(state: nil, afterID: 0, limit: 10).isEmpty)
        #expect(try await fixture.store.taskCounts().values.allSatisfy { $0 == 0 })
        #expect(try await fixture.enqueue("sleep") > 0)
    }

    /// The claim path leaves the tasks it is told to skip queued and takes the next due ones.
    @Test func claimAndNextDueTimeSkipTheTasksTheyAreToldTo() async throws {
        let fixture = try await SchedulerFixture()
        var ids: [Int64] = []
        for runAt: Int64 in [30, 10, 20, 40] {
            ids.append(
                try await fixture.store.enqueue(
                    NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: runAt), queueLimit: 10
                ).task.id)
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
        guard case .cancelled = try await store.cancel(id: claimed[2].id) else {
            Issue.record("not cancelled")
            return
        }
        #expect(try await store.markRetry(id: claimed[3].id, runAt: now, error: "again"))
        #expect(try await store.markCancelled(id: claimed[4].id))
        // A task that is not running any more is not moved, nor counted.
        #expect(try await store.markSucceeded(id: claimed[0].id, result: "{}") == false)

        // Welcome tasks: one run straight from the queue; one claimed, completed, and
        // completed again (that job throws and rolls back).
        let created = try await store.createUser(name: "Ann", email: "ann@x.io")
        let first = created.welcomeTaskID
        #expect(try await store.runQueuedWelcomes(ids: [first], now: WallClock.milliseconds()) == [first])
        let welcome = NewTask(
            kind: WelcomeTask.kind, payload: WelcomeTask.payload(userID: created.user.id), maxAttempts: 3, runAt: 0)
        let second = try await store.enqueue(welcome, queueLimit: 100).task.id
        #expect(try await store.claimDue(now: now, limit: 1).map(\.id) == [second])
        _ = try await store.completeWelcome(taskID: second, userID: created.user.id)
        await #expect(throws: TaskStoreError.notRunning) {
            try await store.completeWelcome(taskID: second, userID: created.user.id)
        }

        // A job that inserted (and counted) a task, then failed: both roll back.
        struct JobFailed: Error {}
        await #expect(throws: JobFailed.self) {
            try await fixture.database.write { connection in
                _ = try SQLiteStore.insertTask(
                    NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: 0), on: connection)
                throw JobFailed()
            }
        }

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
}
