import Foundation
public import SQLite

extension SQLiteStore: TaskStore {
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
    public static func insertTask(_ task: NewTask, on connection: Connection) throws -> TaskRecord {
        let now = Timestamp.now()
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
    static func enqueue(_ task: NewTask, queueLimit: Int, on connection: Connection) throws -> (task: TaskRecord, created: Bool) {
        if let key = task.idempotencyKey {
            let existing = try connection.cached("SELECT \(Self.taskColumns) FROM tasks WHERE idempotency_key = ?")
            try existing.bind([.text(key)])
            defer { try? existing.run() }
            if try existing.step() { return (Self.task(from: existing), false) }
        }
        // The written count plus what this transaction's earlier jobs queued (their
        // sums are written only at the commit).
        let queued = (try connection.cached("SELECT count FROM task_counts WHERE state = 'queued'").firstInteger() ?? 0)
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
                    statement = try connection.cached("SELECT \(Self.taskColumns) FROM tasks WHERE id > ? ORDER BY id LIMIT ?")
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
                        WHERE id = ?2 RETURNING \(Self.taskColumns)
                        """
                    )
                    try claim.bind([.text(Timestamp.now()), .integer(id)])
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
                let queued = try connection.cached("SELECT id, run_at FROM tasks WHERE state = 'queued' ORDER BY run_at, id LIMIT ?")
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
                try connection.cached(sql).bind([.text(Timestamp.now())] + values).run()
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
                try update.bind([.text(Timestamp.now()), .integer(id)])
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
                let stamp = Timestamp.now()
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

    public func completeWelcome(
        taskID: Int64, userID: Int64, result: @escaping @Sendable (_ written: Bool) -> String
    ) async throws -> String {
        try await mapErrors {
            try await database.write { connection in
                let stamp = Timestamp.now()
                let text = result(try Self.writeWelcome(userID: userID, now: stamp, on: connection))
                try connection.cached(
                    "UPDATE tasks SET state = 'succeeded', result = ?2, finished_at = ?1, updated_at = ?1 WHERE id = ?3 AND state = 'running'"
                ).bind([.text(stamp), .text(text), .integer(taskID)]).run()
                // Not running any more: throwing rolls this job back, outbox included.
                guard connection.changes > 0 else { throw TaskStoreError.notRunning }
                try TaskCounts.move(from: .running, to: .succeeded, on: connection)
                return text
            }
        }
    }

    public func runQueuedWelcomes(
        ids: [Int64], now: Int64, result: @escaping @Sendable (_ written: Bool) -> String
    ) async throws -> [Int64] {
        var seen = Set<Int64>(minimumCapacity: ids.count)
        let unique = ids.filter { seen.insert($0).inserted }
        guard !unique.isEmpty else { return [] }
        let idArray = Self.jsonArray(unique)
        let written = result(true)
        let gone = result(false)
        return try await mapErrors {
            try await database.write { connection in
                // Which tasks run, and whether their user still exists, in the order given.
                var runnable: [(id: Int64, userExists: Bool)] = []
                try connection.cached(Self.runnableWelcomesSQL).bind([.text(idArray), .integer(now)]).forEachRow {
                    runnable.append(($0.integer(0), $0.integer(1) != 0))
                }
                guard !runnable.isEmpty else { return [] }
                let stamp = Timestamp.now()
                try connection.cached(Self.welcomeOutboxSQL).bind([.text(idArray), .integer(now), .text(stamp)]).run()
                // One UPDATE per result, not per task (usually all users exist: one).
                for (userExists, text) in [(true, written), (false, gone)] {
                    let ids = runnable.filter { $0.userExists == userExists }.map(\.id)
                    guard !ids.isEmpty else { continue }
                    // All of the batch's ids, in their order: the array already built.
                    let array = ids.count == unique.count ? idArray : Self.jsonArray(ids)
                    try connection.cached(Self.succeedWelcomesSQL)
                        .bind([.text(text), .text(stamp), .text(array)]).run()
                }
                try TaskCounts.move(runnable.count, from: .queued, to: .succeeded, on: connection)
                return runnable.map(\.id)
            }
        }
    }

    // The set statements of `runQueuedWelcomes`, for a whole batch: ?1 the task ids as
    // a JSON array, ?2 now, ?3 the timestamp. A task runs when it is a welcome, queued,
    // due, and its user_id is an integer (json_extract gives INTEGER for exactly those
    // that fit Int64); a payload without one is left to the claim path, which fails it.
    // The ids drive the join (CROSS JOIN fixes the order, and the unary `+` keeps SQLite
    // from reaching the tasks through tasks_due, a scan of the whole backlog), so each
    // task is one rowid lookup and no temporary b-tree is built. Per task that leaves
    // one UPDATE; before, it took four statements.

    /// The runnable tasks among the ids, each with 1 when its user exists.
    static let runnableWelcomesSQL = """
        SELECT t.id, u.id IS NOT NULL
        FROM json_each(?1) j CROSS JOIN tasks t ON t.id = j.value
            LEFT JOIN users u ON u.id = json_extract(t.payload, '$.user_id')
        WHERE +t.kind = 'welcome' AND +t.state = 'queued' AND +t.run_at <= ?2
            AND typeof(json_extract(t.payload, '$.user_id')) = 'integer'
        """

    /// Marks runnable tasks (?3, a JSON array of ids) succeeded with result ?1 at ?2.
    static let succeedWelcomesSQL = """
        UPDATE tasks SET state = 'succeeded', attempts = attempts + 1, result = ?1, started_at = ?2,
            finished_at = ?2, updated_at = ?2
        FROM json_each(?3) j WHERE tasks.id = j.value
        """

    static func jsonArray(_ ids: [Int64]) -> String {
        "[" + ids.map(String.init).joined(separator: ",") + "]"
    }

    /// Their outbox rows, for the users that still exist.
    static let welcomeOutboxSQL = """
        INSERT INTO outbox (user_id, recipient, subject, body, created_at)
        SELECT \(welcomeMessage), ?3
        FROM json_each(?1) j CROSS JOIN tasks t ON t.id = j.value
            CROSS JOIN users u ON u.id = json_extract(t.payload, '$.user_id')
        WHERE +t.kind = 'welcome' AND +t.state = 'queued' AND +t.run_at <= ?2
            AND typeof(json_extract(t.payload, '$.user_id')) = 'integer'
        ON CONFLICT (user_id) DO NOTHING
        """

    /// The outbox row of a welcome for the user `u` (columns user_id, recipient,
    /// subject and body), shared by both ways a welcome runs.
    static let welcomeMessage = "u.id, u.email, 'Welcome to usersd', 'Hello ' || u.name || ', your account is ready.'"

    /// Writes the welcome message for `userID` into the outbox inside an open write
    /// transaction; false when the user no longer exists. A user never gets a second
    /// row (UNIQUE(user_id) + DO NOTHING).
    static func writeWelcome(userID: Int64, now: String, on connection: Connection) throws -> Bool {
        try connection.cached(
            """
            INSERT INTO outbox (user_id, recipient, subject, body, created_at)
            SELECT \(welcomeMessage), ?2 FROM users u WHERE u.id = ?1
            ON CONFLICT (user_id) DO NOTHING
            """
        ).bind([.integer(userID), .text(now)]).run()
        if connection.changes > 0 { return true }
        // No row: the user is gone, or already has one.
        let user = try connection.cached("SELECT 1 FROM users WHERE id = ?")
        try user.bind([.integer(userID)])
        defer { user.reset() }
        return try user.step()
    }
}
