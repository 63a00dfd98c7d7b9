import Foundation
import JSON
import SQLite
import Store
import Synchronization
import Testing

@testable import Scheduler
@testable import StoreSQLite

/// Graceful shutdown and the start-up recovery of tasks a crash left running.
@Suite struct ShutdownAndRecoveryTests {
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

    /// A task that ignores shutdown's cancel and succeeds ends `succeeded`, and shutdown's
    /// mark is dropped with the attempt.
    @Test(.timeLimit(.minutes(1))) func taskThatSucceedsDespiteShutdownLeavesNothingBehind() async throws {
        let fixture = try await SchedulerFixture()
        var events = fixture.events.makeAsyncIterator()
        try await fixture.scheduler.start()
        let id = try await fixture.enqueue("gated")  // its gate does not listen to cancellation
        #expect(await next(&events) { $0 == .started(id) } != nil)
        async let stopped: Void = fixture.scheduler.shutdown(graceMilliseconds: 0)
        await waitUntil { await fixture.scheduler.bookkeeping.stoppedByShutdown == 1 }
        fixture.gate.open()
        await stopped
        #expect(try await fixture.state(id) == .succeeded)
        #expect(await fixture.scheduler.bookkeeping == TaskScheduler.Bookkeeping())
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
}
