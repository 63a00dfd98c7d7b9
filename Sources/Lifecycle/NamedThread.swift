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
