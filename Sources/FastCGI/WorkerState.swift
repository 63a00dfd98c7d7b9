import Basics
import Dispatch
import Glibc
import Synchronization

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
        /// The current connection, idle, may be shut to make room (see `freeIfIdle`).
        var idleMayBeShut = false
        var thread: pthread_t?
    }

    /// During a drain, a kept connection idle for this long is closed. nginx reuses
    /// its most recently used connections first, so one idle this long is the least
    /// likely to carry a request at the moment it is closed (which would lose it).
    static let drainIdleNanoseconds: UInt64 = 250_000_000

    /// Behind nginx, a kept connection idle this long may be shut to make room (see
    /// `freeIfIdle`).
    static let nginxIdleNanoseconds: UInt64 = 2_000_000_000

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
    func markIdle(_ fd: Int32, kept: Bool, idleMayBeShut: Bool = false) {
        let now = MonotonicClock.nanoseconds()
        state.withLock { state in
            state.phase = .idle(fd, since: now, kept: kept)
            state.idleMayBeShut = idleMayBeShut
        }
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
    ///
    /// Behind nginx only once idle for `nginxIdleNanoseconds`: nginx takes a
    /// connection from its keep-alive cache and writes the next request at once, so
    /// one shut at that moment loses the request (nginx never retries a POST). nginx
    /// reuses its most recently used connections first, so one idle that long is
    /// picked only when nginx is nearly idle too; before that, `markLast` ends it at
    /// the end of its next response, which is safe. nginx holds few idle connections
    /// (its `keepalive`, which the sizing rule keeps below `--max-connections`), so
    /// this happens only when a site exceeds that rule. Apache httpd checks a kept
    /// connection before reusing it, and other web servers open one per request.
    func freeIfIdle(force: Bool, now: UInt64) -> Bool {
        state.withLock { state in
            guard case .idle(let fd, let since, kept: true) = state.phase, force || !state.isFreed,
                state.idleMayBeShut || now &- since >= Self.nginxIdleNanoseconds
            else { return false }
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
