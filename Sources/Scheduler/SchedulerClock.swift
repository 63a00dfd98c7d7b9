import Basics
import Synchronization

/// Time for the scheduler, injectable so tests control it.
public protocol SchedulerClock: Sendable {
    /// Milliseconds since the Unix epoch.
    func now() -> Int64
    /// Suspends until `now() >= deadline`, or throws when cancelled.
    func sleep(until deadline: Int64) async throws
}

/// The real clock.
public struct SystemClock: SchedulerClock {
    public init() {}

    public func now() -> Int64 {
        WallClock.milliseconds()
    }

    public func sleep(until deadline: Int64) async throws {
        let delay = deadline - now()
        if delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
    }
}

/// A clock that only moves when a test calls `advance(by:)`.
public final class ManualClock: SchedulerClock {
    private struct Sleeper {
        let deadline: Int64
        let continuation: CheckedContinuation<Void, any Error>
        let id: Int
    }

    private struct State {
        var now: Int64
        var sleepers: [Sleeper] = []
        var nextID = 0
    }

    private let state: Mutex<State>

    public init(now: Int64 = 1_700_000_000_000) {
        state = Mutex(State(now: now))
    }

    public func now() -> Int64 { state.withLock { $0.now } }

    public func advance(by milliseconds: Int64) {
        let due = state.withLock { state -> [Sleeper] in
            state.now += milliseconds
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    public func sleep(until deadline: Int64) async throws {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { state -> Bool in
                    if Task.isCancelled || state.now >= deadline { return true }
                    state.sleepers.append(Sleeper(deadline: deadline, continuation: continuation, id: id))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            try Task.checkCancellation()
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}
