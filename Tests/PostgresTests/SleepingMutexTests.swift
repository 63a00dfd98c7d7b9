import Dispatch
import Testing

@testable import Postgres

/// `SleepingMutex`: one taker at a time, whatever the number of threads.
@Suite struct SleepingMutexTests {
    @Test func concurrentTakersNeverOverlap() {
        struct Counts: Sendable {
            var total = 0
            var inside = 0
            var overlaps = 0
        }
        let counts = SleepingMutex(Counts())
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            for _ in 0..<5_000 {
                counts.withLock { counts in
                    counts.inside += 1
                    if counts.inside > 1 { counts.overlaps += 1 }
                    counts.total += 1
                    counts.inside -= 1
                }
            }
        }
        let final = counts.withLock { $0 }
        #expect(final.total == 80_000)
        #expect(final.overlaps == 0)
    }

    @Test func aThrowingBodyLeavesTheLockFree() {
        struct Refused: Error {}
        let value = SleepingMutex(1)
        #expect(throws: Refused.self) { try value.withLock { _ in throw Refused() } }
        #expect(value.withLock { $0 } == 1)
    }
}
