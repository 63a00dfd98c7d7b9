import Basics
import SQLite
public import Store

/// The task queue: every state change is one guarded UPDATE (`... WHERE state = <expected>`)
/// whose count moves go to `TaskCounts` in the same transaction.
extension SQLiteStore {
    static let taskColumns =
        "id, kind, payload, state, attempts, max_attempts, run_at, created_at, started_at, finished_at, last_error, result, idempotency_key"

    static func task(from row: Statement) -> TaskRecord {
        TaskRecord(
            id: row.integer(0), kind: row.text(1), payload: row.text(2),
            state: TaskState(rawValue: row.text(3)) ?? .failed,
            attempts: Int(row.integer(4)), maxAttempts: Int(row.integer(5)), runAt: row.integer(6),
            createdAt: row.text(7), startedAt: row.optionalText(8), finishedAt: row.optionalText(9),
            lastError: row.optionalText(10), result: row.optionalText(11), idempotencyKey: row.optionalText(12)
        )
    }

    /// Inserts a task inside an open write transaction (used by `enqueue` and by the
    /// user insert, which enqueues the welcome task in the same transaction).
    static func insertTask(_ task: NewTask, on connection: Connection) throws -> TaskRecord {
        let now = UTCTimestamp.now()
        try connection.cached(
            """
            INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, idempotency_key)
            VALUES (?1, ?2, 'queued', 0, ?3, ?4, ?5, ?5, ?6)
            """
        ).bind([
            .text(task.kind), .text(task.payload), .integer(Int64(task.maxAttempts)), .integer(task.runAt), .text(now),
            task.idempotencyKey.map { .text($0) } ?? .null,
        ]).run()
        let id = connection.lastInsertRowID
        try TaskCounts.move(from: nil, to: .queued, on: connection)
        return TaskRecord(
            id: id, kind: task.kind, payload: task.payload, state: .queued, attempts: 0,
            maxAttempts: task.maxAttempts, runAt: task.runAt, createdAt: now, startedAt: nil, finishedAt: nil,
            lastError: nil, result: nil, idempotencyKey: task.idempotencyKey
        )
    }

    public func enqueue(_ task: NewTask, queueLimit: Int) async throws -> (task: TaskRecord, created: Bool) {
        try await mapErrors {
            try await database.write { connection in
                try Self.enqueue(task, queueLimit: queueLimit, on: connection)
            }
        }
    }

    /// `enqueue` inside an open write transaction.
    static func enqueue(
        _ task: NewTask, queueLimit: Int, on connection: Connection
    ) throws -> (task: TaskRecord, created: Bool) {
        if let key = task.idempotencyKey {
            let existing = try connection.cached("SELECT \(Self.taskColumns) FROM tasks WHERE idempotency_key = ?")
            try existing.bind([.text(key)])
            defer { try? existing.run() }
            if try existing.step() { return (Self.task(from: existing), false) }
        }
        // The written count plus what this transaction's earlier jobs queued (their
        // sums are written only at the commit).
        let queued =
            (try connection.cached("SELECT count FROM task_counts WHERE state = 'queued'").firstInteger() ?? 0)
            + Int64(TaskCounts.unwritten(.queued, on: connection))
        guard queued < queueLimit else { throw TaskStoreError.queueFull }
        return (try Self.insertTask(task, on: connection), true)
    }

    public func task(id: Int64) async throws -> TaskRecord? {
        try await mapErrors {
            try await database.read { connection in
                let statement = try connection.cached("SELECT \(Self.taskColumns) FROM tasks WHERE id = ?")
                try statement.bind([.integer(id)])
                defer { try? statement.run() }
                return try statement.step() ? Self.task(from: statement) : nil
            }
        }
    }

    public func tasks(state: TaskState?, afterID: Int64, limit: Int) async throws -> [TaskRecord] {
        try await mapErrors {
            try await database.read { connection in
                let statement: Statement
                if let state {
                    statement = try connection.cached(
                        "SELECT \(Self.taskColumns) FROM tasks WHERE state = ? AND id > ? ORDER BY id LIMIT ?")
                    try statement.bind([.text(state.rawValue), .integer(afterID), .integer(Int64(limit))])
                } else {
                    statement = try connection.cached(
                        "SELECT \(Self.taskColumns) FROM tasks WHERE id > ? ORDER BY id LIMIT ?")
                    try statement.bind([.integer(afterID), .integer(Int64(limit))])
                }
                var records: [TaskRecord] = []
                try statement.forEachRow { records.append(Self.task(from: $0)) }
                return records
            }
        }
    }

    public func claimDue(now: Int64, limit: Int, skipping: (@Sendable () -> Set<Int64>)?) async throws -> [TaskRecord] {
        try await mapErrors {
            try await database.write { connection in
                let skipped = skipping?() ?? []
                // At most `skipped.count` of the rows read are passed over: the scan stays short.
                let due = try connection.cached(
                    "SELECT id FROM tasks WHERE state = 'queued' AND run_at <= ? ORDER BY run_at, id LIMIT ?")
                try due.bind([.integer(now), .integer(Int64(limit + skipped.count))])
                var ids: [Int64] = []
                while ids.count < limit, try due.step() {
                    let id = due.integer(0)
                    if !skipped.contains(id) { ids.append(id) }
                }
                due.reset()
                var records: [TaskRecord] = []
                for id in ids {
                    let claim = try connection.cached(
                        """
                        UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = ?1, updated_at = ?1
                        WHERE id = ?2 AND state = 'queued' RETURNING \(Self.taskColumns)
                        """
                    )
                    try claim.bind([.text(UTCTimestamp.now()), .integer(id)])
                    if try claim.step() { records.append(Self.task(from: claim)) }
                    try claim.run()
                }
                try TaskCounts.move(records.count, from: .queued, to: .running, on: connection)
                return records
            }
        }
    }

    public func nextRunAt(skipping: Set<Int64>) async throws -> Int64? {
        try await mapErrors {
            try await database.read { connection in
                guard !skipping.isEmpty else {
                    return try connection.cached("SELECT min(run_at) FROM tasks WHERE state = 'queued'").firstInteger()
                }
                let queued = try connection.cached(
                    "SELECT id, run_at FROM tasks WHERE state = 'queued' ORDER BY run_at, id LIMIT ?")
                try queued.bind([.integer(Int64(skipping.count + 1))])
                defer { queued.reset() }
                while try queued.step() {
                    if !skipping.contains(queued.integer(0)) { return queued.integer(1) }
                }
                return nil
            }
        }
    }

    /// Runs one state change of a running task to `to`, whose SQL takes the time of
    /// the change as `?1` and `values` as `?2`…; true when a row changed.
    private func transition(to state: TaskState, _ sql: String, _ values: [Statement.Value]) async throws -> Bool {
        try await mapErrors {
            try await database.write { connection in
                try connection.cached(sql).bind([.text(UTCTimestamp.now())] + values).run()
                guard connection.changes > 0 else { return false }
                try TaskCounts.move(from: .running, to: state, on: connection)
                return true
            }
        }
    }

    public func markSucceeded(id: Int64, result: String) async throws -> Bool {
        try await transition(
            to: .succeeded,
            "UPDATE tasks SET state = 'succeeded', result = ?2, finished_at = ?1, updated_at = ?1 WHERE id = ?3 AND state = 'running'",
            [.text(result), .integer(id)])
    }

    public func markRetry(id: Int64, runAt: Int64, error: String) async throws -> Bool {
        try await transition(
            to: .queued,
            "UPDATE tasks SET state = 'queued', run_at = ?2, last_error = ?3, updated_at = ?1 WHERE id = ?4 AND state = 'running'",
            [.integer(runAt), .text(error), .integer(id)])
    }

    public func markFailed(id: Int64, error: String) async throws -> Bool {
        try await transition(
            to: .failed,
            "UPDATE tasks SET state = 'failed', last_error = ?2, finished_at = ?1, updated_at = ?1 WHERE id = ?3 AND state = 'running'",
            [.text(error), .integer(id)])
    }

    public func markCancelled(id: Int64) async throws -> Bool {
        try await transition(
            to: .cancelled,
            "UPDATE tasks SET state = 'cancelled', finished_at = ?1, updated_at = ?1 WHERE id = ?2 AND state = 'running'",
            [.integer(id)])
    }

    public func requeue(id: Int64, now: Int64) async throws -> Bool {
        try await transition(
            to: .queued,
            "UPDATE tasks SET state = 'queued', run_at = ?2, attempts = max(attempts - 1, 0), updated_at = ?1 WHERE id = ?3 AND state = 'running'",
            [.integer(now), .integer(id)])
    }

    public func cancel(id: Int64) async throws -> CancelOutcome {
        try await mapErrors {
            try await database.write { connection in
                let update = try connection.cached(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ?1, updated_at = ?1 WHERE id = ?2 AND state = 'queued' RETURNING \(Self.taskColumns)"
                )
                try update.bind([.text(UTCTimestamp.now()), .integer(id)])
                if try update.step() {
                    let record = Self.task(from: update)
                    try update.run()
                    try TaskCounts.move(from: .queued, to: .cancelled, on: connection)
                    return .cancelled(record)
                }
                let select = try connection.cached("SELECT \(Self.taskColumns) FROM tasks WHERE id = ?")
                try select.bind([.integer(id)])
                defer { try? select.run() }
                guard try select.step() else { return .notFound }
                let record = Self.task(from: select)
                return record.state == .running ? .running(record) : .alreadyFinished(record)
            }
        }
    }

    public func recoverInterrupted(now: Int64) async throws -> [Int64] {
        try await mapErrors {
            try await database.write { connection in
                var ids: [Int64] = []
                let stamp = UTCTimestamp.now()
                try connection.prepare(
                    "UPDATE tasks SET state = 'failed', last_error = 'interrupted by a restart with no attempts left', finished_at = ?1, updated_at = ?1 WHERE state = 'running' AND attempts >= max_attempts RETURNING id"
                ).bind([.text(stamp)]).forEachRow { ids.append($0.integer(0)) }
                try TaskCounts.move(ids.count, from: .running, to: .failed, on: connection)
                let failed = ids.count
                try connection.prepare(
                    "UPDATE tasks SET state = 'queued', run_at = ?2, last_error = 'interrupted by a restart', updated_at = ?1 WHERE state = 'running' RETURNING id"
                ).bind([.text(stamp), .integer(now)]).forEachRow { ids.append($0.integer(0)) }
                try TaskCounts.move(ids.count - failed, from: .running, to: .queued, on: connection)
                return ids
            }
        }
    }

    public func taskCounts() async throws -> [TaskState: Int] {
        try await mapErrors {
            try await database.read { connection in
                var counts: [TaskState: Int] = [:]
                try connection.cached("SELECT state, count FROM task_counts").forEachRow { row in
                    if let state = TaskState(rawValue: row.text(0)) { counts[state] = Int(row.integer(1)) }
                }
                return counts
            }
        }
    }
}
