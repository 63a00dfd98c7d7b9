import Foundation
import JSON
import SQLite
import Scheduler
import Store
import Synchronization
import Testing

@testable import StoreSQLite

/// Failed attempts: back-off, then success or the last error.
@Suite struct RetryTests {
    @Test func retriesWithBackoffThenSucceeds() async throws {
        let flaky = TaskKind(
            name: "flaky", validate: { _ in "{}" },
            run: { context in
                if context.task.attempts < 3 { throw PlannedFailure() }
                return "{\"ok\":true}"
            })
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
        let broken = TaskKind(name: "broken", validate: { _ in "{}" }, run: { _ in throw PlannedFailure() })
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
}
