import Foundation
import JSON
import SQLite
import Store
import Synchronization
import Testing

@testable import Scheduler

/// Cancelling queued and running tasks.
@Suite struct CancelTests {
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
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    /// The task finishes while the cancel's database call runs (it saw `running`): the
    /// answer is the task's final state, `alreadyFinished` with `succeeded` (the route's
    /// 409), not a 202 for a task that no longer runs, and nothing is left pending.
    @Test(.timeLimit(.minutes(1))) func cancelThatMeetsTheTaskFinishingAnswersItsFinalState() async throws {
        let fixture = try await SchedulerFixture(throughHoldingStore: true)
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("gated")
        #expect(await next(&events) { $0 == .started(id) } != nil)
        fixture.holding.holdNextCancel()
        async let outcome = fixture.scheduler.cancel(id: id)
        await fixture.holding.cancelReturned.wait()
        #expect(try await fixture.state(id) == .running)  // what the held cancel saw
        fixture.gate.open()
        #expect(await next(&events) { if case .finished = $0 { true } else { false } } == .finished(id, .succeeded))
        fixture.holding.releaseCancel.open()
        let answer = try await outcome
        guard case .alreadyFinished(let task) = answer else {
            Issue.record("expected alreadyFinished, got \(answer)")
            return
        }
        #expect(task.id == id && task.state == .succeeded)
        #expect(await fixture.scheduler.pendingCancellationCount == 0)
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    /// The attempt fails while the cancel's database call runs, and is retried (queued
    /// again): the cancel then cancels the queued task.
    @Test(.timeLimit(.minutes(1))) func cancelThatMeetsARetryCancelsTheRequeuedTask() async throws {
        let failing = Gate()
        let failsOnce = TaskKind(
            name: "failsOnce", validate: { _ in "{}" },
            run: { _ in
                await failing.wait()
                throw PlannedFailure()
            })
        let fixture = try await SchedulerFixture(maxAttempts: 3, extraKinds: [failsOnce], throughHoldingStore: true)
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("failsOnce")
        #expect(await next(&events) { $0 == .started(id) } != nil)
        fixture.holding.holdNextCancel()
        async let outcome = fixture.scheduler.cancel(id: id)
        await fixture.holding.cancelReturned.wait()
        failing.open()
        let retried = await next(&events) { if case .retried = $0 { true } else { false } }
        #expect(retried == .retried(id, runAt: fixture.clock.now() + 1000))
        fixture.holding.releaseCancel.open()
        let answer = try await outcome
        guard case .cancelled(let task) = answer else {
            Issue.record("expected cancelled, got \(answer)")
            return
        }
        #expect(task.state == .cancelled && task.attempts == 1 && task.lastError == "planned failure")
        #expect(await next(&events) { if case .finished = $0 { true } else { false } } == .finished(id, .cancelled))
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    /// A cancel that comes after the claim committed the task as `running` but before
    /// the scheduler launched it waits for the launch, which stops the task at once:
    /// the answer is `cancelled` (not a 202), and nothing is left pending.
    @Test(.timeLimit(.minutes(1))) func cancelOfAClaimedTaskNotYetLaunchedCancelsIt() async throws {
        let fixture = try await SchedulerFixture(throughHoldingStore: true)
        var events = fixture.events.makeAsyncIterator()
        fixture.holding.holdNextClaim()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("sleep", ["seconds": .number(3600, integer: 3600)])
        await fixture.holding.claimReturned.wait()
        #expect(try await fixture.state(id) == .running)
        #expect(await fixture.scheduler.runningCount == 0)
        async let outcome = fixture.scheduler.cancel(id: id)
        await waitUntil { await fixture.scheduler.pendingCancellationCount == 1 }
        fixture.holding.releaseClaim.open()
        let answer = try await outcome
        guard case .cancelled(let task) = answer else {
            Issue.record("expected cancelled, got \(answer)")
            return
        }
        #expect(task.state == .cancelled && task.attempts == 1)
        #expect(await events.next(isolation: #isolation) == .recovered([]))
        #expect(await events.next(isolation: #isolation) == .started(id))
        #expect(await events.next(isolation: #isolation) == .finished(id, .cancelled))
        #expect(await fixture.scheduler.pendingCancellationCount == 0)
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }

    /// A task that ignores the cancel and succeeds ends `succeeded`; the cancel's mark is
    /// dropped with the attempt all the same.
    @Test(.timeLimit(.minutes(1))) func taskThatSucceedsDespiteACancelLeavesNothingPending() async throws {
        let fixture = try await SchedulerFixture()
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("gated")  // its gate does not listen to cancellation
        #expect(await next(&events) { $0 == .started(id) } != nil)
        async let outcome = fixture.scheduler.cancel(id: id)
        await waitUntil { await fixture.scheduler.pendingCancellationCount == 1 }
        fixture.gate.open()
        let answer = try await outcome
        guard case .alreadyFinished(let task) = answer else {
            Issue.record("expected alreadyFinished, got \(answer)")
            return
        }
        #expect(task.state == .succeeded)
        #expect(await fixture.scheduler.pendingCancellationCount == 0)
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }
}
