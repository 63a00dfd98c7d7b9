internal import CFastCGI
import Glibc

/// A FastCGI client for one request, used to check usersd from inside.
///
/// The systemd watchdog is fed only when this round trip works: over a socket pair
/// to a worker thread of its own (`usersd-probe`), it exercises libfcgi, the request
/// decoder, the router and (for `/healthz`) the database, so a wedged process stops
/// petting the watchdog instead of lying from a timer. (That the pool accepts
/// connections is checked separately, `WorkerPool.isAcceptingConnections`.)
enum SelfProbe {
    /// Exchanges one request over `fd` (the client end of a connection some worker
    /// serves) and returns the HTTP status, or `nil`.
    static func status(over fd: Int32, path: String, timeoutMilliseconds: Int32) -> Int? {
        var timeout = timeval(tv_sec: Int(timeoutMilliseconds / 1000), tv_usec: Int(timeoutMilliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Self.encode(params: [
            ("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", path), ("REQUEST_URI", path), ("QUERY_STRING", ""),
            ("REQUEST_ID", "watchdog"),
        ])
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count
        else {
            return nil
        }
        // Read records until END_REQUEST; the status is in the first stdout bytes.
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < 65_536 {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received.append(contentsOf: buffer[0..<count])
            if containsEndRequest(received) { break }
        }
        return parseStatus(stdout(of: received))
    }

    /// BEGIN_REQUEST (responder, no keep-alive), PARAMS, empty PARAMS, empty STDIN.
    static func encode(params: [(String, String)]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes += Records.record(.beginRequest, requestID: 1, content: [0, 1, 0, 0, 0, 0, 0, 0])
        var body: [UInt8] = []
        for (name, value) in params {
            body += length(name.utf8.count) + length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
        }
        bytes += Records.record(.params, requestID: 1, content: body)
        bytes += Records.record(.params, requestID: 1)
        bytes += Records.record(.stdin, requestID: 1)
        return bytes
    }

    static func length(_ count: Int) -> [UInt8] {
        count < 128
            ? [UInt8(count)]
            : [
                UInt8((count >> 24) & 0x7F) | 0x80, UInt8((count >> 16) & 0xFF), UInt8((count >> 8) & 0xFF),
                UInt8(count & 0xFF),
            ]
    }

    /// The concatenated STDOUT content of the complete records.
    static func stdout(of bytes: [UInt8]) -> [UInt8] {
        Records.complete(in: bytes[...]).filter { $0.kind == .stdout }.flatMap { bytes[$0.contentRange] }
    }

    static func containsEndRequest(_ bytes: [UInt8]) -> Bool {
        Records.complete(in: bytes[...]).contains { $0.kind == .endRequest }
    }

    /// `Status: 200 OK\r\n...` → 200.
    static func parseStatus(_ head: [UInt8]) -> Int? {
        let text = String(decoding: head.prefix(64), as: UTF8.self)
        guard text.hasPrefix("Status: ") else { return nil }
        return Int(text.dropFirst(8).prefix(3))
    }
}

extension FastCGIServer {
    /// One FastCGI round trip through a worker, the router and (for `/healthz`) the
    /// database, over a socket pair (connecting to the listening socket by path may
    /// be forbidden: under systemd it belongs to nginx's group). `nil` when there is
    /// no answer, or when no thread is accepting connections although it could.
    public func probe(path: String = "/healthz", timeoutMilliseconds: Int32 = 5000) -> Int? {
        guard pool.isAcceptingConnections else { return nil }
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            return nil
        }
        defer { close(fds[1]) }
        guard pool.serveDetached(fds[0]) else {
            close(fds[0])
            return nil
        }
        return SelfProbe.status(over: fds[1], path: path, timeoutMilliseconds: timeoutMilliseconds)
    }
}
