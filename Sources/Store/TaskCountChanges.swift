import SQLite

/// What one write job did to the number of tasks in each state, written to
/// `task_counts` by that job itself, in its own transaction, once per state it changed.
///
/// `task_counts` lets the queue bound and the metrics read five rows instead of
/// counting the tasks table. Until migration 6, triggers kept it exact row by row; a
/// job that moves many tasks (a batch of welcome completions, a claim) now writes one
/// update per state instead of two per row. Every statement that inserts a task or
/// changes its state records the move here and the job ends with `write(on:)`, so the
/// counts commit or roll back with the rows they count.
struct TaskCountChanges {
    private var queued = 0, running = 0, succeeded = 0, failed = 0, cancelled = 0

    /// `count` tasks left `from` (nil: they are new) and are now in `to`.
    mutating func move(_ count: Int = 1, from: TaskState?, to: TaskState) {
        guard count != 0 else { return }
        if let from { self[from] -= count }
        self[to] += count
    }

    private subscript(state: TaskState) -> Int {
        get {
            switch state {
            case .queued: queued
            case .running: running
            case .succeeded: succeeded
            case .failed: failed
            case .cancelled: cancelled
            }
        }
        set {
            switch state {
            case .queued: queued = newValue
            case .running: running = newValue
            case .succeeded: succeeded = newValue
            case .failed: failed = newValue
            case .cancelled: cancelled = newValue
            }
        }
    }

    /// Applies the changes inside the caller's open write transaction.
    func write(on connection: Connection) throws {
        for state in TaskState.allCases {
            let delta = self[state]
            guard delta != 0 else { continue }
            try connection.cached("UPDATE task_counts SET count = count + ?1 WHERE state = ?2")
                .bind([.integer(Int64(delta)), .text(state.rawValue)]).run()
        }
    }
}
