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
    /// waits in the backlog (`poll` on the listening socket) and still waits, with the
    /// pool still at its cap and no connection accepted meanwhile,
    /// `patienceNanoseconds` later: a connection seen in the
    /// backlog may be the one a worker is about to accept (then no other waits, and
    /// ending a connection would cut the one just accepted). Then it picks, and waits
    /// until a worker's connection changes state or the idle time of 1 is reached. Its
    /// poll's timeout only notices that the pool left the cap.
    private func watchCap() {
        while true {
            capReached.wait()
            var waitingSince: (at: UInt64, accepted: Int)?
            while true {
                let (atCap, draining, accepted) = state.withLock {
                    ($0.isAtCap(maxThreads), $0.isDraining, $0.accepted)
                }
                if draining { return }
                guard atCap else { break }
                var waiting = pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&waiting, 1, 250) > 0, waiting.revents & Int16(POLLIN) != 0 else {
                    waitingSince = nil
                    continue
                }
                let now = MonotonicClock.nanoseconds()
                // The backlog is first in, first out: while no connection was accepted,
                // the one seen waiting then is the one waiting now. After an accept, the
                // one waiting now may have just arrived (one worker taking connection
                // after connection), so its wait starts now.
                if waitingSince?.accepted != accepted { waitingSince = (now, accepted) }
                let since = waitingSince?.at ?? now
                // Armed before looking, so a connection that changes after the look
                // wakes the wait.
                idleWatch.arm()
                if now &- since < Self.patienceNanoseconds {
                    idleWatch.waitForChange(timeoutNanoseconds: Self.patienceNanoseconds - (now &- since))
                    continue
                }
                idleWatch.waitForChange(timeoutNanoseconds: pickConnectionToEnd())
            }
        }
    }

    /// How long a connection must keep waiting in the backlog, the pool at its cap,
    /// before a connection is ended for it (see `watchCap`).
    static let patienceNanoseconds: UInt64 = 50_000_000

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
            if idleFor >= threshold {
                // Shut it if its web server allows, else its next response ends it.
                _ = marked.freeIfIdle(force: true, now: now)
                return threshold
            }
            return threshold - min(idleFor, threshold - 1)
        }
        if idle.contains(where: { $0.1 >= threshold && $0.0.freeIfIdle(force: false, now: now) }) { return threshold }
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
