import Basics
import Postgres
public import Store
import Synchronization

/// The task queue on PostgreSQL. Claims take rows with `FOR UPDATE SKIP LOCKED` (hosts
/// claiming at once never wait for each other or take the same row) and stamp them
/// with this host and a lease from the database's clock; every later move of the
/// running task is fenced by host and attempt, so a host that lost the lease (it was
/// cut off longer than the lease, and another host took the task over) changes
/// nothing when it finishes late.
extension PostgresStore {
    static let taskColumns =
        "id, kind, payload, state, attempts, max_attempts, run_at, created_at, started_at, finished_at, last_error, "
        + "result, idempotency_key"

    static func task(_ rows: PostgresRows, _ row: Int = 0, offset: Int = 0) -> TaskRecord {
        TaskRecord(
            id: rows.integer(row, offset), kind: rows.text(row, offset + 1), payload: rows.text(row, offset + 2),
            state: TaskState(rawValue: rows.text(row, offset + 3)) ?? .failed,
            attempts: Int(rows.integer(row, offset + 4)), maxAttempts: Int(rows.integer(row, offset + 5)),
            runAt: rows.integer(row, offset + 6), createdAt: rows.text(row, offset + 7),
            startedAt: rows.optionalText(row, offset + 8), finishedAt: rows.optionalText(row, offset + 9),
            lastError: rows.optionalText(row, offset + 10), result: rows.optionalText(row, offset + 11),
            idempotencyKey: rows.optionalText(row, offset + 12))
    }

    /// Serialises the enqueues of every host for the length of one short transaction
    /// (a transaction-level advisory lock, released at its commit): the count below then
    /// sees every task queued before it, so the bound is exact across hosts, and an
    /// idempotency key inserted by another host is seen. It is taken in the same round
    /// trip as the insert. Only `POST /tasks` takes it: a new user's welcome task does
    /// not count against the bound (as on SQLite), so user creation never waits for it.
    static let enqueueLock = PreparedStatement("enqueue_lock", "SELECT pg_advisory_xact_lock(7599114512100113)")

    /// The existing task with the key, or a new one when fewer than the limit are
    /// queued (counted over the queued tasks' partial index, never more than the limit).
    /// Should an insert of the same key still race (a host of an older version), the
    /// insert does nothing and the statement is run again, and finds that task.
    static let enqueue = PreparedStatement(
        "enqueue",
        """
        WITH existing AS (
            SELECT \(taskColumns) FROM tasks WHERE $6::text IS NOT NULL AND idempotency_key = $6
        ), room AS (
            SELECT count(*) < $7::bigint AS ok FROM (SELECT 1 FROM tasks WHERE state = 'queued' LIMIT $7) q
        ), inserted AS (
            INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at,
                idempotency_key, enqueued_by)
            SELECT $1, $2, 'queued', 0, $3, $4, $5, $5, $6, $8
            WHERE NOT EXISTS (SELECT 1 FROM existing) AND (SELECT ok FROM room)
            ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING \(taskColumns)
        )
        SELECT 'existing', * FROM existing
        UNION ALL SELECT 'created', * FROM inserted
        UNION ALL SELECT 'full', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM room WHERE NOT ok AND NOT EXISTS (SELECT 1 FROM existing)
        """)

    public func enqueue(_ task: NewTask, queueLimit: Int) async throws -> (task: TaskRecord, created: Bool) {
        let parameters = [
            task.kind, task.payload, String(task.maxAttempts), String(task.runAt), UTCTimestamp.now(),
            task.idempotencyKey, String(queueLimit), settings.hostID,
        ]
        for _ in 0..<3 {
            let outcome = try await mapErrors {
                try await pool.transaction([(Self.enqueueLock, []), (Self.enqueue, parameters)]) {
                    rows -> (String, TaskRecord?)? in
                    guard rows.count > 0 else { return nil }
                    let what = rows.text(0, 0)
                    return (what, what == "full" ? nil : Self.task(rows, 0, offset: 1))
                }
            }
            switch outcome {
            case ("full", _)?: throw TaskStoreError.queueFull
            case (let what, let record?)?:
                queuedHere()
                return (record, what == "created")
            default: continue  // lost a race for the key: the other insert is visible now
            }
        }
        throw StoreError.unavailable("could not settle a concurrent insert of the same idempotency key, try again")
    }

    static let taskByID = PreparedStatement("task_by_id", "SELECT \(taskColumns) FROM tasks WHERE id = $1")

    public func task(id: Int64) async throws -> TaskRecord? {
        try await mapErrors {
            try await pool.query(Self.taskByID, [String(id)], isRead: true) { rows in
                rows.count == 1 ? Self.task(rows) : nil
            }
        }
    }

    static let tasksAll = PreparedStatement(
        "tasks_all", "SELECT \(taskColumns) FROM tasks WHERE id > $1 ORDER BY id LIMIT $2")
    static let tasksInState = PreparedStatement(
        "tasks_in_state", "SELECT \(taskColumns) FROM tasks WHERE state = $3 AND id > $1 ORDER BY id LIMIT $2")

    public func tasks(state: TaskState?, afterID: Int64, limit: Int) async throws -> [TaskRecord] {
        let statement = state == nil ? Self.tasksAll : Self.tasksInState
        var parameters = [String(afterID), String(limit)]
        if let state { parameters.append(state.rawValue) }
        return try await mapErrors {
            try await pool.query(statement, parameters, isRead: true) { rows in
                (0..<rows.count).map { Self.task(rows, $0) }
            }
        }
    }

    /// Marks the due queued tasks `due` selects (locked with SKIP LOCKED, so hosts
    /// claiming at once take different rows) running with this host ($5) and a lease
    /// of $6 seconds from the database's `now()`.
    static func claiming(_ name: String, due: String) -> PreparedStatement {
        PreparedStatement(
            name,
            """
            WITH due AS (\(due) FOR UPDATE SKIP LOCKED)
            UPDATE tasks t SET state = 'running', attempts = t.attempts + 1, started_at = $4, updated_at = $4,
                owner = $5, lease_until = now() + make_interval(secs => $6)
            FROM due WHERE t.id = due.id
            RETURNING \(taskColumns.split(separator: ",").map { "t." + $0.filter { $0 != " " } }.joined(separator: ", "))
            """)
    }

    /// How long a task is the enqueuing host's alone once due: that host claims it the
    /// moment it commits, and runs a new user's welcome by id with others in one
    /// statement, so a claim by another host (or by its own claim path, for a welcome
    /// committed but not yet handed to its scheduler) would only cost a claim and a
    /// completion per task. After this, any host may: the enqueuing host is busy, or
    /// dead.
    static let firstClaimMilliseconds: Int64 = 1000

    /// Which due tasks this host ($5) may claim at $1: its own (welcomes excepted), those
    /// no host has first claim on (rescued, re-queued at a shutdown), and any due for
    /// `firstClaimMilliseconds`.
    static let claimable = """
        state = 'queued' AND run_at <= $1
            AND (run_at <= $1 - \(firstClaimMilliseconds) OR enqueued_by IS NULL
                OR (enqueued_by = $5 AND kind <> '\(WelcomeTask.kind)'))
        """

    /// Up to $2 claimable tasks, oldest due first ($3 unused).
    static let claim = claiming(
        "claim",
        due: """
            SELECT id FROM tasks WHERE \(claimable) AND $3::bigint[] IS NOT NULL
            ORDER BY run_at, id LIMIT $2
            """)
    /// The tasks in $3 that are still claimable ($2 unused).
    static let claimChosen = claiming(
        "claim_chosen",
        due: """
            SELECT id FROM tasks WHERE id = ANY($3::bigint[]) AND \(claimable) AND $2::bigint IS NOT NULL
            ORDER BY run_at, id
            """)
    /// Claimable tasks in claim order, ids only ($2 at most; $3 unused, $4 this host).
    static let dueCandidates = PreparedStatement(
        "due_candidates",
        """
        SELECT id FROM tasks
        WHERE state = 'queued' AND run_at <= $1
            AND (run_at <= $1 - \(firstClaimMilliseconds) OR enqueued_by IS NULL
                OR (enqueued_by = $4 AND kind <> '\(WelcomeTask.kind)'))
            AND $3::text IS NULL
        ORDER BY run_at, id LIMIT $2
        """)

    /// Claims up to `limit` due tasks. With ids to skip, the candidates are read first
    /// (at most `limit` + the skipped count, in claim order) and filtered here, as the
    /// SQLite backend does: a per-row anti-join against the skipped ids in SQL costs
    /// PostgreSQL a nested loop, quadratic in the number of ids.
    public func claimDue(now: Int64, limit: Int, skipping: (@Sendable () -> Set<Int64>)?) async throws -> [TaskRecord] {
        let skipped = skipping?() ?? []
        var statement = Self.claim
        var chosen: [Int64] = []
        if !skipped.isEmpty {
            let candidates = try await mapErrors {
                try await pool.query(
                    Self.dueCandidates, [String(now), String(limit + skipped.count), nil, settings.hostID], isRead: true
                ) {
                    rows in (0..<rows.count).map { rows.integer($0, 0) }
                }
            }
            chosen = Array(candidates.lazy.filter { !skipped.contains($0) }.prefix(limit))
            guard !chosen.isEmpty else { return [] }
            statement = Self.claimChosen
        }
        let parameters = [
            String(now), String(limit), Self.array(chosen), UTCTimestamp.now(), settings.hostID,
            String(settings.leaseSeconds),
        ]
        let records = try await mapErrors {
            try await pool.query(statement, parameters) { rows in (0..<rows.count).map { Self.task(rows, $0) } }
        }
        claims.withLock { claims in
            for record in records { claims[record.id] = record.attempts }
        }
        return records.sorted { ($0.runAt, $0.id) < ($1.runAt, $1.id) }
    }

    /// When this host ($1) may claim a queued task next (see `claimable`; each part an
    /// index range).
    static let earliestClaimable = PreparedStatement(
        "earliest_claimable",
        """
        SELECT least(
            (SELECT min(run_at) FROM tasks
             WHERE state = 'queued' AND enqueued_by = $1 AND kind <> '\(WelcomeTask.kind)'),
            (SELECT min(run_at) FROM tasks WHERE state = 'queued' AND enqueued_by IS NULL),
            (SELECT run_at + \(firstClaimMilliseconds) FROM tasks WHERE state = 'queued' ORDER BY run_at, id LIMIT 1))
        """)
    static let queuedInOrder = PreparedStatement(
        "queued_in_order",
        """
        SELECT id, run_at, enqueued_by IS NULL OR (enqueued_by = $2 AND kind <> '\(WelcomeTask.kind)') FROM tasks
        WHERE state = 'queued' ORDER BY run_at, id LIMIT $1
        """)

    /// A `nextRunAt` answer is reused for this long, unless this host queued a task
    /// since. The scheduler asks after every pass of its loop (each new user's welcome
    /// makes one), hundreds of times a second under load: the answer only sets its
    /// timer, and due work also wakes it (an enqueue here, the lease keeper's poll).
    static let nextRunAtMemoNanoseconds: UInt64 = 50_000_000

    /// Forgets the memo: this host queued a task that may be due before it.
    func queuedHere() {
        nextRunAtMemo.withLock { $0 = nil }
    }

    /// When this host may claim a task next. Skipped ids are passed over in Swift: at
    /// most their number of rows (and 16 more) is read.
    public func nextRunAt(skipping: Set<Int64>) async throws -> Int64? {
        let now = MonotonicClock.nanoseconds()
        if let memo = nextRunAtMemo.withLock({ $0 }), now &- memo.at < Self.nextRunAtMemoNanoseconds {
            return memo.value
        }
        let value = try await readNextRunAt(skipping: skipping)
        nextRunAtMemo.withLock { $0 = (now, value) }
        return value
    }

    private func readNextRunAt(skipping: Set<Int64>) async throws -> Int64? {
        let host = settings.hostID
        return try await mapErrors {
            if skipping.isEmpty {
                return try await pool.query(Self.earliestClaimable, [host], isRead: true) { $0.optionalInteger(0, 0) }
            }
            return try await pool.query(Self.queuedInOrder, [String(skipping.count + 16), host], isRead: true) { rows in
                (0..<rows.count).filter { !skipping.contains(rows.integer($0, 0)) }
                    .map { rows.integer($0, 1) + (rows.integer($0, 2) == 1 ? 0 : Self.firstClaimMilliseconds) }.min()
            }
        }
    }

    /// `{1,2,3}`: a `bigint[]` parameter.
    static func array<S: Sequence<Int64>>(_ ids: S) -> String {
        "{" + ids.map(String.init).joined(separator: ",") + "}"
    }

    // MARK: - Moves of a running task, fenced by host and attempt

    /// Runs a move of a running task this host claimed: `sql` is an UPDATE with
    /// `$1` the time, `$2` host, `$3` attempt, `$4` id, `$5` the count slot, then
    /// `values`; true when the row moved. The claim is forgotten either way.
    private func move(_ statement: PreparedStatement, id: Int64, _ values: [String?]) async throws -> Bool {
        guard let attempt = claims.withLock({ $0.removeValue(forKey: id) }) else {
            leases.fencedOut.add(1, ordering: .relaxed)
            return false
        }
        let parameters: [String?] =
            [UTCTimestamp.now(), settings.hostID, String(attempt), String(id), TaskCountSlots.random()] + values
        let moved = try await mapErrors {
            try await pool.query(statement, parameters) { $0.affectedRows > 0 }
        }
        if !moved { leases.fencedOut.add(1, ordering: .relaxed) }
        return moved
    }

    /// The fence every move of a running task carries.
    static let fence = "id = $4 AND state = 'running' AND owner = $2 AND attempts = $3"

    /// A move to a finished state, counted in the same statement (its count is the
    /// statement's result: 1 when the task moved).
    static func finishing(_ name: String, _ state: TaskState, set: String) -> PreparedStatement {
        PreparedStatement(
            name,
            """
            WITH moved AS (
                UPDATE tasks SET state = '\(state.rawValue)', \(set), finished_at = $1, updated_at = $1,
                    lease_until = NULL
                WHERE \(fence) RETURNING 1
            )
            UPDATE task_counts SET count = count + 1
            WHERE state = '\(state.rawValue)' AND slot = $5 AND EXISTS (SELECT 1 FROM moved)
            """)
    }

    static let succeed = finishing("succeed", .succeeded, set: "result = $6")
    static let fail = finishing("fail", .failed, set: "last_error = $6")
    static let cancelRunning = finishing("cancel_running", .cancelled, set: "cancel_requested = false")
    static let retry = PreparedStatement(
        "retry",
        """
        UPDATE tasks SET state = 'queued', run_at = $6, last_error = $7, updated_at = $1, owner = NULL,
            lease_until = NULL, enqueued_by = $2
        WHERE \(fence) AND $5::text IS NOT NULL
        """)
    static let requeue = PreparedStatement(
        "requeue",
        """
        UPDATE tasks SET state = 'queued', run_at = $6, attempts = greatest(attempts - 1, 0), updated_at = $1,
            owner = NULL, lease_until = NULL, enqueued_by = NULL
        WHERE \(fence) AND $5::text IS NOT NULL
        """)

    public func markSucceeded(id: Int64, result: String) async throws -> Bool {
        try await move(Self.succeed, id: id, [result])
    }

    public func markRetry(id: Int64, runAt: Int64, error: String) async throws -> Bool {
        defer { queuedHere() }
        return try await move(Self.retry, id: id, [String(runAt), error])
    }

    public func markFailed(id: Int64, error: String) async throws -> Bool {
        try await move(Self.fail, id: id, [error])
    }

    public func markCancelled(id: Int64) async throws -> Bool {
        try await move(Self.cancelRunning, id: id, [])
    }

    public func requeue(id: Int64, now: Int64) async throws -> Bool {
        defer { queuedHere() }
        return try await move(Self.requeue, id: id, [String(now)])
    }

    // MARK: - Cancel

    static let cancelQueued = PreparedStatement(
        "cancel_queued",
        """
        WITH moved AS (
            UPDATE tasks SET state = 'cancelled', finished_at = $2, updated_at = $2, cancel_requested = false
            WHERE id = $1 AND state = 'queued' RETURNING \(taskColumns)
        ), counted AS (
            UPDATE task_counts SET count = count + 1
            WHERE state = 'cancelled' AND slot = $3 AND EXISTS (SELECT 1 FROM moved)
        )
        SELECT * FROM moved
        """)
    static let requestCancel = PreparedStatement(
        "request_cancel",
        """
        UPDATE tasks SET cancel_requested = true WHERE id = $1 AND state = 'running'
        RETURNING owner, \(taskColumns)
        """)

    /// A queued task is cancelled at once. A running one is marked `cancel_requested`:
    /// when this host runs it, the scheduler here stops it (`.running`); when another
    /// host does, that host sees the mark within `pollMilliseconds` and stops it, and
    /// this call waits for the task to finish (up to `cancelWaitMilliseconds`) and
    /// answers its final state, or `.running` if it has not stopped by then.
    public func cancel(id: Int64) async throws -> CancelOutcome {
        let deadline = WallClock.milliseconds() + Self.cancelWaitMilliseconds
        var requested = false
        while true {
            let cancelled = try await mapErrors {
                try await pool.query(Self.cancelQueued, [String(id), UTCTimestamp.now(), TaskCountSlots.random()]) {
                    rows in rows.count == 1 ? Self.task(rows) : nil
                }
            }
            if let cancelled { return .cancelled(cancelled) }
            let running = try await mapErrors {
                try await pool.query(Self.requestCancel, [String(id)]) { rows in
                    rows.count == 1 ? (rows.text(0, 0), Self.task(rows, 0, offset: 1)) : nil
                }
            }
            if let (owner, record) = running {
                requested = true
                if owner == settings.hostID || WallClock.milliseconds() >= deadline { return .running(record) }
                try await Task.sleep(for: .milliseconds(Self.cancelPollMilliseconds))
                continue
            }
            guard let record = try await task(id: id) else { return .notFound }
            switch record.state {
            case .cancelled where requested: return .cancelled(record)
            case .cancelled, .succeeded, .failed: return .alreadyFinished(record)
            case .queued, .running: continue  // moved between the two statements
            }
        }
    }

    static let cancelWaitMilliseconds: Int64 = 5000
    static let cancelPollMilliseconds = 50

    // MARK: - Start-up, counts

    /// Touches no task another live host runs: re-queues only tasks whose lease
    /// expired (their host is gone), as every host's reaper does.
    public func recoverInterrupted(now: Int64) async throws -> [Int64] {
        try await mapErrors { try await leases.reapExpired(pool: pool, now: now) }
    }

    static let taskCounts = PreparedStatement(
        "task_counts",
        """
        SELECT 'queued', count(*) FROM tasks WHERE state = 'queued'
        UNION ALL SELECT 'running', count(*) FROM tasks WHERE state = 'running'
        UNION ALL SELECT state, sum(count)::bigint FROM task_counts GROUP BY state
        """)

    public func taskCounts() async throws -> [TaskState: Int] {
        try await mapErrors {
            try await pool.query(Self.taskCounts, [], isRead: true) { rows in
                var counts: [TaskState: Int] = [:]
                rows.forEachRow { row in
                    if let state = TaskState(rawValue: rows.text(row, 0)) { counts[state] = Int(rows.integer(row, 1)) }
                }
                return counts
            }
        }
    }
}
