import Basics
internal import CFastCGI
import Glibc
import Logging
import Synchronization

/// Where the listening socket comes from.
public enum ListenSource: Sendable, Equatable {
    /// Create a unix socket at this path (mode and optional group applied).
    case path(String, mode: UInt32, group: String?)
    /// Listen on TCP at this address (`127.0.0.1`, `::1`, `0.0.0.0`) and port, for web
    /// servers on other hosts. FastCGI has no authentication: only peers in the
    /// server's `allowFrom` ranges are served.
    case tcp(host: String, port: UInt16)
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
///
/// On a TCP socket (created or inherited) a connection from an address outside
/// `allowFrom` is closed at once, before a byte is read, and logged: FastCGI carries
/// no authentication, so the address is the only check.
final class Listener: Sendable {
    let fd: Int32
    /// Whether usersd created the socket (and shuts it down and closes it at the end).
    let isOwned: Bool
    /// Set when usersd created a unix socket file (and must remove it at exit).
    let ownedPath: String?
    /// Whether the socket is TCP (AF_INET or AF_INET6): peers are checked.
    let isTCP: Bool
    let allowFrom: [AddressRange]
    /// Refused peers since the last line about them (one line a second at most).
    private let refusals = Mutex<(count: Int, lastLogged: UInt64)>((0, 0))

    init(source: ListenSource, allowFrom: [AddressRange] = AddressRange.loopback) throws(ListenError) {
        self.allowFrom = allowFrom
        switch source {
        case .inherited(let descriptor):
            guard ListenSource.isListeningSocket(descriptor) else {
                throw ListenError(description: "fd \(descriptor) is not a listening socket")
            }
            fd = descriptor
            isOwned = false
            ownedPath = nil
        case .path(let path, let mode, let group):
            fd = try Self.createSocket(path: path, mode: mode, group: group)
            isOwned = true
            ownedPath = path
        case .tcp(let host, let port):
            fd = try Self.createTCPSocket(host: host, port: port)
            isOwned = true
            ownedPath = nil
        }
        isTCP = Self.family(of: fd).map { $0 == AF_INET || $0 == AF_INET6 } ?? false
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
    /// woken for draining, EINVAL once `stopAccepting` shut an owned socket down,
    /// ECONNABORTED for a TCP peer outside `allowFrom`, closed at once).
    ///
    /// On Linux an accepted socket does not inherit O_NONBLOCK, so it is blocking, as
    /// libfcgi expects; close-on-exec is set atomically.
    func acceptBlocking() -> Int32 {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let connection = usersd_accept_cloexec(fd, &address, &length)
        guard connection >= 0, isTCP else { return connection }
        guard let peer = Self.text(of: &address), allowFrom.allows(peer) else {
            Glibc.close(connection)
            refused(Self.text(of: &address) ?? "?")
            errno = ECONNABORTED
            return -1
        }
        // Each response is a few records written one after another: without this, Nagle's
        // algorithm holds the last small one back until the peer acknowledges the first.
        var on: Int32 = 1
        setsockopt(connection, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        return connection
    }

    /// Logs a refused peer: the first at once, then at most one line a second with
    /// the count, so a flood of connections cannot flood the journal.
    private func refused(_ peer: String) {
        let now = MonotonicClock.coarseNanoseconds()
        let report = refusals.withLock { state -> Int? in
            state.count += 1
            guard state.lastLogged == 0 || now &- state.lastLogged >= 1_000_000_000 else { return nil }
            defer { state = (0, now) }
            return state.count
        }
        if let count = report {
            Log.warning(
                "FastCGI connection refused: peer not in --allow-from", ["peer": peer, "refused": String(count)])
        }
    }

    /// Makes threads blocked in `accept` return. Only a socket usersd created is shut
    /// down; an inherited one belongs to the service manager (threads are woken
    /// with a signal instead, see `WorkerPool`).
    func stopAccepting() {
        if isOwned { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Closes what usersd owns: its own socket (and its file); an inherited socket is
    /// left open for the service manager.
    func close() {
        guard isOwned else { return }
        if let ownedPath { unlink(ownedPath) }
        Glibc.close(fd)
    }

    /// The address family of a socket (`AF_UNIX`, `AF_INET`, `AF_INET6`).
    static func family(of fd: Int32) -> Int32? {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return named == 0 ? Int32(address.ss_family) : nil
    }

    /// The textual IP address of an IPv4 or IPv6 socket address.
    static func text(of address: inout sockaddr_storage) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = Int32(address.ss_family)
        let written: UnsafePointer<CChar>? = withUnsafePointer(to: &address) { storage in
            switch family {
            case AF_INET:
                storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    withUnsafePointer(to: v4.pointee.sin_addr) {
                        inet_ntop(AF_INET, $0, &buffer, socklen_t(buffer.count))
                    }
                }
            case AF_INET6:
                storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    withUnsafePointer(to: v6.pointee.sin6_addr) {
                        inet_ntop(AF_INET6, $0, &buffer, socklen_t(buffer.count))
                    }
                }
            default: nil
            }
        }
        guard written != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A TCP socket listening at `host:port` (an IPv4 or IPv6 literal).
    private static func createTCPSocket(host: String, port: UInt16) throws(ListenError) -> Int32 {
        guard let bytes = AddressRange.bytes(of: host) else {
            throw ListenError(description: "--listen: '\(host)' is not an IPv4 or IPv6 address")
        }
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListenError(description: "socket: \(String(cString: strerror(errno)))") }
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if family == AF_INET {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: bytes) }
            bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } else {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: bytes) }
            bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard bound == 0, listen(fd, 4096) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ListenError(description: "cannot listen on \(host):\(port): \(message)")
        }
        return fd
    }
}
