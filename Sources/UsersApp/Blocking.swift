import Dispatch
import Synchronization

/// Runs async work from a plain thread (the main thread) and waits for it.
///
/// Only for the process's start and stop sequence; never call it from async code.
@available(*, noasync, message: "blocks the calling thread")
func blockingWait<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    try blockingWait(until: .distantFuture, operation)
}

/// Like `blockingWait`, but gives up after `timeoutSeconds` (the work keeps running).
@available(*, noasync, message: "blocks the calling thread")
func blockingWait<T: Sendable>(
    timeoutSeconds: Double, _ operation: @escaping @Sendable () async throws -> T
) throws -> T {
    try blockingWait(until: .now() + timeoutSeconds, operation)
}

@available(*, noasync, message: "blocks the calling thread")
private func blockingWait<T: Sendable>(
    until deadline: DispatchTime, _ operation: @escaping @Sendable () async throws -> T
) throws -> T {
    let box = Box<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        let result: Result<T, any Error>
        do {
            result = .success(try await operation())
        } catch {
            result = .failure(error)
        }
        box.result.withLock { $0 = result }
        done.signal()
    }
    guard done.wait(timeout: deadline) == .success else { throw TimedOut() }
    return try box.result.withLock { $0! }.get()
}

struct TimedOut: Error {}

private final class Box<T: Sendable>: Sendable {
    let result = Mutex<Result<T, any Error>?>(nil)
}
