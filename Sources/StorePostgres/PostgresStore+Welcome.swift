import Basics
import Postgres
import Store
import Synchronization

/// The welcome task on PostgreSQL (see `WelcomeTask`): the outbox row and the task's
/// success in one statement, so both commit or neither.
extension PostgresStore {
    /// The outbox row of a welcome for the user `u` (columns user_id, recipient,
    /// subject, body), the same message as on SQLite.
    static let welcomeMessage = "u.id, u.email, 'Welcome to usersd', 'Hello ' || u.name || ', your account is ready.'"

    /// The user id of a welcome payload (`{"user_id":N}`, as usersd writes it); NULL for
    /// anything else, which the claim path then fails.
    static let payloadUserID = "substring(t.payload from '^\\{\"user_id\":([0-9]{1,18})\\}$')::bigint"

    /// A claimed welcome, fenced like every move of a running task ($2 host, $3 attempt,
    /// $4 id); $6 the user, $7/$8 the two results.
    static let completeWelcome = PreparedStatement(
        "complete_welcome",
        """
        WITH moved AS (
            UPDATE tasks SET state = 'succeeded', finished_at = $1, updated_at = $1, lease_until = NULL,
                result = CASE WHEN EXISTS (SELECT 1 FROM users WHERE id = $6) THEN $7 ELSE $8 END
            WHERE \(fence) RETURNING result
        ), written AS (
            INSERT INTO outbox (user_id, recipient, subject, body, created_at)
            SELECT \(welcomeMessage), $1 FROM users u WHERE u.id = $6 AND EXISTS (SELECT 1 FROM moved)
            ON CONFLICT (user_id) DO NOTHING
        ), counted AS (
            UPDATE task_counts SET count = count + 1
            WHERE state = 'succeeded' AND slot = $5 AND EXISTS (SELECT 1 FROM moved)
        )
        SELECT result FROM moved
        """)

    public func completeWelcome(taskID: Int64, userID: Int64) async throws -> String {
        guard let attempt = claims.withLock({ $0.removeValue(forKey: taskID) }) else {
            leases.fencedOut.add(1, ordering: .relaxed)
            throw TaskStoreError.notRunning
        }
        let parameters = [
            UTCTimestamp.now(), settings.hostID, String(attempt), String(taskID), TaskCountSlots.random(),
            String(userID), WelcomeTask.result(written: true), WelcomeTask.result(written: false),
        ]
        let result = try await mapErrors {
            try await pool.query(Self.completeWelcome, parameters) { rows in rows.count == 1 ? rows.text(0, 0) : nil }
        }
        guard let result else {
            leases.fencedOut.add(1, ordering: .relaxed)
            throw TaskStoreError.notRunning
        }
        return result
    }

    /// Queued, due welcomes among $1 (locked with SKIP LOCKED: a row another host is
    /// claiming right now is left to it), run from start to finish: each gets its
    /// outbox row when its user exists and goes to succeeded with its attempt counted.
    static let runQueuedWelcomes = PreparedStatement(
        "run_queued_welcomes",
        """
        WITH runnable AS (
            SELECT t.id, u.id AS user_id FROM tasks t LEFT JOIN users u ON u.id = \(payloadUserID)
            WHERE t.id = ANY($1::bigint[]) AND t.kind = 'welcome' AND t.state = 'queued' AND t.run_at <= $2
                AND \(payloadUserID) IS NOT NULL
            FOR UPDATE OF t SKIP LOCKED
        ), moved AS (
            UPDATE tasks SET state = 'succeeded', attempts = tasks.attempts + 1, started_at = $3, finished_at = $3,
                updated_at = $3, result = CASE WHEN r.user_id IS NULL THEN $5 ELSE $4 END
            FROM runnable r WHERE tasks.id = r.id RETURNING tasks.id
        ), written AS (
            INSERT INTO outbox (user_id, recipient, subject, body, created_at)
            SELECT \(welcomeMessage), $3 FROM runnable r JOIN users u ON u.id = r.user_id
            ON CONFLICT (user_id) DO NOTHING
        ), counted AS (
            UPDATE task_counts SET count = count + (SELECT count(*) FROM moved)
            WHERE state = 'succeeded' AND slot = $6 AND EXISTS (SELECT 1 FROM moved)
        )
        SELECT id FROM moved
        """)

    /// A batch smaller than this waits `welcomeGatherMilliseconds` before it is sent.
    static let welcomeGatherBelow = 32
    static let welcomeGatherMilliseconds = 10

    /// Under a stream of new users the scheduler hands over a handful of ids per pass;
    /// each batch is a transaction with its own commit (and flush), so many small ones
    /// cost PostgreSQL more than the inserts they follow, and every host adds its own
    /// (N hosts share the stream, so each sees 1/N of it). A small batch therefore waits
    /// first (nobody waits for a welcome): the ids noted meanwhile go in the next, fuller
    /// batch, so one host runs at most one small batch per wait.
    public func runQueuedWelcomes(ids: [Int64], now: Int64) async throws -> [Int64] {
        if ids.count < Self.welcomeGatherBelow {
            try? await Task.sleep(for: .milliseconds(Self.welcomeGatherMilliseconds))
        }
        var seen = Set<Int64>(minimumCapacity: ids.count)
        let unique = ids.filter { seen.insert($0).inserted }
        guard !unique.isEmpty else { return [] }
        let parameters = [
            Self.array(unique), String(now), UTCTimestamp.now(), WelcomeTask.result(written: true),
            WelcomeTask.result(written: false), TaskCountSlots.random(),
        ]
        let ran = try await mapErrors {
            try await pool.query(Self.runQueuedWelcomes, parameters) { rows in
                Set((0..<rows.count).map { rows.integer($0, 0) })
            }
        }
        return unique.filter { ran.contains($0) }
    }
}
