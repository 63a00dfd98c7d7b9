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

        /// Every thread allowed serves a connection and none accepts: connections that
        /// arrive now wait in the listening socket's backlog.
        func isAtCap(_ maxThreads: Int) -> Bool { accepting == 0 && threads >= maxThreads }
    }

    private let state = Mutex(State())
    private let emptied = DispatchSemaphore(value: 0)
    /// Posted when the pool reaches its cap (see `watchCap`).
    private let capReached = DispatchSemaphore(value: 0)
    /// Lets the cap watcher wait for a connection to change state.
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
                return true
            }
            if !acceptAgain { return }
        }
    }

    /// Frees a connection for each connection that waits in the backlog while the pool
    /// is at its cap (`--max-connections`).
    ///
    /// libfcgi pins a kept connection to its thread, so a web server whose pool of
    /// kept connections is larger than the cap (Apache httpd keeps every connection it
    /// opened) would leave the connections beyond it waiting in the backlog for ever,
    /// with a request already written into them. While one waits, one connection at a
    /// time is picked to end:
    /// 1. one idle for `WorkerState.drainIdleNanoseconds` or longer, the longest idle
    ///    first, is shut down (`WorkerState.freeIfIdle`): nginx and Apache reuse their
    ///    most recently used connections first, so one idle that long is the least
    ///    likely to carry a request at that moment;
    /// 2. else one answering a request, or else the kept connection idle the shortest
    ///    time (the web server's next pick), is marked (`WorkerState.markLast`): its
    ///    current or next response is its last, which the web server learns before it
    ///    could send another request on it, so nothing is lost. If a marked idle
    ///    connection stays idle that long, it is shut down as in 1.
    /// The picked connection's thread then returns to `accept` and takes the waiting
    /// one. The rule remains to size the web server's pool within the cap; this keeps
    /// a larger one from hanging.
    ///
    /// The watcher blocks until the pool reaches the cap, then until a connection
    /// waits in the backlog (`poll` on the listening socket), then until a worker's
    /// connection changes state or the idle time of 1 is reached; its poll's timeout
    /// only notices that the pool left the cap.
    private func watchCap() {
        while true {
            capReached.wait()
            while true {
                let (atCap, draining) = state.withLock { ($0.isAtCap(maxThreads), $0.isDraining) }
                if draining { return }
                guard atCap else { break }
                var waiting = pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&waiting, 1, 250) > 0, waiting.revents & Int16(POLLIN) != 0 else { continue }
                // Armed before looking, so a connection that changes after the look
                // wakes the wait.
                idleWatch.arm()
                idleWatch.waitForChange(timeoutNanoseconds: pickConnectionToEnd())
            }
        }
    }

    /// Picks a connection to end, or shuts down a marked one idle too long (see
    /// `watchCap`); returns how long to wait at most before looking again.
    private func pickConnectionToEnd() -> UInt64 {
        let workers = state.withLock { Array($0.workers.values) }
        let now = MonotonicClock.nanoseconds()
        let threshold = WorkerState.drainIdleNanoseconds
        let idle = workers.compactMap { worker in worker.keptIdleSince.map { (worker, now &- $0) } }
            .sorted { $0.1 > $1.1 }  // longest idle first
        if let marked = workers.first(where: \.isMarked) {
            // One at a time: wait for it to come back to `accept`.
            guard let (_, idleFor) = idle.first(where: { $0.0 === marked }) else { return threshold }
            if idleFor >= threshold, marked.freeIfIdle(force: true) { return threshold }
            return threshold - min(idleFor, threshold - 1)
        }
        if idle.contains(where: { $0.1 >= threshold && $0.0.freeIfIdle(force: false) }) { return threshold }
        // An answering connection first, then the one idle the shortest time.
        _ =
            workers.contains { $0.keptIdleSince == nil && $0.markLast() }
            || idle.reversed().contains { $0.0.markLast() }
        return threshold
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
        /// Handling a request: its response is not finished.
        case answering
        /// Waiting for nginx's next request on a kept connection, since `since`
        /// (monotonic nanoseconds); `kept` once the connection served a request.
        case idle(Int32, since: UInt64, kept: Bool)
    }

    private struct State {
        var phase = Phase.accepting
        var isDraining = false
        /// The current connection was picked to end, to make room for one waiting in
        /// the backlog (see `markLast`, `freeIfIdle`).
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

    /// Marks the connection idle (waiting for nginx's next request); `kept` when it
    /// already served one.
    func markIdle(_ fd: Int32, kept: Bool) {
        let now = MonotonicClock.nanoseconds()
        state.withLock { $0.phase = .idle(fd, since: now, kept: kept) }
        idleWatch?.changed()
    }

    var isDraining: Bool { state.withLock { $0.isDraining } }

    /// Since when (monotonic nanoseconds) the kept connection waits for its next
    /// request; `nil` when it is not idle, or new: a web server sends its first
    /// request right after it connects, so a new connection's request is on its way.
    var keptIdleSince: UInt64? {
        state.withLock { state in
            if case .idle(_, let since, kept: true) = state.phase { return since }
            return nil
        }
    }

    /// Shuts the kept connection down if it is still idle (see `keptIdleSince`), to
    /// make room for a connection waiting in the backlog (see `WorkerPool.watchCap`);
    /// `false` when it is not idle any more (or marked already, unless `force`). Like
    /// draining, it never closes the descriptor: libfcgi does, once its read returns.
    func freeIfIdle(force: Bool) -> Bool {
        state.withLock { state in
            guard case .idle(let fd, _, kept: true) = state.phase, force || !state.isFreed else { return false }
            // Both ways, unlike draining: the web server sees the connection end at
            // once (a hang-up), before its next request could pick it, and opens a
            // new one. Apache checks a kept connection that way before reusing it
            // (`ap_proxy_is_socket_connected`); shut for reading only, it would look
            // alive until libfcgi closes it, and a request sent meanwhile fails.
            shutdown(fd, Int32(SHUT_RDWR))
            state.phase = .busy  // woken; never shut the same descriptor twice
            state.isFreed = true
            return true
        }
    }

    func markBusy() {
        state.withLock { $0.phase = .busy }
    }

    /// A request was read: its response follows.
    func markAnswering() {
        state.withLock { $0.phase = .answering }
        idleWatch?.changed()
    }

    /// The response was written (all but its end records); `true` when it is the
    /// connection's last: the server drains, or the connection was picked to make
    /// room (`markLast`, `freeIfIdle`).
    func finishAnswer() -> Bool {
        state.withLock { state in
            state.phase = .busy
            return state.isDraining || state.isFreed
        }
    }

    /// Makes the connection's current or next response its last (see
    /// `WorkerPool.watchCap`): it ends with `Records.closingEnd`, so the web server
    /// closes the connection instead of sending another request on it, and the thread
    /// returns to `accept`. `false` when the connection is neither answering nor a
    /// kept idle one, or is marked already.
    func markLast() -> Bool {
        state.withLock { state in
            guard !state.isFreed else { return false }
            switch state.phase {
            case .answering, .idle(_, _, kept: true):
                state.isFreed = true
                return true
            case .accepting, .busy, .idle:
                return false
            }
        }
    }

    /// Marked to end (`markLast`, `freeIfIdle`) and not back to `accept` yet.
    var isMarked: Bool { state.withLock { $0.isFreed } }

    func markAccepting() {
        state.withLock { state in
            state.phase = .accepting
            state.isFreed = false
        }
        idleWatch?.changed()
    }

    /// Serving a request (not waiting for one), for metrics.
    var isBusy: Bool {
        state.withLock { state in
            switch state.phase {
            case .busy, .answering: return true
            case .accepting, .idle: return false
            }
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
            if case .idle(let fd, let since, _) = state.phase, now &- since >= Self.drainIdleNanoseconds {
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

/// Lets the cap watcher (see `WorkerPool.watchCap`) wait until some connection
/// starts answering a request or becomes idle. Workers signal only while the watcher
/// waits, so the request path pays one atomic load.
final class IdleWatch: Sendable {
    private let isWaiting = Atomic<Bool>(false)
    private let idle = DispatchSemaphore(value: 0)

    func changed() {
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

    /// Waits (after `arm`) until a worker's connection starts answering or becomes
    /// idle, or the timeout passed.
    func waitForChange(timeoutNanoseconds: UInt64) {
        _ = idle.wait(timeout: .now() + .nanoseconds(Int(min(timeoutNanoseconds, 1_000_000_000))))
        // A signal sent after the timeout stays in the semaphore: take it, so the next
        // wait does not return at once for an old arrival.
        disarm()
    }

    /// Ends a wait (draining).
    func wake() {
        idle.signal()
    }
}
