import Scheduler
import Store
import Testing

@Suite struct TaskStateMachineTests {
    static let legal: [TaskState: [TaskEvent: TaskState]] = [
        .queued: [.claim: .running, .cancel: .cancelled],
        .running: [.succeed: .succeeded, .retry: .queued, .fail: .failed, .cancel: .cancelled, .requeue: .queued, .recover: .queued],
    ]

    @Test(arguments: TaskState.allCases)
    func everyTransitionIsLegalOrRejected(_ state: TaskState) {
        for event in TaskEvent.allCases {
            #expect(TaskStateMachine.next(from: state, on: event) == Self.legal[state]?[event], "\(state) on \(event)")
        }
    }

    @Test func finalStatesNeverMove() {
        for state in TaskState.allCases where state.isFinal {
            #expect(TaskEvent.allCases.allSatisfy { TaskStateMachine.next(from: state, on: $0) == nil })
        }
    }

    @Test func failureRetriesUntilAttemptsRunOut() {
        #expect(TaskStateMachine.afterFailure(attempts: 1, maxAttempts: 3) == .retry)
        #expect(TaskStateMachine.afterFailure(attempts: 2, maxAttempts: 3) == .retry)
        #expect(TaskStateMachine.afterFailure(attempts: 3, maxAttempts: 3) == .fail)
    }
}

@Suite struct RetryPolicyTests {
    @Test func doublesPerAttemptUpToTheCap() {
        let policy = RetryPolicy(baseMilliseconds: 1000, capMilliseconds: 10_000, jitter: 0.2)
        let delays = (1...6).map { policy.delay(afterAttempt: $0, random: 0.5) }
        #expect(delays == [1000, 2000, 4000, 8000, 10_000, 10_000])
    }

    @Test func jitterStaysWithinItsBounds() {
        let policy = RetryPolicy(baseMilliseconds: 1000, capMilliseconds: 10_000, jitter: 0.2)
        #expect(policy.delay(afterAttempt: 1, random: 0) == 800)
        #expect(policy.delay(afterAttempt: 1, random: 0.999_999) == 1200)
    }
}
