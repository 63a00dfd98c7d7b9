import SQLite
import Store

/// `task_counts`: the number of tasks in each state, so that the queue bound and the
/// metrics read five rows instead of counting the tasks table.
///
/// Every statement that inserts a task or changes its state reports the move with
/// `move(_:from:to:on:)` in the same job (not a trigger per row). The moves go into
/// the transaction's `CommitTally`, which keeps a job's moves only when the job
/// succeeds and writes one update per state changed for the whole group commit, just
/// before it commits: the counts commit or roll back with the rows they count.
enum TaskCounts {
    /// `count` tasks left `from` (nil: they are new) and are now in `to`.
    static func move(_ count: Int = 1, from: TaskState?, to: TaskState, on connection: Connection) throws {
        guard count != 0 else { return }
        if let from { try connection.add(-count, to: slot(from), of: tally) }
        try connection.add(count, to: slot(to), of: tally)
    }

    /// The change to `state` that the open transaction has not written yet.
    static func unwritten(_ state: TaskState, on connection: Connection) -> Int {
        connection.unwritten(slot(state), of: tally)
    }

    private static let states = TaskState.allCases

    /// The tally's slot of `state`.
    private static func slot(_ state: TaskState) -> Int {
        switch state {
        case .queued: 0
        case .running: 1
        case .succeeded: 2
        case .failed: 3
        case .cancelled: 4
        }
    }

    private static let tally = CommitTally(name: "task_counts", slots: states.count) { connection, sums in
        for state in states where sums[slot(state)] != 0 {
            try connection.cached("UPDATE task_counts SET count = count + ?1 WHERE state = ?2")
                .bind([.integer(Int64(sums[slot(state)])), .text(state.rawValue)]).run()
        }
    }
}
