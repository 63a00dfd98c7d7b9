import Foundation
import HTTP
import SQLite
import Scheduler
import Store
import Synchronization
import Testing

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
        await fixture.scheduler.shutdown(graceMilliseconds: 0)
    }
}
