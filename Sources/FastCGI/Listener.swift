internal import CFastCGI
import Glibc

/// Where the listening socket comes from.
public enum ListenSource: Sendable, Equatable {
    /// Create a unix socket at this path (mode and optional group applied).
    case path(String, mode: UInt32, group: String?)
    /// Use a socket that was passed in (systemd's fd 3, or fd 0 from spawn-fcgi /
    /// `StandardInput=socket`). It is never shut down, closed early or unlinked: the
    /// service manager owns it and it outlives this process.
    case inherited(Int32)

    /// The socket systemd (`LISTEN_FDS`, checked first) or spawn-fcgi (a listening
    /// socket on fd 0) passed in, or `nil`.
    public static func inherited(environment: [String: String]) -> ListenSource? {
        if let count = environment["LISTEN_FDS"].flatMap(Int.init), count >= 1,
            let pid = environment["LISTEN_PID"].flatMap(Int32.init), pid == getpid()
        {
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDNAMES")
            return .inherited(3)
        }
        if isListeningSocket(0) { return .inherited(0) }
        return nil
    }

    static func isListeningSocket(_ fd: Int32) -> Bool {
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting == 1
    }
}

/// Why the listener could not be set up; printed as one line.
public struct ListenError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// The listening socket. Worker threads block in `accept` on it directly.
final class Listener: Sendable {
    let fd: Int32
    /// Set when usersd created the socket file (and must remove it at exit).
    let ownedPath: String?

    init(source: ListenSource) throws(ListenError) {
        switch source {
        case .inherited(let descriptor):
            guard ListenSource.isListeningSocket(descriptor) else {
                throw ListenError(description: "fd \(descriptor) is not a listening socket")
            }
            fd = descriptor
            ownedPath = nil
        case .path(let path, let mode, let group):
            fd = try Self.createSocket(path: path, mode: mode, group: group)
            ownedPath = path
        }
        // Blocking: the kernel then wakes exactly one waiting thread per connection.
        // (A previous process sharing an inherited socket may have left it non-blocking.)
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    private static func createSocket(path: String, mode: UInt32, group: String?) throws(ListenError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ListenError(description: "socket path too long (\(pathBytes.count) bytes, at most 107): \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + 1)

        var status = stat()
        if lstat(path, &status) == 0 {
            guard (status.st_mode & S_IFMT) == S_IFSOCK else {
                throw ListenError(description: "\(path) exists and is not a socket")
            }
            // A live socket means another usersd serves it: refuse rather than steal it.
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, length) }
            }
            Glibc.close(probe)
            if connected == 0 {
                throw ListenError(description: "another process is already serving on \(path)")
            }
            unlink(path)
        }

        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListenError(description: "socket: \(String(cString: strerror(errno)))") }
        // Create the file with no permissions for others, then set the exact mode.
        let previousMask = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        let bindErrno = errno
        umask(previousMask)
        guard bound == 0 else {
            Glibc.close(fd)
            throw ListenError(description: "cannot bind \(path): \(String(cString: strerror(bindErrno)))")
        }
        if let group {
            guard let entry = getgrnam(group) else {
                Glibc.close(fd)
                unlink(path)
                throw ListenError(description: "unknown group '\(group)' for the socket")
            }
            guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
                let message = String(cString: strerror(errno))
                Glibc.close(fd)
                unlink(path)
                throw ListenError(description: "cannot give \(path) to group \(group): \(message)")
            }
        }
        guard chmod(path, mode_t(mode)) == 0, listen(fd, 4096) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            unlink(path)
            throw ListenError(description: "cannot listen on \(path): \(message)")
        }
        return fd
    }

    /// Blocks until a connection arrives; -1 with `errno` set otherwise (EINTR when
    /// woken for draining, EINVAL once `stopAccepting` shut an owned socket down).
    ///
    /// On Linux an accepted socket does not inherit O_NONBLOCK, so it is blocking, as
    /// libfcgi expects; close-on-exec is set atomically.
    func acceptBlocking() -> Int32 {
        usersd_accept_cloexec(fd)
    }

    /// Makes threads blocked in `accept` return. Only a socket usersd created is shut
    /// down; an inherited one belongs to the service manager (threads are woken
    /// with a signal instead, see `WorkerPool`).
    func stopAccepting() {
        if ownedPath != nil { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Closes what usersd owns: its own socket (and its file); an inherited socket is
    /// left open for the service manager.
    func close() {
        if let ownedPath {
            unlink(ownedPath)
            Glibc.close(fd)
        }
    }
}
