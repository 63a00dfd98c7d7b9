public import Store

/// The legal moves of a task, in one place. The scheduler asks it before persisting
/// a change; the store's guarded updates (`WHERE state = ...`) enforce the same rules.
///
///     queued  --claim-->   running
///     queued  --cancel-->  cancelled
///     running --succeed--> succeeded
///     running --retry-->   queued      (attempts left; back-off)
///     running --fail-->    failed      (no attempts left)
///     running --cancel-->  cancelled   (DELETE while running)
///     running --requeue--> queued      (graceful shutdown; attempt not counted)
///     running --recover--> queued      (found running at start-up: crash)
public enum TaskEvent: Sendable, Equatable, CaseIterable {
    case claim, succeed, retry, fail, cancel, requeue, recover
}

public enum TaskStateMachine {
    /// The state after `event`, or `nil` when the move is illegal.
    public static func next(from state: TaskState, on event: TaskEvent) -> TaskState? {
        switch (state, event) {
        case (.queued, .claim): .running
        case (.queued, .cancel): .cancelled
        case (.running, .succeed): .succeeded
        case (.running, .retry): .queued
        case (.running, .fail): .failed
        case (.running, .cancel): .cancelled
        case (.running, .requeue): .queued
        case (.running, .recover): .queued
        default: nil
        }
    }

    /// What a failed attempt leads to: another try, or the end.
    public static func afterFailure(attempts: Int, maxAttempts: Int) -> TaskEvent {
        attempts < maxAttempts ? .retry : .fail
    }
}
