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
        /// A kept connection was shut to make room for one waiting in the backlog, and
        /// no thread has come back to `accept` since.
        var isFreeing = false
        var workers: [ObjectIdentifier: WorkerState] = [:]

        /// Every thread allowed serves a connection and none accepts: connections that
        /// arrive now wait in the listening socket's backlog.
        func isAtCap(_ maxThreads: Int) -> Bool { accepting == 0 && threads >= maxThreads }
    }

    private let state = Mutex(State())
    private let emptied = DispatchSemaphore(value: 0)
    /// Posted when the pool reaches its cap (see `watchCap`).
    private let capReached = DispatchSemaphore(value: 0)
    /// Lets the cap watcher wait for a connection to become idle.
    let idleWatch = IdleWatch()
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
        NamedThread.start("usersd-cap") { [self] in watchCap() }
    }

    /// Starts a thread that begins by accepting (counted as accepting at once, so the
    /// spawner never starts two for the same gap).
    private func spawn() {
        let worker = WorkerState(idleWatch: idleWatch)
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
            let (keepGoing, spawnAnother, atCap) = state.withLock { state -> (Bool, Bool, Bool) in
                state.accepting -= 1
                if fd >= 0 { state.accepted += 1 }
                let spawn = fd >= 0 && state.accepting == 0 && !state.isDraining && state.threads < maxThreads
                return (!state.isDraining, spawn, fd >= 0 && !state.isDraining && state.isAtCap(maxThreads))
            }
            if spawnAnother { spawn() }
            if atCap { capReached.signal() }
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
                state.isFreeing = false  // this thread takes the connection that was waiting
                return true
            }
            if !acceptAgain { return }
        }
    }

    /// Frees a kept connection for each connection that waits in the backlog while the
    /// pool is at its cap (`--max-connections`).
    ///
    /// libfcgi pins a kept connection to its thread, so a web server whose pool of
    /// kept connections is larger than the cap (Apache httpd keeps every connection it
    /// opened) would leave the connections beyond it waiting in the backlog for ever,
    /// with a request already written into them. While some wait, the connection idle
    /// longest is shut for reading (as draining does, see `WorkerState.freeIfIdle`):
    /// its thread returns to `accept` and takes the waiting one. The web server then
    /// opens a new connection when it wants another, and a request it sends on the
    /// freed one at that moment fails (nginx and Apache reuse their most recently used
    /// connections first, so the one idle longest is the least likely to carry one).
    /// The rule remains to size the web server's pool within the cap; this only keeps
    /// a larger one from hanging.
    ///
    /// Not a timer for requests: the watcher blocks until the pool reaches the cap,
    /// then until a connection waits in the backlog (`poll` on the listening socket)
    /// and a kept connection is idle. Its poll's timeout only notices that the pool
    /// left the cap.
    private func watchCap() {
        while true {
            capReached.wait()
            while true {
                let (atCap, draining) = state.withLock { ($0.isAtCap(maxThreads) && !$0.isFreeing, $0.isDraining) }
                if draining { return }
                guard atCap else { break }
                var waiting = pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&waiting, 1, 250) > 0, waiting.revents & Int16(POLLIN) != 0 else { continue }
                // Armed before looking, so a connection going idle after the look wakes
                // the wait.
                idleWatch.arm()
                if freeLongestIdle() {
                    idleWatch.disarm()
                } else {
                    // Every connection is busy: the next one to go idle is freed.
                    idleWatch.waitForIdle(timeoutMilliseconds: 250)
                }
            }
        }
    }

    /// Shuts the connection idle longest for reading; `false` when none is idle.
    private func freeLongestIdle() -> Bool {
        // Marked first: the freed thread clears it when it comes back to `accept`.
        let workers = state.withLock { state in
            state.isFreeing = true
            return Array(state.workers.values)
        }
        let candidates = workers.compactMap { worker in worker.idleSince.map { (worker, $0) } }
        for (worker, _) in candidates.sorted(by: { $0.1 < $1.1 }) where worker.freeIfIdle() {
            return true
        }
        state.withLock { $0.isFreeing = false }
        return false
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
        capReached.signal()
        idleWatch.wake()
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
        /// The current connection was shut to make room (see `freeIfIdle`).
        var isFreed = false
        var thread: pthread_t?
    }

    /// During a drain, a kept connection idle for this long is closed. nginx reuses
    /// its most recently used connections first, so one idle this long is the least
    /// likely to carry a request at the moment it is closed (which would lose it).
    static let drainIdleNanoseconds: UInt64 = 250_000_000

    private let state = Mutex(State())
    private let idleWatch: IdleWatch?

    init(idleWatch: IdleWatch? = nil) {
        self.idleWatch = idleWatch
    }

    func setThread(_ thread: pthread_t) {
        state.withLock { $0.thread = thread }
    }

    /// Marks the connection idle (waiting for nginx's next request).
    func markIdle(_ fd: Int32) {
        let now = MonotonicClock.nanoseconds()
        state.withLock { $0.phase = .idle(fd, since: now) }
        idleWatch?.becameIdle()
    }

    var isDraining: Bool { state.withLock { $0.isDraining } }

    /// The current response is the connection's last: the server drains, or the
    /// connection was shut to make room (a request that was already on its way when
    /// it was shut is answered, and the web server told to close it).
    var endsConnection: Bool { state.withLock { $0.isDraining || $0.isFreed } }

    /// Since when (monotonic nanoseconds) the kept connection waits for a request;
    /// `nil` when it is not idle.
    var idleSince: UInt64? {
        state.withLock { state in
            if case .idle(_, let since) = state.phase { return since }
            return nil
        }
    }

    /// Shuts the kept connection for reading if it is still idle, to make room for a
    /// connection waiting in the backlog (see `WorkerPool.watchCap`); `false` when it
    /// is not idle any more.
    func freeIfIdle() -> Bool {
        state.withLock { state in
            guard case .idle(let fd, _) = state.phase else { return false }
            shutdown(fd, Int32(SHUT_RD))
            state.phase = .busy  // woken; never shut the same descriptor twice
            state.isFreed = true
            return true
        }
    }

    func markBusy() {
        state.withLock { $0.phase = .busy }
    }

    func markAccepting() {
        state.withLock { state in
            state.phase = .accepting
            state.isFreed = false
        }
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

/// Lets the cap watcher (see `WorkerPool.watchCap`) wait until some kept connection
/// becomes idle. Workers signal only while the watcher waits, so the request path
/// pays one atomic load.
final class IdleWatch: Sendable {
    private let isWaiting = Atomic<Bool>(false)
    private let idle = DispatchSemaphore(value: 0)

    func becameIdle() {
        if isWaiting.load(ordering: .relaxed), isWaiting.exchange(false, ordering: .acquiringAndReleasing) {
            idle.signal()
        }
    }

    /// From here on, the next connection to go idle signals.
    func arm() {
        isWaiting.store(true, ordering: .sequentiallyConsistent)
    }

    /// No wait after all: drop a signal sent meanwhile.
    func disarm() {
        if !isWaiting.exchange(false, ordering: .acquiringAndReleasing) { _ = idle.wait(timeout: .now()) }
    }

    /// Waits (after `arm`) until a worker marks its connection idle, or the timeout
    /// passed.
    func waitForIdle(timeoutMilliseconds: Int) {
        _ = idle.wait(timeout: .now() + .milliseconds(timeoutMilliseconds))
        // A signal sent after the timeout stays in the semaphore: take it, so the next
        // wait does not return at once for an old arrival.
        disarm()
    }

    /// Ends a wait (draining).
    func wake() {
        idle.signal()
    }
}
