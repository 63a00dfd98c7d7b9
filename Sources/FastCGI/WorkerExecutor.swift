import Dispatch
import Foundation
import Lifecycle
import Synchronization

/// Runs a worker thread's task, and with it every request's async handler, on that
/// FastCGI worker thread.
///
/// The worker calls `run(_:)` once for its life (the probe thread once per probe).
/// It starts the task as an *immediate* task that prefers this executor: it runs
/// synchronously on the worker thread up to its first suspension, so a handler that
/// never suspends (a GET served from the worker's own read connection or the user
/// cache) costs no enqueue, no lock round trip and no thread switch. A handler that
/// suspends (a write waits for the database thread) is resumed through `enqueue`,
/// and the worker runs those jobs until the task is done. While the task blocks
/// waiting for the next request or connection (`whileWaiting`), jobs that still
/// arrive for this executor are handed to the shared `OverflowRunner` so they can
/// never starve.
final class WorkerExecutor: TaskExecutor {
    private struct State {
        var jobs: [UnownedJob] = []
        var isDriving = false
        var isFinished = false
        /// The driver is (about to be) blocked in `wakeup.wait()`: the next enqueue or
        /// the finish signals it. Signals are sent only then, so each is consumed.
        var isWaiting = false
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (queued, wake) = state.withLock { state -> (Bool, Bool) in
            guard state.isDriving else { return (false, false) }
            state.jobs.append(job)
            defer { state.isWaiting = false }
            return (true, state.isWaiting)
        }
        if !queued {
            OverflowRunner.shared.submit(job, executor: asUnownedTaskExecutor())
        } else if wake {
            wakeup.signal()
        }
    }

    /// The handler finished: wake the driver if it waits.
    private func finish() {
        let wake = state.withLock { state -> Bool in
            state.isFinished = true
            defer { state.isWaiting = false }
            return state.isWaiting
        }
        if wake { wakeup.signal() }
    }

    /// Runs `body`, which blocks waiting for the connection (the next request), with
    /// the executor marked as not driving: jobs that arrive for it meanwhile go to the
    /// `OverflowRunner` instead of waiting for the next request. Called from the
    /// connection's task, on this executor's thread.
    func whileWaiting<T>(_ body: () -> T) -> T {
        state.withLock { $0.isDriving = false }
        defer { state.withLock { $0.isDriving = true } }
        return body()
    }

    /// Runs `operation` to completion, executing its nonisolated parts on the calling
    /// thread. Blocks the calling thread: only for FastCGI worker threads.
    @available(*, noasync, message: "blocks the calling thread; only FastCGI workers drive requests")
    func run<T: Sendable>(_ operation: @escaping @Sendable () async -> T) -> T {
        let box = ResultBox<T>()
        state.withLock { state in
            state.isDriving = true
            state.isFinished = false
        }
        Task.immediate(executorPreference: self) { [self] in
            let value = await operation()
            box.value.withLock { $0 = value }
            finish()
        }
        while true {
            let (jobs, finished) = state.withLock { state -> ([UnownedJob], Bool) in
                if state.jobs.isEmpty {
                    if state.isFinished {
                        state.isDriving = false
                        return ([], true)
                    }
                    state.isWaiting = true
                    return ([], false)
                }
                let jobs = state.jobs
                state.jobs.removeAll(keepingCapacity: true)
                return (jobs, false)
            }
            if finished { break }
            if jobs.isEmpty {
                wakeup.wait()
                continue
            }
            for job in jobs {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
        }
        guard let value = box.value.withLock({ $0.take() }) else {
            preconditionFailure("the handler finished without a result")
        }
        return value
    }
}

/// Holds a task's result until the driving thread picks it up.
final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
}

/// One thread that runs jobs arriving for a worker executor while its worker is busy
/// waiting on a connection. Rare by construction (handlers do not leave work behind),
/// but it keeps such work from waiting for the next request on that connection.
final class OverflowRunner: Sendable {
    static let shared = OverflowRunner()

    private struct Entry: @unchecked Sendable {
        // UnownedJob and UnownedTaskExecutor are plain references the runtime hands
        // us to run exactly once; they are moved to the runner thread and used there.
        let job: UnownedJob
        let executor: UnownedTaskExecutor
    }

    private let queue = Mutex<[Entry]>([])
    private let wakeup = DispatchSemaphore(value: 0)

    private init() {
        NamedThread.start("usersd-overflow") { [self] in run() }
    }

    private func run() -> Never {
        while true {
            wakeup.wait()
            let entries = queue.withLock { entries -> [Entry] in
                defer { entries.removeAll() }
                return entries
            }
            for entry in entries {
                entry.job.runSynchronously(on: entry.executor)
            }
        }
    }

    func submit(_ job: UnownedJob, executor: UnownedTaskExecutor) {
        queue.withLock { $0.append(Entry(job: job, executor: executor)) }
        wakeup.signal()
    }
}
