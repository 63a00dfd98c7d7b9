/// The life of a background task. Its legal moves:
///
///     queued  --claim-->   running
///     queued  --cancel-->  cancelled
///     running --succeed--> succeeded
///     running --retry-->   queued      (attempts left; after a back-off)
///     running --fail-->    failed      (no attempts left)
///     running --cancel-->  cancelled   (DELETE while running)
///     running --requeue--> queued      (graceful shutdown; the attempt is not counted)
///     running --recover--> queued      (found interrupted at start-up)
///
/// The store makes each move with one guarded write (`WHERE state = <from>`).
public enum TaskState: String, Sendable, CaseIterable {
    case queued, running, succeeded, failed, cancelled

    /// Finished tasks never change again.
    public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

/// A task row.
public struct TaskRecord: Sendable, Equatable {
    public var id: Int64
    public var kind: String
    /// The payload as compact JSON text.
    public var payload: String
    public var state: TaskState
    public var attempts: Int
    public var maxAttempts: Int
    /// When the task may run next, in milliseconds since the Unix epoch.
    public var runAt: Int64
    public var createdAt: String
    public var startedAt: String?
    public var finishedAt: String?
    public var lastError: String?
    /// The result as JSON text, once succeeded.
    public var result: String?
    public var idempotencyKey: String?

    public init(
        id: Int64, kind: String, payload: String, state: TaskState, attempts: Int, maxAttempts: Int, runAt: Int64,
        createdAt: String, startedAt: String? = nil, finishedAt: String? = nil, lastError: String? = nil,
        result: String? = nil, idempotencyKey: String? = nil
    ) {
        self.id = id
        self.kind = kind
        self.payload = payload
        self.state = state
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.runAt = runAt
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.lastError = lastError
        self.result = result
        self.idempotencyKey = idempotencyKey
    }
}

/// A task to insert.
public struct NewTask: Sendable, Equatable {
    public var kind: String
    public var payload: String
    public var maxAttempts: Int
    public var runAt: Int64
    public var idempotencyKey: String?

    public init(kind: String, payload: String, maxAttempts: Int, runAt: Int64, idempotencyKey: String? = nil) {
        self.kind = kind
        self.payload = payload
        self.maxAttempts = maxAttempts
        self.runAt = runAt
        self.idempotencyKey = idempotencyKey
    }
}

/// Task-store failures handlers map to statuses.
public enum TaskStoreError: Error, Sendable, Equatable {
    /// More than the configured number of tasks are queued (503 + Retry-After).
    case queueFull
    /// A completion found its task no longer `running` (by this attempt); nothing was
    /// written.
    case notRunning
}

/// What a cancel request found.
public enum CancelOutcome: Sendable, Equatable {
    case cancelled(TaskRecord)
    /// The task is running: the scheduler must stop its Swift task.
    case running(TaskRecord)
    case alreadyFinished(TaskRecord)
    case notFound
}
