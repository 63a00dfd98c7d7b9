import Dispatch
import Foundation
import Synchronization

/// Runs a request's async handler on the FastCGI worker thread that accepted it.
///
/// The worker calls `run(_:)`, which starts a `Task` that prefers this executor and
/// then executes that task's jobs on the worker thread until the handler returns.
/// Work that never suspends (a GET served from the worker's own read connection)
/// therefore costs no thread switch at all; a write suspends on the database thread
/// and is resumed here. While the worker is not driving a request (it waits for the
/// next one on a kept-alive connection), jobs that still arrive for this executor are
/// handed to the shared `OverflowRunner` so they can never starve.
final class WorkerExecutor: TaskExecutor {
    private struct State {
        var jobs: [UnownedJob] = []
        var isDriving = false
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let queued = state.withLock { state in
            guard state.isDriving else { return false }
            state.jobs.append(job)
            return true
        }
        if queued {
            wakeup.signal()
        } else {
            OverflowRunner.shared.submit(job, executor: asUnownedTaskExecutor())
        }
    }

    /// Runs `operation` to completion, executing its nonisolated parts on the calling
    /// thread. Blocks the calling thread: only for FastCGI worker threads.
    @available(*, noasync, message: "blocks the calling thread; only FastCGI workers drive requests")
    func run<T: Sendable>(_ operation: @escaping @Sendable () async -> T) -> T {
        let box = ResultBox<T>()
        state.withLock { $0.isDriving = true }
        Task(executorPreference: self) { [wakeup] in
            let value = await operation()
            box.value.withLock { $0 = value }
            wakeup.signal()
        }
        while true {
            let jobs = state.withLock { state -> [UnownedJob] in
                let jobs = state.jobs
                state.jobs.removeAll(keepingCapacity: true)
                return jobs
            }
            for job in jobs {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
            if let value = box.value.withLock({ $0.take() }) {
                let leftovers = state.withLock { state -> [UnownedJob] in
                    state.isDriving = false
                    defer { state.jobs.removeAll() }
                    return state.jobs
                }
                for job in leftovers {
                    OverflowRunner.shared.submit(job, executor: asUnownedTaskExecutor())
                }
                return value
            }
            if jobs.isEmpty { wakeup.wait() }
        }
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
        let thread = Thread { [self] in run() }
        thread.name = "usersd-overflow"
        thread.start()
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
