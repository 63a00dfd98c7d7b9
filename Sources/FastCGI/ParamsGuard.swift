import Glibc

/// Checks the records of the next request on a connection, without consuming them,
/// before libfcgi parses them.
///
/// libfcgi allocates whatever name/value lengths a PARAMS or GET_VALUES record
/// declares and aborts the process when that allocation fails (a 2 GB length is one
/// packet). usersd therefore peeks at the records up to the end of the params
/// (the empty PARAMS record) and refuses the connection when a record is malformed;
/// params larger than `maximumBytes` (a name or value included) get a 431 answer.
/// Only what passes reaches `FCGX_Accept_r`.
///
/// The limit is 64 KiB of params: nginx's default header buffers (4 × 8 KiB) stay far
/// below it, and peeking needs the whole params to fit in the socket's buffer.
enum ParamsGuard {
    enum Verdict: Equatable {
        case ok
        /// Not a sane FastCGI request: close the connection.
        case reject
        /// Params over `maximumBytes`: answer 431 on this request id, then close.
        case tooLarge(requestID: UInt16)
        /// The peer closed the connection (or a drain woke it).
        case closed
    }

    static let maximumBytes = 64 * 1024

    /// Blocks until the next request's params are complete (waiting for the first
    /// byte as long as nginx keeps the connection idle, then at most `deadline`
    /// seconds for the rest).
    /// `buffer` is the worker thread's peek buffer, reused across requests (start it
    /// small: a request's params are usually under 1 KB; it grows when needed).
    static func check(fd: Int32, buffer: inout [UInt8], deadlineSeconds: Double = 2) -> Verdict {
        var started: Double?
        var lastSize = -1
        var waits = 0
        // Wait in poll, not in recv: nginx reading our last answer signals "writable" on
        // this socket, which wakes a thread blocked in recv for nothing (a unix socket
        // has one wait queue); poll's wait for POLLIN ignores that event. Measured under
        // GET load: 2.0-2.2 context switches per request down to 1.4-1.6, for one more
        // system call. Draining's shutdown(SHUT_RD) still wakes it.
        var wait = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&wait, 1, -1) < 0 && errno == EINTR {}
        while true {
            let size = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_PEEK)) }
            if size == 0 { return .closed }
            if size < 0 {
                if errno == EINTR { continue }
                return .closed
            }
            switch inspect(buffer[0..<size]) {
            case .complete: return .ok
            case .invalid: return .reject
            case .tooLarge(let requestID): return .tooLarge(requestID: requestID)
            case .incomplete:
                if size == buffer.count {
                    // Room for the largest params allowed, their record headers and one
                    // more record: past that, `inspect` answers tooLarge or invalid.
                    guard buffer.count < maximumBytes else { return .reject }
                    buffer = [UInt8](repeating: 0, count: 4 * maximumBytes)
                    continue
                }
            }
            let now = monotonicSeconds()
            if started == nil { started = now }
            if now - started! > deadlineSeconds { return .reject }
            // Wait for more bytes than we have seen: the socket stays readable while
            // peeked bytes are unread, so poll would return at once; back off instead.
            if size == lastSize {
                waits += 1
                usleep(UInt32(min(50_000, 500 << min(waits, 7))))
            } else {
                waits = 0
            }
            lastSize = size
        }
    }

    enum Inspection: Equatable {
        case complete, incomplete, invalid
        case tooLarge(UInt16)
    }

    /// Walks the records in `bytes`: complete at the first empty PARAMS record.
    static func inspect(_ bytes: ArraySlice<UInt8>) -> Inspection {
        var index = bytes.startIndex
        // The params' bytes: a slice of `bytes` while they sit in one record (nginx sends
        // them so), copied together only when they are spread over several.
        var params: ArraySlice<UInt8> = []
        var gathered: [UInt8]?
        var requestID: UInt16?
        while index + 8 <= bytes.endIndex {
            let version = bytes[index]
            let type = bytes[index + 1]
            let length = Int(bytes[index + 4]) << 8 | Int(bytes[index + 5])
            let padding = Int(bytes[index + 6])
            guard version == 1, (1...11).contains(type) else { return .invalid }
            let contentStart = index + 8
            let end = contentStart + length + padding
            guard end <= bytes.endIndex else {
                if params.count + length > maximumBytes, type == 4, let requestID { return .tooLarge(requestID) }
                return pairsAreSane(params, allowPartial: true) ? .incomplete : .invalid
            }
            let content = bytes[contentStart..<(contentStart + length)]
            switch type {
            case 1:  // BEGIN_REQUEST
                requestID = UInt16(bytes[index + 2]) << 8 | UInt16(bytes[index + 3])
            case 4:  // PARAMS
                if length == 0 { return pairsAreSane(params, allowPartial: false) ? .complete : .invalid }
                if params.isEmpty {
                    params = content
                } else {
                    if gathered == nil { gathered = Array(params) }
                    params = []  // drop the slice's reference first, so the append is in place
                    gathered!.append(contentsOf: content)
                    params = gathered![...]
                }
                if params.count > maximumBytes { return requestID.map { .tooLarge($0) } ?? .invalid }
            case 9:  // GET_VALUES (a management record libfcgi parses the same way)
                if !pairsAreSane(content, allowPartial: false) { return .invalid }
            default:
                break
            }
            index = end
        }
        return pairsAreSane(params, allowPartial: true) ? .incomplete : .invalid
    }

    /// Every declared name/value length is small; with `allowPartial`, the last pair
    /// may still be arriving.
    static func pairsAreSane(_ bytes: ArraySlice<UInt8>, allowPartial: Bool) -> Bool {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            guard let (nameLength, afterName) = length(bytes, at: index),
                let (valueLength, afterValue) = length(bytes, at: afterName)
            else { return allowPartial }
            guard nameLength <= maximumBytes, valueLength <= maximumBytes else { return false }
            index = afterValue + nameLength + valueLength
        }
        return index == bytes.endIndex || allowPartial
    }

    /// A FastCGI name-value length: one byte, or four with the high bit set.
    static func length(_ bytes: ArraySlice<UInt8>, at index: Int) -> (Int, Int)? {
        guard index < bytes.endIndex else { return nil }
        if bytes[index] & 0x80 == 0 { return (Int(bytes[index]), index + 1) }
        guard index + 4 <= bytes.endIndex else { return nil }
        let value = Int(bytes[index] & 0x7F) << 24 | Int(bytes[index + 1]) << 16 | Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
        return (value, index + 4)
    }

    /// Answers `requestID` with 431 and a JSON error, written straight to the socket
    /// (libfcgi never saw this request). Best effort: the peer may be gone.
    static func answerTooLarge(fd: Int32, requestID: UInt16) {
        let body = #"{"error":"request headers too large (over 64 KiB of FastCGI params)"}"#
        let head = "Status: 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
        let bytes = Records.record(.stdout, requestID: requestID, content: Array((head + body).utf8))
            + Records.closingEnd(requestID: requestID, appStatus: 0)
        Records.send(bytes, to: fd)
    }

    static func monotonicSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
