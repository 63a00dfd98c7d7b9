import Glibc

/// Sends `sd_notify` messages (`READY=1`, `STATUS=...`, `STOPPING=1`, `WATCHDOG=1`)
/// to the socket systemd names in `NOTIFY_SOCKET`; does nothing without it.
///
/// Hand-rolled (one datagram per message) so usersd needs no libsystemd.
///
/// Never blocks: when the manager stops reading, the socket's queue fills and a
/// blocking send would hang the sender (and with it shutdown). Messages are sent
/// with `MSG_DONTWAIT`; a full queue drops periodic ones (STATUS, WATCHDOG) and
/// retries state changes (READY, STOPPING, RELOADING) for up to one second.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?

    public init(environment: [String: String]) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    @discardableResult
    public func notify(_ message: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        // A leading '@' names an abstract socket: its first byte is NUL.
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count)
        let payload = Array(message.utf8)
        let isStateChange = !(message.hasPrefix("STATUS=") || message.hasPrefix("WATCHDOG="))
        var attempts = isStateChange ? 100 : 1
        while true {
            let sent = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(fd, payload, payload.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), socketAddress, length)
                }
            }
            if sent == payload.count { return true }
            attempts -= 1
            guard sent < 0, errno == EAGAIN || errno == EINTR, attempts > 0 else { return false }
            usleep(10_000)
        }
    }
}
