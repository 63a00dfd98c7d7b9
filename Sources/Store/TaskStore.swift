/// The task queue, whatever database holds it. The scheduler depends on this
/// protocol only.
///
/// What every backend keeps:
/// - Every state change is one guarded write (`... WHERE state = <expected>`), so a
///   move that lost a race changes nothing and returns `false`; it commits before
///   it returns, and the scheduler reports nothing it has not stored.
/// - A task is claimed by one process at a time: `claimDue` moves rows from `queued`
///   to `running` atomically, so no task is run twice by two claims.
/// - `recoverInterrupted` runs once at start-up. A backend whose database only this
///   process serves (SQLite: one process per file, see `ServingLock`) may take every
///   `running` row for one a crash interrupted; a backend shared by several processes
///   must touch only rows whose owner is gone.
/// - The counts by state and the queue bound need not be exact across processes at
///   every instant, but never drift: each move is counted in the transaction that
///   makes it.
public protocol TaskStore: Sendable {
    /// Inserts a task unless `limit` tasks are already queued. With an idempotency key
    /// that exists, returns the existing task and `created == false`.
    func enqueue(_ task: NewTask, queueLimit: Int) async throws -> (task: TaskRecord, created: Bool)
    func task(id: Int64) async throws -> TaskRecord?
    func tasks(state: TaskState?, afterID: Int64, limit: Int) async throws -> [TaskRecord]
    /// Moves up to `limit` due queued tasks (run_at ≤ now), oldest due first, to running,
    /// counting an attempt. The ids `skipping` returns (asked once, inside the claim's
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
    /// At start-up: re-queues the tasks a crash left `running` (their attempt counts) or
    /// fails those with no attempts left. Returns their ids. See the type's notes on
    /// which rows a backend may take for interrupted.
    func recoverInterrupted(now: Int64) async throws -> [Int64]
    /// How many tasks are in each state.
    func taskCounts() async throws -> [TaskState: Int]
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
