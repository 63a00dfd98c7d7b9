import SQLite

/// What one write job did to the number of tasks in each state, for `task_counts`.
///
/// `task_counts` lets the queue bound and the metrics read five rows instead of
/// counting the tasks table. Until migration 6, triggers kept it exact row by row (three
/// updates per task that is created and finished). Now every statement that inserts a
/// task or changes its state records the move here, and the job ends with
/// `write(on:)`: the sums go into the transaction's `CommitTally`, which writes one
/// update per state changed for the whole group commit, just before it commits. So the
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

    /// Adds the changes to the open write transaction's tally.
    func write(on connection: Connection) throws {
        for (slot, state) in Self.states.enumerated() {
            try connection.add(self[state], to: slot, of: Self.tally)
        }
    }

    private static let states = TaskState.allCases

    /// The change to `state` that the open transaction has not written yet.
    static func unwritten(_ state: TaskState, on connection: Connection) -> Int {
        connection.unwritten(states.firstIndex(of: state)!, of: tally)
    }

    /// `task_counts`, one slot per state in `TaskState.allCases` order.
    static let tally = CommitTally(name: "task_counts", slots: TaskState.allCases.count) { connection, sums in
        for (slot, state) in Self.states.enumerated() where sums[slot] != 0 {
            try connection.cached("UPDATE task_counts SET count = count + ?1 WHERE state = ?2")
                .bind([.integer(Int64(sums[slot])), .text(state.rawValue)]).run()
        }
    }
}
