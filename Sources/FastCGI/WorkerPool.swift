import Dispatch
import Foundation
import Glibc
import Synchronization

/// The worker threads: one per open connection, plus a few idle ones kept for reuse.
///
/// Its lock is taken once per connection (not per request), so it stays off the
/// per-request path.
final class WorkerPool: Sendable {
    private struct State {
        var threads = 0
        var busy = 0
        var accepted = 0
        var isDraining = false
        /// Threads waiting for a connection to serve.
        var idle: [IdleSlot] = []
        /// Per-thread state, for draining.
        var workers: [ObjectIdentifier: WorkerState] = [:]
    }

    private let state = Mutex(State())
    private let capacity = DispatchSemaphore(value: 0)
    private let emptied = DispatchSemaphore(value: 0)
    let maxThreads: Int
    let idleSeconds: Double

    init(maxThreads: Int, idleSeconds: Double) {
        self.maxThreads = maxThreads
        self.idleSeconds = idleSeconds
    }

    var statistics: FastCGIStatistics {
        state.withLock { FastCGIStatistics(threads: $0.threads, busyThreads: $0.busy, connectionsAccepted: $0.accepted) }
    }

    var isDraining: Bool { state.withLock { $0.isDraining } }

    /// Blocks the acceptor while every thread serves a connection; `false` when draining.
    func waitForCapacity() -> Bool {
        while true {
            let (draining, full) = state.withLock { state in
                (state.isDraining, state.threads - state.idle.count >= maxThreads)
            }
            if draining { return false }
            if !full { return true }
            _ = capacity.wait(timeout: .now() + 1)
        }
    }

    /// Hands `fd` to an idle thread, or starts a new one.
    func serve(_ fd: Int32, context: ConnectionContext) {
        let slot = state.withLock { state -> IdleSlot? in
            state.accepted += 1
            return state.idle.popLast()
        }
        if let slot {
            slot.handOff(fd)
            return
        }
        let worker = WorkerState()
        state.withLock { state in
            state.threads += 1
            state.workers[ObjectIdentifier(worker)] = worker
        }
        let thread = Thread { [self] in
            context.hooks.started()
            var next: Int32? = fd
            while let connection = next {
                ConnectionWorker(fd: connection, state: worker, context: context).serve()
                next = park()
            }
            context.hooks.stopping()
            threadExited(worker)
        }
        thread.name = "usersd-fcgi"
        thread.stackSize = 512 * 1024
        thread.start()
    }

    func requestStarted() { state.withLock { $0.busy += 1 } }
    func requestFinished() { state.withLock { $0.busy -= 1 } }

    /// Waits (up to `idleSeconds`) for another connection to serve.
    private func park() -> Int32? {
        let slot = IdleSlot()
        let parked = state.withLock { state -> Bool in
            guard !state.isDraining, state.idle.count < 64 else { return false }
            state.idle.append(slot)
            return true
        }
        guard parked else { return nil }
        capacity.signal()
        if let fd = slot.wait(seconds: idleSeconds) { return fd }
        // Timed out: leave the idle list unless a connection was handed over meanwhile.
        let removed = state.withLock { state -> Bool in
            guard let index = state.idle.firstIndex(where: { $0 === slot }) else { return false }
            state.idle.remove(at: index)
            return true
        }
        return removed ? nil : slot.wait(seconds: .infinity)
    }

    private func threadExited(_ worker: WorkerState) {
        let empty = state.withLock { state -> Bool in
            state.threads -= 1
            state.workers[ObjectIdentifier(worker)] = nil
            return state.threads == 0 && state.isDraining
        }
        capacity.signal()
        if empty { emptied.signal() }
    }

    /// Stops handing out connections, wakes idle threads and closes idle kept
    /// connections (their threads then exit); busy threads exit after their request.
    func beginDraining() {
        let (idle, workers) = state.withLock { state -> ([IdleSlot], [WorkerState]) in
            state.isDraining = true
            let idle = state.idle
            state.idle.removeAll()
            return (idle, Array(state.workers.values))
        }
        capacity.signal()
        for slot in idle { slot.handOff(nil) }
        for worker in workers { worker.beginDraining() }
    }

    /// Waits until every worker thread ended or the deadline passed.
    func waitUntilEmpty(deadline: DispatchTime) -> Bool {
        if state.withLock({ $0.threads == 0 }) { return true }
        while true {
            if emptied.wait(timeout: deadline) == .timedOut { return state.withLock { $0.threads == 0 } }
            if state.withLock({ $0.threads == 0 }) { return true }
        }
    }
}

/// A parked thread's mailbox: the next fd to serve, or `nil` to exit.
final class IdleSlot: Sendable {
    private let fd = Mutex<Int32??>(nil)
    private let ready = DispatchSemaphore(value: 0)

    func handOff(_ descriptor: Int32?) {
        fd.withLock { $0 = .some(descriptor) }
        ready.signal()
    }

    func wait(seconds: Double) -> Int32? {
        let deadline: DispatchTime = seconds.isFinite ? .now() + seconds : .distantFuture
        guard ready.wait(timeout: deadline) == .success else { return nil }
        return fd.withLock { $0 ?? nil }
    }
}

/// What one worker thread is doing, so draining can wake it safely.
///
/// An idle kept connection is woken with `shutdown(fd, SHUT_RD)`, never `close()`:
/// libfcgi owns the descriptor and closes it itself, so closing it here could close
/// a reused descriptor number.
final class WorkerState: Sendable {
    private enum Phase {
        case busy
        case idle(Int32)
    }

    private struct State {
        var phase = Phase.busy
        var isDraining = false
    }

    private let state = Mutex(State())

    /// Marks the connection idle (waiting for nginx's next request); `false` when the
    /// server is draining and the connection should be closed instead.
    func markIdle(_ fd: Int32) -> Bool {
        state.withLock { state in
            guard !state.isDraining else { return false }
            state.phase = .idle(fd)
            return true
        }
    }

    func markBusy() {
        state.withLock { $0.phase = .busy }
    }

    func beginDraining() {
        state.withLock { state in
            state.isDraining = true
            if case .idle(let fd) = state.phase {
                shutdown(fd, Int32(SHUT_RD))
            }
        }
    }
}
