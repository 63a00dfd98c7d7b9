public import JSON
import Logging
import Metrics
public import Store
import Synchronization

/// The background-task scheduler: an actor that claims due tasks from the store in
/// order, runs each as its own `Task` on the cooperative pool (at most `concurrency`
/// at once), retries failures with back-off, cancels on request, and on shutdown
/// gives running tasks a grace period before re-queuing them. Tasks of kinds whose
/// whole work is a database write (`TaskKind.runQueued`, the welcome task) are noted
/// at insert and run by id in batches instead, without a claim or a slot.
///
/// Every transition is persisted before it is reported (the `events` callback, the
/// HTTP answer). It sleeps until woken — by an enqueue, a finished task, or the next
/// due time — and never polls.
public actor TaskScheduler {
    public struct Configuration: Sendable {
        public var concurrency = 4
        public var queueLimit = 10_000
        public var maxAttempts = 5
        public var retry = RetryPolicy()
        /// A number in 0..<1 for retry jitter (injectable for tests).
        public var random: @Sendable () -> Double = { Double.random(in: 0..<1) }
        /// Observes every persisted transition (tests await these instead of sleeping).
        public var onEvent: (@Sendable (Event) -> Void)?

        public init() {}
    }

    public enum Event: Sendable, Equatable {
        case recovered([Int64])
        case started(Int64)
        case retried(Int64, runAt: Int64)
        case requeued(Int64)
        case finished(Int64, TaskState)
    }

    enum Phase {
        case idle, running, stopping, stopped
    }

    public nonisolated let store: any TaskStore
    public nonisolated let registry: TaskRegistry
    public nonisolated let clock: any SchedulerClock
    public nonisolated let configuration: Configuration
    nonisolated let wake = WakeSignal()
    var phase = Phase.idle
    var running: [Int64: Task<Void, Never>] = [:]
    /// Launched attempts a client asked to cancel: their failure is stored as `cancelled`.
    /// An id stays until its attempt's `finish` is done, whatever the attempt's outcome.
    var cancelRequested: Set<Int64> = []
    /// Cancels waiting for the claim in flight to launch their task, by id and how many.
    /// `launch` cancels such a task at once; each cancel removes its own count.
    var awaitingLaunch: [Int64: Int] = [:]
    /// Set while a claim transaction is in flight (it may have committed tasks as
    /// `running` that are not launched yet): the cancels waiting for it to end.
    var claimWaiters: [CheckedContinuation<Void, Never>]?
    /// Launched attempts stopped by shutdown: their failure puts them back in the queue.
    private var stoppedByShutdown: Set<Int64> = []
    private var loop: Task<Void, Never>?
    private var startedAt: [Int64: Int64] = [:]
    /// Run time of finished attempts by task kind, for metrics.
    nonisolated let durations = Mutex<[String: Histogram]>([:])
    /// Set when the loop should claim: at start, when a slot frees, at a due time, after
    /// an insert that was not noted. Noted inserts alone never cost a claim transaction.
    private nonisolated let claimWanted = Atomic<Bool>(true)
    /// Ids of committed tasks of kinds with `runQueued`, all and by kind (see
    /// `committed(taskID:kind:)`). The claim path skips them; `runNoted` runs them.
    nonisolated let noted = Mutex<(all: Set<Int64>, byKind: [String: [Int64]])>(([], [:]))

    public init(
        store: any TaskStore, registry: TaskRegistry, clock: any SchedulerClock = SystemClock(),
        configuration: Configuration = Configuration()
    ) {
        self.store = store
        self.registry = registry
        self.clock = clock
        self.configuration = configuration
    }

    func emit(_ event: Event) {
        configuration.onEvent?(event)
    }

    /// Recovers tasks a crash left `running`, then starts the claim loop.
    public func start() async throws {
        guard phase == .idle else { return }
        let recovered = try await store.recoverInterrupted(now: clock.now())
        if !recovered.isEmpty {
            Log.warning(
                "re-queued tasks interrupted by a restart", ["ids": recovered.map(String.init).joined(separator: ",")])
        }
        emit(.recovered(recovered))
        phase = .running
        loop = Task(executorPreference: globalConcurrentExecutor) { await self.runLoop() }
    }

    /// Tells the loop there may be new work to claim (a task was inserted elsewhere).
    public nonisolated func wakeUp() {
        claimWanted.store(true, ordering: .relaxed)
        wake.signal()
    }

    /// The number of tasks running right now.
    public var runningCount: Int { running.count }

    /// Tasks with a cancel under way: running attempts told to stop that have not
    /// finished, and cancels waiting for a just-claimed task to launch. Zero whenever no
    /// `cancel(id:)` is in progress and no cancelled attempt is still stopping.
    public var pendingCancellationCount: Int {
        cancelRequested.union(awaitingLaunch.keys).count
    }

    /// How many entries each per-task table holds (tests: all zero once no task runs
    /// and no cancel is in progress).
    struct Bookkeeping: Equatable, Sendable {
        var running = 0, cancelRequested = 0, awaitingLaunch = 0, stoppedByShutdown = 0, startedAt = 0
    }

    var bookkeeping: Bookkeeping {
        Bookkeeping(
            running: running.count, cancelRequested: cancelRequested.count, awaitingLaunch: awaitingLaunch.count,
            stoppedByShutdown: stoppedByShutdown.count, startedAt: startedAt.count)
    }

    // MARK: - Enqueue

    /// Validates and persists a task a client asked for; returns after commit. Throws
    /// `TaskPayloadError` (422: an unknown or internal kind, a bad payload) or
    /// `TaskStoreError.queueFull` (503). Internal kinds are inserted by the store in the
    /// transaction that needs them (the welcome task with its user), never through here.
    public nonisolated func enqueue(
        kind: String, payload: [String: JSONValue], maxAttempts: Int? = nil, delayMilliseconds: Int64 = 0,
        idempotencyKey: String? = nil
    ) async throws -> (task: TaskRecord, created: Bool) {
        let canonical = try registry.validate(kind: kind, payload: payload)
        let task = NewTask(
            kind: kind, payload: canonical, maxAttempts: maxAttempts ?? configuration.maxAttempts,
            runAt: clock.now() + delayMilliseconds, idempotencyKey: idempotencyKey
        )
        let result = try await store.enqueue(task, queueLimit: configuration.queueLimit)
        if result.created {
            committed(taskID: result.task.id, kind: kind)
        }
        return result
    }

    // MARK: - Loop

    private func runLoop() async {
        while phase == .running {
            var storeFailed = false
            do {
                try await fillSlots()
            } catch {
                Log.error("claiming tasks failed", ["error": "\(error)"])
                storeFailed = true
            }
            guard phase == .running else { break }
            var deadline: Int64?
            if running.count < configuration.concurrency {
                // Noted tasks are left out: a wake runs them, and counting them here would
                // spin this loop while users are being created.
                let skipping = noted.withLock { $0.all }
                deadline = storeFailed ? clock.now() + 1000 : ((try? await store.nextRunAt(skipping: skipping)) ?? nil)
            }
            guard phase == .running else { break }
            if let deadline, deadline <= clock.now(), !storeFailed {
                claimWanted.store(true, ordering: .relaxed)
                continue
            }
            await waitForWake(until: deadline)
        }
    }

    /// Waits for a signal, or until `deadline` when there is one.
    private func waitForWake(until deadline: Int64?) async {
        let timer = deadline.map { deadline in
            Task(executorPreference: globalConcurrentExecutor) { [clock, wake, self] in
                do {
                    try await clock.sleep(until: deadline)
                    self.claimWanted.store(true, ordering: .relaxed)
                    wake.signal()
                } catch {}
            }
        }
        await wake.wait()
        timer?.cancel()
    }

    /// Runs noted tasks, then claims due tasks into free slots when something asked for
    /// a claim (start, a freed slot, a due time, an insert that was not noted).
    private func fillSlots() async throws {
        await runNoted()
        guard claimWanted.exchange(false, ordering: .relaxed) else { return }
        while phase == .running, running.count < configuration.concurrency {
            // From here until its tasks are launched, a task can be `running` in the
            // database with no Swift task yet: `cancel(id:)` waits for `endClaim`.
            claimWaiters = []
            let claimed: [TaskRecord]
            do {
                // Read on the writer, inside the claim's transaction: a welcome task noted from
                // inside its user's (committed) transaction is seen there and left to `runNoted`.
                claimed = try await store.claimDue(
                    now: clock.now(), limit: configuration.concurrency - running.count,
                    skipping: { [self] in self.noted.withLock { $0.all } })
            } catch {
                endClaim()
                throw error
            }
            for task in claimed { launch(task) }
            endClaim()
            if claimed.isEmpty { return }
        }
    }

    /// The claim in flight has launched what it claimed: lets the cancels waiting for it go on.
    private func endClaim() {
        let waiters = claimWaiters ?? []
        claimWaiters = nil
        for waiter in waiters { waiter.resume() }
    }

    static func durationHistogram() -> Histogram {
        Histogram(bounds: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600])
    }

    private func launch(_ task: TaskRecord) {
        emit(.started(task.id))
        startedAt[task.id] = clock.now()
        let kind = registry.kinds[task.kind]
        let clock = self.clock
        let handle = Task(executorPreference: globalConcurrentExecutor) {
            let outcome: Result<String, any Error>
            do {
                guard let kind else {
                    throw TaskPayloadError(field: "kind", message: "unknown task kind '\(task.kind)'")
                }
                let payload: [String: JSONValue]
                if case .object(let members) = try JSONParser.parse(Array(task.payload.utf8)) {
                    payload = members
                } else {
                    payload = [:]
                }
                outcome = .success(try await kind.run(TaskContext(task: task, payload: payload, clock: clock)))
            } catch {
                outcome = .failure(error)
            }
            await self.finish(task, outcome, successPersisted: kind?.persistsItsSuccess ?? false)
        }
        running[task.id] = handle
        // A cancel that found the task claimed but not launched is waiting: stop it at once.
        if awaitingLaunch[task.id] != nil { cancelRequested.insert(task.id) }
        if phase != .running { stoppedByShutdown.insert(task.id) }
        if cancelRequested.contains(task.id) || phase != .running { handle.cancel() }
    }

    /// Persists how an attempt ended (unless the kind already stored its success), then
    /// frees its slot and forgets the task. A failure is stored as `cancelled` when a
    /// cancel was asked for, else re-queued when shutdown stopped it, else retried or
    /// failed; those flags are read when the failure is stored and dropped at the end,
    /// together with the slot, so that a cancel arriving in between (it finds the slot
    /// still taken and waits for this attempt) leaves nothing behind either.
    private func finish(_ task: TaskRecord, _ outcome: Result<String, any Error>, successPersisted: Bool) async {
        do {
            switch outcome {
            case .success where successPersisted:
                emit(.finished(task.id, .succeeded))
            case .success(let result):
                if try await store.markSucceeded(id: task.id, result: result) { emit(.finished(task.id, .succeeded)) }
            case .failure(let error):
                if cancelRequested.contains(task.id) {
                    if try await store.markCancelled(id: task.id) { emit(.finished(task.id, .cancelled)) }
                } else if stoppedByShutdown.contains(task.id) {
                    if try await store.requeue(id: task.id, now: clock.now()) { emit(.requeued(task.id)) }
                } else {
                    let message = Self.describe(error)
                    switch RetryPolicy.retries(afterAttempt: task.attempts, of: task.maxAttempts) {
                    case true:
                        let delay = configuration.retry.delay(
                            afterAttempt: task.attempts, random: configuration.random())
                        let runAt = clock.now() + delay
                        if try await store.markRetry(id: task.id, runAt: runAt, error: message) {
                            Log.warning(
                                "task failed, will retry",
                                ["task_id": String(task.id), "error": message, "attempt": String(task.attempts)])
                            emit(.retried(task.id, runAt: runAt))
                        }
                    case false:
                        if try await store.markFailed(id: task.id, error: message) {
                            Log.error(
                                "task failed",
                                ["task_id": String(task.id), "error": message, "attempts": String(task.attempts)])
                            emit(.finished(task.id, .failed))
                        }
                    }
                }
            }
        } catch {
            // The row stays `running`; the next start re-queues it (recovery).
            Log.error("could not persist task outcome", ["task_id": String(task.id), "error": "\(error)"])
        }
        if let start = startedAt.removeValue(forKey: task.id) {
            let seconds = Double(clock.now() - start) / 1000
            durations.withLock { $0[task.kind, default: Self.durationHistogram()].observe(seconds) }
        }
        cancelRequested.remove(task.id)
        stoppedByShutdown.remove(task.id)
        running[task.id] = nil
        claimWanted.store(true, ordering: .relaxed)
        wake.signal()
    }

    static func describe(_ error: any Error) -> String {
        if let payload = error as? TaskPayloadError { return "\(payload.field): \(payload.message)" }
        if error is CancellationError { return "cancelled" }
        return "\(error)"
    }

    // MARK: - Shutdown

    /// Stops claiming, lets running tasks finish within `graceMilliseconds`, then
    /// cancels the rest and puts them back to `queued`. Returns when nothing runs.
    public func shutdown(graceMilliseconds: Int64) async {
        guard phase == .running || phase == .idle else { return }
        phase = .stopping
        wake.signal()
        await loop?.value
        let deadline = clock.now() + graceMilliseconds
        while !running.isEmpty, clock.now() < deadline {
            await waitForWake(until: deadline)
        }
        for (id, handle) in running {
            stoppedByShutdown.insert(id)
            handle.cancel()
        }
        while let handle = running.values.first {
            await handle.value
        }
        phase = .stopped
    }
}
