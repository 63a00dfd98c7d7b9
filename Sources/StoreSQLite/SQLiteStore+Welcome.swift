import Basics
import SQLite
import Store

/// The welcome task's SQL, all of it (see `WelcomeTask`): inserting it with its user,
/// and running it, alone (claimed like any task) or in batches by id (the scheduler's
/// fast path for tasks it was handed at insert).
extension SQLiteStore {
    /// Inserts the welcome task of user `userID` inside the user's open write
    /// transaction: both commit or neither.
    static func insertWelcome(
        for userID: Int64, maxAttempts: Int, runAt: Int64, on connection: Connection
    ) throws
        -> TaskRecord
    {
        try insertTask(
            NewTask(
                kind: WelcomeTask.kind, payload: WelcomeTask.payload(userID: userID), maxAttempts: maxAttempts,
                runAt: runAt),
            on: connection
        )
    }

    public func completeWelcome(taskID: Int64, userID: Int64) async throws -> String {
        try await mapErrors {
            try await database.write { connection in
                let stamp = UTCTimestamp.now()
                let text = WelcomeTask.result(
                    written: try Self.writeWelcome(userID: userID, now: stamp, on: connection))
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

    public func runQueuedWelcomes(ids: [Int64], now: Int64) async throws -> [Int64] {
        var seen = Set<Int64>(minimumCapacity: ids.count)
        let unique = ids.filter { seen.insert($0).inserted }
        guard !unique.isEmpty else { return [] }
        let idArray = Self.jsonArray(unique)
        let written = WelcomeTask.result(written: true)
        let gone = WelcomeTask.result(written: false)
        return try await mapErrors {
            try await database.write { connection in
                // Which tasks run, and whether their user still exists, in the order given.
                var runnable: [(id: Int64, userExists: Bool)] = []
                try connection.cached(Self.runnableWelcomesSQL).bind([.text(idArray), .integer(now)]).forEachRow {
                    runnable.append(($0.integer(0), $0.integer(1) != 0))
                }
                guard !runnable.isEmpty else { return [] }
                let stamp = UTCTimestamp.now()
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
