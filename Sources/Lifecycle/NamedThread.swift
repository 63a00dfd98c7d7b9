import Foundation
import Glibc

/// Starts OS threads that carry their name where operators look for it.
///
/// Foundation's `Thread.name` is not passed to the kernel on Linux, so `top -H`,
/// `ps -L` and `/proc/<pid>/task/*/comm` showed every thread under the process's
/// name. The body sets the name itself, through `/proc/thread-self/comm` (the
/// kernel keeps at most 15 bytes; glibc's `pthread_setname_np` does the same write
/// and is not visible to Swift without `_GNU_SOURCE`).
public enum NamedThread {
    /// Starts `body` on a new thread named `name` (cut to 15 bytes).
    public static func start(_ name: String, stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread {
            setCurrentName(name)
            body()
        }
        thread.name = name
        if let stackSize { thread.stackSize = stackSize }
        thread.start()
    }

    /// Puts the calling thread under `scheduling`; returns 0 or the `errno` of the
    /// refusal (a seccomp filter without `sched_setscheduler`, for one). Threads it
    /// creates afterwards inherit the policy (pthreads' default).
    @discardableResult
    public static func setCurrentScheduling(_ scheduling: ThreadScheduling) -> Int32 {
        var parameters = sched_param(sched_priority: 0)
        // pid 0: the calling thread (Linux schedules threads, not processes).
        return sched_setscheduler(0, scheduling.policy, &parameters) == 0 ? 0 : errno
    }

    /// The calling thread's scheduling policy (`SCHED_OTHER` 0, `SCHED_BATCH` 3).
    public static var currentSchedulingPolicy: Int32 { sched_getscheduler(0) }

    /// Names the calling thread (cut to 15 bytes); does nothing if /proc is missing.
    public static func setCurrentName(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// The calling thread's kernel name.
    public static var currentName: String {
        let fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return "" }
        return String(decoding: buffer.prefix(count).filter { $0 != 10 }, as: UTF8.self)
    }
}

/// How the kernel schedules a thread against the others on the machine.
public enum ThreadScheduling: String, Sendable {
    /// `SCHED_OTHER`: a thread woken up may preempt the one running.
    case normal
    /// `SCHED_BATCH`: the same share of CPU, but a thread woken up never preempts the
    /// one running; it waits for that one's slice or its next block. For the FastCGI
    /// workers, whose wake-ups (nginx's next request, a committed write) would
    /// otherwise interrupt the writer thread inside its transaction and nginx in the
    /// middle of its work (see docs/architecture.md, "Threads").
    case batch

    /// The policy number of `sched_setscheduler(2)`. Glibc declares `SCHED_BATCH` only
    /// under `_GNU_SOURCE`, which Swift's Glibc module does not define.
    var policy: Int32 {
        switch self {
        case .normal: 0  // SCHED_OTHER
        case .batch: 3  // SCHED_BATCH
        }
    }
}
