import Foundation

/// A value behind a lock whose waiters sleep at once, for state that many threads
/// take on every request.
///
/// `Synchronization.Mutex` spins before it blocks. With more threads than cores (every
/// FastCGI worker submits to the pool, every connection thread takes from it), the
/// holder is often preempted while others spin, and the spinning costs more than the
/// work it guards (docs/architecture.md, "Locks on the request path"). `NSLock` is
/// glibc's default pthread mutex, whose waiters go to the kernel's futex wait instead.
final class SleepingMutex<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
