import Basics
import Dispatch
import Lifecycle
import Logging
import Postgres
import Store
import Synchronization

/// This host's side of the task leases, on a thread and a connection of its own (a
/// pool busy with requests must not delay a heartbeat until the leases expire):
///
/// - every `heartbeatSeconds`: extends the leases of the tasks this host runs to
///   `now() + leaseSeconds` on the database's clock, and re-queues every task (of any
///   host) whose lease expired: its host died or has been cut off for a whole lease;
/// - every `pollMilliseconds`: hands the scheduler the cancels asked for this host's
///   tasks (through any host), and wakes it when due tasks have waited unclaimed past
///   their enqueuing host's first claim (that host is busy, or died before running them).
///
/// So a task of a host that dies is queued again at most `leaseSeconds +
/// heartbeatSeconds` after that host's last heartbeat, and claimed by a host with a
/// free slot within `pollMilliseconds` more: 12.5 s with the defaults (documented as
/// at most 15 s in docs/scale-out.md).
final class LeaseKeeper: Sendable {
    let settings: PostgresStore.Settings
    /// Moves refused by the fence (the task is no longer this host's attempt).
    let fencedOut = Atomic<Int>(0)
    let heartbeats = Atomic<Int>(0)
    let failedRounds = Atomic<Int>(0)
    let reaped = Atomic<Int>(0)
    /// Leases this host held that another host's reaper took (this host was cut off).
    let lost = Atomic<Int>(0)
    let cancelsRelayed = Atomic<Int>(0)
    let wakes = Atomic<Int>(0)

    private struct Running {
        var isStopping = false
        var started = false
    }

    private let running = Mutex(Running())
    private let stopSignal = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(settings: PostgresStore.Settings) {
        self.settings = settings
    }

    /// Re-queues (or fails, or cancels, when asked) the tasks whose lease expired; $1
    /// now in ms for their run_at, $2 the timestamp, $3 the count slot.
    static let reap = PreparedStatement(
        "reap_expired",
        """
        WITH expired AS (
            SELECT id FROM tasks WHERE state = 'running' AND lease_until < now()
            ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED
        ), moved AS (
            UPDATE tasks t SET
                state = CASE WHEN t.cancel_requested THEN 'cancelled'
                    WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'queued' END,
                run_at = CASE WHEN t.cancel_requested OR t.attempts >= t.max_attempts THEN t.run_at ELSE $1 END,
                finished_at = CASE WHEN t.cancel_requested OR t.attempts >= t.max_attempts THEN $2 END,
                last_error = CASE WHEN t.cancel_requested THEN t.last_error
                    WHEN t.attempts >= t.max_attempts
                        THEN 'lease of ' || t.owner || ' expired with no attempts left'
                    ELSE 'lease of ' || t.owner || ' expired (host stopped or cut off)' END,
                cancel_requested = false, owner = NULL, lease_until = NULL, enqueued_by = NULL, updated_at = $2
            FROM expired WHERE t.id = expired.id
            RETURNING t.id, t.state
        ), counted AS (
            UPDATE task_counts c SET count = c.count + m.n
            FROM (SELECT state, count(*) AS n FROM moved WHERE state <> 'queued' GROUP BY state) m
            WHERE c.state = m.state AND c.slot = $3
        )
        SELECT id, state FROM moved
        """)

    /// The reaper's pass through the pool (start-up recovery).
    func reapExpired(pool: PostgresPool, now: Int64) async throws -> [Int64] {
        let ids = try await pool.query(Self.reap, Self.reapParameters(now: now)) { Self.reapedIDs($0) }
        note(reapedIDs: ids)
        return ids
    }

    static func reapParameters(now: Int64) -> [String?] {
        [String(now), UTCTimestamp.now(), TaskCountSlots.random()]
    }

    static func reapedIDs(_ rows: PostgresRows) -> [Int64] {
        (0..<rows.count).map { rows.integer($0, 0) }
    }

    private func note(reapedIDs ids: [Int64]) {
        guard !ids.isEmpty else { return }
        reaped.add(ids.count, ordering: .relaxed)
        Log.warning(
            "re-queued tasks whose lease expired (their host stopped or was cut off)",
            ["ids": ids.map(String.init).joined(separator: ",")])
    }

    static let heartbeat = PreparedStatement(
        "heartbeat",
        """
        UPDATE tasks SET lease_until = now() + make_interval(secs => $2)
        WHERE state = 'running' AND owner = $1 RETURNING id, attempts
        """)

    /// Cancels asked for this host's running tasks, and whether due tasks have waited
    /// unclaimed since $1 (ms).
    static let poll = PreparedStatement(
        "lease_poll",
        """
        SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND run_at <= $1),
            coalesce((SELECT array_agg(id) FROM tasks WHERE state = 'running' AND owner = $2 AND cancel_requested),
                '{}')
        """)

    /// Starts the thread. `claims` returns this host's claims (id -> attempt).
    func start(
        claims: @escaping @Sendable () -> [Int64: Int], wake: @escaping @Sendable () -> Void,
        cancel: @escaping @Sendable (Int64) -> Void
    ) {
        let alreadyStarted = running.withLock { running in
            defer { running.started = true }
            return running.started
        }
        guard !alreadyStarted else { return }
        NamedThread.start("usersd-pg-lease") { [self] in
            var loop = LeaseLoop(keeper: self, claims: claims, wake: wake, cancel: cancel)
            while !running.withLock({ $0.isStopping }) {
                loop.round()
                _ = stopSignal.wait(timeout: .now() + .milliseconds(settings.pollMilliseconds))
            }
            finished.signal()
        }
    }

    func stop() {
        let wasRunning = running.withLock { running in
            defer { running.isStopping = true }
            return running.started && !running.isStopping
        }
        guard wasRunning else { return }
        stopSignal.signal()
        finished.wait()
    }

    /// One round of the thread: its connection and timers live here only.
    private struct LeaseLoop {
        let keeper: LeaseKeeper
        let claims: @Sendable () -> [Int64: Int]
        let wake: @Sendable () -> Void
        let cancel: @Sendable (Int64) -> Void
        var connection: PostgresConnection?
        var nextHeartbeat: UInt64 = 0
        var relayed: Set<Int64> = []
        var reportedLost: Set<Int64> = []
        var reportedDown = false

        init(
            keeper: LeaseKeeper, claims: @escaping @Sendable () -> [Int64: Int],
            wake: @escaping @Sendable () -> Void, cancel: @escaping @Sendable (Int64) -> Void
        ) {
            self.keeper = keeper
            self.claims = claims
            self.wake = wake
            self.cancel = cancel
        }

        mutating func round() {
            let settings = keeper.settings
            do {
                if connection?.isUsableAfterIdle() != true {
                    connection = try PostgresConnection(uri: settings.uri)
                    if reportedDown { Log.warning("lease heartbeat: database reachable again") }
                    reportedDown = false
                }
                guard let connection else { return }
                let now = MonotonicClock.nanoseconds()
                if now >= nextHeartbeat {
                    try heartbeat(on: connection)
                    let ids = try connection.query(
                        LeaseKeeper.reap, LeaseKeeper.reapParameters(now: WallClock.milliseconds()),
                        LeaseKeeper.reapedIDs)
                    keeper.note(reapedIDs: ids)
                    if !ids.isEmpty { wake() }
                    nextHeartbeat = now + UInt64(settings.heartbeatSeconds * 1e9)
                }
                try poll(on: connection)
            } catch {
                keeper.failedRounds.add(1, ordering: .relaxed)
                if !reportedDown {
                    Log.error("lease heartbeat failed; leases expire unless it recovers", ["error": "\(error)"])
                    reportedDown = true
                }
                if connection?.isConnected != true { connection = nil }
            }
        }

        private mutating func heartbeat(on connection: PostgresConnection) throws {
            let settings = keeper.settings
            let held = try connection.query(
                LeaseKeeper.heartbeat, [settings.hostID, String(settings.leaseSeconds)]
            ) { rows in
                var held: [Int64: Int] = [:]
                rows.forEachRow { held[rows.integer($0, 0)] = Int(rows.integer($0, 1)) }
                return held
            }
            keeper.heartbeats.add(1, ordering: .relaxed)
            // A claim this host still holds in memory whose row is no longer this host's
            // attempt was rescued by another host while this one was cut off: whatever this
            // host does with it now is fenced out.
            for (id, attempt) in claims() where held[id] != attempt {
                if held[id] == nil, reportedLost.insert(id).inserted {
                    keeper.lost.add(1, ordering: .relaxed)
                    Log.warning(
                        "lease lost: another host took the task over; this host's outcome will be ignored",
                        ["task_id": String(id), "attempt": String(attempt)])
                }
            }
        }

        private mutating func poll(on connection: PostgresConnection) throws {
            let settings = keeper.settings
            // Due long enough that any host may claim them, and left unclaimed since.
            let since =
                WallClock.milliseconds() - PostgresStore.firstClaimMilliseconds - Int64(settings.pollMilliseconds)
            let (waiting, cancels) = try connection.query(LeaseKeeper.poll, [String(since), settings.hostID]) {
                rows in (rows.integer(0, 0) == 1, Self.ids(rows.text(0, 1)))
            }
            let current = claims()
            relayed = relayed.filter { current[$0] != nil }
            reportedLost = reportedLost.filter { current[$0] != nil }
            for id in cancels where relayed.insert(id).inserted {
                keeper.cancelsRelayed.add(1, ordering: .relaxed)
                cancel(id)
            }
            if waiting {
                keeper.wakes.add(1, ordering: .relaxed)
                wake()
            }
        }

        /// `{1,2,3}` -> [1, 2, 3].
        static func ids(_ text: String) -> [Int64] {
            text.dropFirst().dropLast().split(separator: ",").compactMap { Int64($0) }
        }
    }
}
