import Basics
import Dispatch
import Foundation
import Glibc
import Lifecycle
import Logging
import Synchronization

/// The worker threads: each accepts a connection, serves it until it closes, then
/// accepts again (or exits when enough others are idle).
///
/// Its lock is taken once per connection, never per request: a `Mutex` shared by all
/// workers on the request path spins under load (`Synchronization.Mutex` spins while
/// contended).
final class WorkerPool: Sendable {
    private struct State {
        var threads = 0
        /// Threads in (or about to enter) `accept`.
        var accepting = 0
        var accepted = 0
        var isDraining = false
        var workers: [ObjectIdentifier: WorkerState] = [:]
    }

    private let state = Mutex(State())
    private let emptied = DispatchSemaphore(value: 0)
    let listener: Listener
    let context: ConnectionContext
    let maxThreads: Int
    let maxIdleThreads: Int
    let scheduling: ThreadScheduling
    /// The scheduling was refused once (and logged): the others are not tried.
    private let schedulingRefused = Atomic<Bool>(false)

    init(
        listener: Listener, context: ConnectionContext, maxThreads: Int, maxIdleThreads: Int,
        scheduling: ThreadScheduling
    ) {
        self.listener = listener
        self.context = context
        self.maxThreads = maxThreads
        self.maxIdleThreads = maxIdleThreads
        self.scheduling = scheduling
        AcceptInterruption.install()
    }

    var statistics: FastCGIStatistics {
        let (threads, accepted, workers) = state.withLock { ($0.threads, $0.accepted, Array($0.workers.values)) }
        let busy = workers.filter(\.isBusy).count
        return FastCGIStatistics(threads: threads, busyThreads: busy, connectionsAccepted: accepted)
    }

    /// Some thread is in `accept` (or all allowed threads are busy serving).
    var isAcceptingConnections: Bool {
        state.withLock { $0.accepting > 0 || $0.threads >= maxThreads || $0.isDraining }
    }

    /// Serves one connection on a thread of its own, outside the accepting pool (the
    /// watchdog's probe). `false` while draining.
    func serveDetached(_ fd: Int32) -> Bool {
        guard !state.withLock({ $0.isDraining }) else { return false }
        let context = self.context
        NamedThread.start("usersd-probe") {
            let resources = WorkerThreadResources()
            resources.executor.run {
                await ConnectionWorker(fd: fd, state: WorkerState(), context: context, resources: resources).serve()
            }
        }
        return true
    }

    func start(threads: Int) {
        for _ in 0..<threads { spawn() }
    }

    /// Starts a thread that begins by accepting (counted as accepting at once, so the
    /// spawner never starts two for the same gap).
    private func spawn() {
        let worker = WorkerState()
        let admitted = state.withLock { state -> Bool in
            guard !state.isDraining, state.threads < maxThreads else { return false }
            state.threads += 1
            state.accepting += 1
            state.workers[ObjectIdentifier(worker)] = worker
            return true
        }
        guard admitted else { return }
        NamedThread.start("usersd-fcgi", stackSize: 512 * 1024) { [self] in
            run(worker)
        }
    }

    /// The thread's life: one task, on this thread's executor, that accepts a
    /// connection, serves it, and accepts again until enough other threads are idle.
    private func run(_ worker: WorkerState) {
        worker.setThread(pthread_self())
        applyScheduling()
        context.hooks.started()
        let resources = WorkerThreadResources()
        resources.executor.run { [self] in await acceptAndServe(worker, resources: resources) }
        context.hooks.stopping()
        let empty = state.withLock { state -> Bool in
            state.threads -= 1
            state.workers[ObjectIdentifier(worker)] = nil
            return state.threads == 0 && state.isDraining
        }
        if empty { emptied.signal() }
    }

    /// Puts the calling worker thread under `scheduling`. A refusal (a seccomp filter
    /// without `sched_setscheduler`) is logged once; the threads then run as normal.
    private func applyScheduling() {
        guard scheduling != .normal, !schedulingRefused.load(ordering: .relaxed) else { return }
        let code = NamedThread.setCurrentScheduling(scheduling)
        guard code != 0, !schedulingRefused.exchange(true, ordering: .relaxed) else { return }
        Log.warning(
            "worker threads keep the normal scheduling policy",
            [
                "requested": scheduling.rawValue, "error": String(cString: strerror(code)),
            ])
    }

    private func acceptAndServe(_ worker: WorkerState, resources: WorkerThreadResources) async {
        while true {
            let (fd, code) = resources.executor.whileWaiting { (listener.acceptBlocking(), errno) }
            let (keepGoing, spawnAnother) = state.withLock { state -> (Bool, Bool) in
                state.accepting -= 1
                if fd >= 0 { state.accepted += 1 }
                let spawn = fd >= 0 && state.accepting == 0 && !state.isDraining && state.threads < maxThreads
                return (!state.isDraining, spawn)
            }
            if spawnAnother { spawn() }
            if fd >= 0 {
                await ConnectionWorker(fd: fd, state: worker, context: context, resources: resources).serve()
            } else if keepGoing {
                if code != EINTR && code != EAGAIN && code != ECONNABORTED && code != EPROTO {
                    Log.error("accept failed", ["error": String(cString: strerror(code))])
                    usleep(100_000)  // out of descriptors or similar: back off, do not spin
                }
            }
            // A thread stays while fewer than `maxIdleThreads` wait in accept, and always
            // when none does: some thread must accept, or new connections would wait.
            let acceptAgain = state.withLock { state -> Bool in
                guard !state.isDraining, state.accepting == 0 || state.accepting < maxIdleThreads else { return false }
                state.accepting += 1
                return true
            }
            if !acceptAgain { return }
        }
    }

    /// Stops accepting (once; later calls do nothing). Threads in `accept` return;
    /// connections close after their next response, or once idle for a moment (see
    /// `WorkerState`).
    func beginDraining() {
        let already = state.withLock { state in
            defer { state.isDraining = true }
            return state.isDraining
        }
        guard !already else { return }
        listener.stopAccepting()
        for worker in state.withLock({ Array($0.workers.values) }) { worker.beginDraining() }
    }

    /// Waits until every worker thread ended or the deadline passed. Threads blocked
    /// in `accept` on an inherited socket (which must not be shut down) are
    /// interrupted with a signal, repeatedly, since one sent just before a thread
    /// enters `accept` would be missed.
    func waitUntilEmpty(deadline: DispatchTime) -> Bool {
        while true {
            if state.withLock({ $0.threads == 0 }) { return true }
            if DispatchTime.now() >= deadline { return false }
            let now = MonotonicClock.nanoseconds()
            for worker in state.withLock({ Array($0.workers.values) }) {
                worker.interruptIfAccepting()
                worker.closeIfIdle(now: now)
            }
            _ = emptied.wait(timeout: min(deadline, .now() + .milliseconds(20)))
        }
    }
}

/// A no-op handler for SIGUSR2, installed without `SA_RESTART`, so the signal makes
/// a blocking `accept` fail with `EINTR` (the wake-up for draining).
enum AcceptInterruption {
    static let number = SIGUSR2

    static func install() {
        _ = installed
    }

    private static let installed: Bool = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        return sigaction(number, &action, nil) == 0
    }()
}

/// What one worker thread is doing, so draining can wake it safely.
///
/// An idle kept connection is woken with `shutdown(fd, SHUT_RD)`, never `close()`:
/// libfcgi owns the descriptor and closes it itself, so closing it here could close
/// a reused descriptor number.
final class WorkerState: Sendable {
    private enum Phase {
        case accepting
        case busy
        /// Waiting for nginx's next request on a kept connection, since `since`
        /// (monotonic nanoseconds).
        case idle(Int32, since: UInt64)
    }

    private struct State {
        var phase = Phase.accepting
        var isDraining = false
        var thread: pthread_t?
    }

    /// During a drain, a kept connection idle for this long is closed. nginx reuses
    /// its most recently used connections first, so one idle this long is the least
    /// likely to carry a request at the moment it is closed (which would lose it).
    static let drainIdleNanoseconds: UInt64 = 250_000_000

    private let state = Mutex(State())

    func setThread(_ thread: pthread_t) {
        state.withLock { $0.thread = thread }
    }

    /// Marks the connection idle (waiting for nginx's next request).
    func markIdle(_ fd: Int32) {
        let now = MonotonicClock.nanoseconds()
        state.withLock { $0.phase = .idle(fd, since: now) }
    }

    var isDraining: Bool { state.withLock { $0.isDraining } }

    func markBusy() {
        state.withLock { $0.phase = .busy }
    }

    func markAccepting() {
        state.withLock { $0.phase = .accepting }
    }

    /// Serving a request (not waiting for one), for metrics.
    var isBusy: Bool {
        state.withLock { state in
            if case .busy = state.phase { return true }
            return false
        }
    }

    func beginDraining() {
        state.withLock { $0.isDraining = true }
    }

    /// Closes the kept connection if it has been idle long enough (see
    /// `drainIdleNanoseconds`): `shutdown(SHUT_RD)` makes libfcgi's blocked read
    /// return, and libfcgi then closes its own descriptor.
    func closeIfIdle(now: UInt64) {
        state.withLock { state in
            if case .idle(let fd, let since) = state.phase, now &- since >= Self.drainIdleNanoseconds {
                shutdown(fd, Int32(SHUT_RD))
                state.phase = .busy  // woken; never shut the same descriptor twice
            }
        }
    }

    func interruptIfAccepting() {
        state.withLock { state in
            if case .accepting = state.phase, let thread = state.thread {
                pthread_kill(thread, AcceptInterruption.number)
            }
        }
    }
}
