/// The life of a background task.
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
    /// A completion found its task no longer `running`; nothing was written.
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

/// The tasks table, independent of the database engine. Every state change is one
/// guarded write (`... WHERE state = <expected>`), so a transition that lost a race
/// changes nothing and returns `nil`/`false`.
public protocol TaskStore: Sendable {
    /// Inserts a task unless `limit` tasks are already queued. With an idempotency key
    /// that exists, returns the existing task and `created == false`.
    func enqueue(_ task: NewTask, queueLimit: Int) async throws -> (task: TaskRecord, created: Bool)
    func task(id: Int64) async throws -> TaskRecord?
    func tasks(state: TaskState?, afterID: Int64, limit: Int) async throws -> [TaskRecord]
    /// Moves up to `limit` due queued tasks (run_at ≤ now), oldest due first, to running,
    /// counting an attempt. The ids `skipping` returns (asked once, inside the write
    /// transaction) are left queued.
    func claimDue(now: Int64, limit: Int, skipping: (@Sendable () -> Set<Int64>)?) async throws -> [TaskRecord]
    /// The earliest run_at among queued tasks other than `skipping`.
    func nextRunAt(skipping: Set<Int64>) async throws -> Int64?
    func markSucceeded(id: Int64, result: String) async throws -> Bool
    /// Back to queued for another attempt at `runAt`, keeping the error.
    func markRetry(id: Int64, runAt: Int64, error: String) async throws -> Bool
    func markFailed(id: Int64, error: String) async throws -> Bool
    /// A running task stopped by request.
    func markCancelled(id: Int64) async throws -> Bool
    /// A running task stopped by shutdown: queued again, its attempt not counted.
    func requeue(id: Int64, now: Int64) async throws -> Bool
    /// Cancels a queued task at once, or reports what the task is doing.
    func cancel(id: Int64) async throws -> CancelOutcome
    /// At start-up: every `running` row was interrupted by a crash. Re-queues each
    /// (its attempt counts) or fails it when it has no attempts left. Returns the ids.
    func recoverInterrupted(now: Int64) async throws -> [Int64]
    /// How many tasks are in each state.
    func taskCounts() async throws -> [TaskState: Int]
    /// Completes a running welcome task in one transaction: writes the welcome message
    /// for the user into the outbox (once per user; nothing when the user no longer
    /// exists) and marks the task `succeeded` with `result(written)`; returns the result
    /// stored. Both happen or neither: when the task is no longer `running`, nothing is
    /// written and `TaskStoreError.notRunning` is thrown.
    func completeWelcome(taskID: Int64, userID: Int64, result: @escaping @Sendable (_ written: Bool) -> String)
        async throws -> String
    /// Runs the welcome tasks among `ids` that are still queued and due at `now` from
    /// start to finish in one transaction: each gets its outbox row (as `completeWelcome`)
    /// and goes straight to `succeeded` with its attempt counted and `result(written)`
    /// stored. Other ids (not welcome, not queued, not due, unknown) are skipped.
    /// Returns the ids run, in the order given.
    func runQueuedWelcomes(ids: [Int64], now: Int64, result: @escaping @Sendable (_ written: Bool) -> String)
        async throws -> [Int64]
}

extension TaskStore {
    /// Claims up to `limit` due queued tasks, skipping none.
    public func claimDue(now: Int64, limit: Int) async throws -> [TaskRecord] {
        try await claimDue(now: now, limit: limit, skipping: nil)
    }

    /// The earliest run_at among all queued tasks.
    public func nextRunAt() async throws -> Int64? {
        try await nextRunAt(skipping: [])
    }
}
