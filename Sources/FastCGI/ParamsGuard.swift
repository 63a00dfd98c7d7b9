import Basics
internal import CFastCGI
import Glibc
import HTTP

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
        /// Params over `maximumBytes`: answer 431 on this request id, then close. The
        /// first `peeked` bytes of the buffer hold what was seen of the request.
        case tooLarge(requestID: UInt16, peeked: Int)
        /// The peer closed the connection (or a drain woke it).
        case closed
    }

    static let maximumBytes = 64 * 1024

    /// Blocks until the next request's params are complete (waiting for the first
    /// byte as long as the web server keeps the connection idle, then at most
    /// `deadlineSeconds` for the rest).
    /// `buffer` is the worker thread's peek buffer, reused across requests (start it
    /// small: a request's params are usually under 1 KB; it grows when needed).
    ///
    /// nginx, lighttpd and h2o send a request in one write, so the first peek usually
    /// sees all of it. Apache httpd and Caddy write each record with its own system
    /// call: then the check waits for the next bytes to arrive, never on a timer (see
    /// `ArrivalWatch`).
    static func check(fd: Int32, buffer: inout [UInt8], deadlineSeconds: Double = 2) -> Verdict {
        // Wait in poll, not in recv: nginx reading our last answer signals "writable" on
        // this socket, which wakes a thread blocked in recv for nothing (a unix socket
        // has one wait queue); poll's wait for POLLIN ignores that event, for one more
        // system call. Draining's shutdown(SHUT_RD) still wakes it.
        var wait = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&wait, 1, -1) < 0 && errno == EINTR {}
        var watch: ArrivalWatch?
        defer { watch?.close() }
        var deadline = 0.0
        var hungUp = false
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
            case .tooLarge(let requestID): return .tooLarge(requestID: requestID, peeked: size)
            case .incomplete:
                if size == buffer.count {
                    // Room for the largest params allowed, their record headers and one
                    // more record: past that, `inspect` answers tooLarge or invalid.
                    guard buffer.count < maximumBytes else { return .reject }
                    buffer = [UInt8](repeating: 0, count: 4 * maximumBytes)
                    continue
                }
            }
            // The peer shut its side (or draining shut ours): no more bytes will come.
            if hungUp { return .closed }
            guard let current = watch else {
                // Watch from here on, then peek again: bytes that arrived before the
                // watch began are seen by that peek, later ones wake the wait.
                guard let started = ArrivalWatch(fd: fd) else { return .reject }
                watch = started
                hungUp = started.hungUpBeforeWatching
                deadline = MonotonicClock.seconds() + deadlineSeconds
                continue
            }
            switch current.next(until: deadline) {
            case .arrived: continue
            case .hungUp: hungUp = true
            case .deadline: return .reject
            }
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
        while let record = Records.header(in: bytes, at: index) {
            guard record.version == 1, (1...11).contains(record.type) else { return .invalid }
            guard record.end <= bytes.endIndex else {
                if params.count + record.contentLength > maximumBytes, record.type == Records.Kind.params.rawValue,
                    let requestID
                {
                    return .tooLarge(requestID)
                }
                return pairsAreSane(params, allowPartial: true) ? .incomplete : .invalid
            }
            let content = bytes[record.contentRange]
            // On the raw type: this runs for every request.
            switch record.type {
            case Records.Kind.beginRequest.rawValue:
                requestID = record.requestID
            case Records.Kind.params.rawValue:
                if record.contentLength == 0 { return pairsAreSane(params, allowPartial: false) ? .complete : .invalid }
                if params.isEmpty {
                    params = content
                } else {
                    if gathered == nil { gathered = Array(params) }
                    params = []  // drop the slice's reference first, so the append is in place
                    gathered!.append(contentsOf: content)
                    params = gathered![...]
                }
                if params.count > maximumBytes { return requestID.map { .tooLarge($0) } ?? .invalid }
            case Records.Kind.getValues.rawValue:  // a management record libfcgi parses the same way
                if !pairsAreSane(content, allowPartial: false) { return .invalid }
            default:
                break
            }
            index = record.end
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
        let value =
            Int(bytes[index] & 0x7F) << 24 | Int(bytes[index + 1]) << 16 | Int(bytes[index + 2]) << 8
            | Int(bytes[index + 3])
        return (value, index + 4)
    }

    /// The request as far as its params could be read from `bytes` (the records seen
    /// before the params grew too large), for the access log of the 431 answer.
    static func partialRequest(_ bytes: ArraySlice<UInt8>) -> Request {
        var params: [UInt8] = []
        var index = bytes.startIndex
        while let record = Records.header(in: bytes, at: index) {
            let contentEnd = min(bytes.endIndex, record.contentRange.upperBound)
            if record.kind == .params, record.contentRange.lowerBound < contentEnd {
                params.append(contentsOf: bytes[record.contentRange.lowerBound..<contentEnd])
            }
            index = record.end
        }
        var values: [KnownParams.Name: String] = [:]
        var headers = HTTPHeaders()
        var position = params.startIndex
        while let (nameLength, afterName) = length(params[...], at: position),
            let (valueLength, afterValue) = length(params[...], at: afterName),
            afterValue + nameLength + valueLength <= params.endIndex
        {
            let name = String(decoding: params[afterValue..<(afterValue + nameLength)], as: UTF8.self)
            let value = params[(afterValue + nameLength)..<(afterValue + nameLength + valueLength)]
            if valueLength <= 8192 {
                if let known = KnownParams.Name(rawValue: name) {
                    values[known] = values[known] ?? String(decoding: value, as: UTF8.self)
                } else if name == "HTTP_X_REQUEST_ID" {
                    headers.append(name: "x-request-id", value: String(decoding: value, as: UTF8.self))
                }
            }
            position = afterValue + nameLength + valueLength
        }
        return CGIParams { values[$0] }.request(headers: headers)
    }

    /// Answers `requestID` with `response` (its head and body in one STDOUT record),
    /// written straight to the socket since libfcgi never saw this request, then the
    /// end records that make the web server close the connection. Best effort: the
    /// peer may be gone.
    static func answer(_ response: Response, fd: Int32, requestID: UInt16) {
        var bytes: [UInt8] = []
        ResponseEncoder.appendHead(of: response, to: &bytes)
        if case .bytes(let body) = response.body { bytes.append(contentsOf: body) }
        Records.send(
            Records.record(.stdout, requestID: requestID, content: Array(bytes.prefix(0xFFFF)))
                + Records.closingEnd(requestID: requestID, appStatus: 0),
            to: fd
        )
    }
}

/// Wakes a thread for each arrival of new bytes on a connection whose unread bytes
/// it only peeks at.
///
/// A level-triggered wait (poll) returns at once while peeked bytes sit unread, so it
/// cannot wait for *more* bytes. An edge-triggered epoll watch can: each arrival (and
/// a hang-up, or draining's `shutdown(SHUT_RD)`) queues one event, for unix and TCP
/// sockets alike. The event that registration queues for the bytes already there is
/// taken at once, so the first wait is for new bytes only; a hang-up it reports came
/// before the watch began and no later event will tell of it (`hungUpBeforeWatching`).
struct ArrivalWatch {
    enum Event { case arrived, hungUp, deadline }

    private let epoll: Int32
    let hungUpBeforeWatching: Bool

    init?(fd: Int32) {
        epoll = usersd_watch_arrivals(fd)
        guard epoll >= 0 else { return nil }
        let events = usersd_wait_arrival(epoll, 0)
        hungUpBeforeWatching = events > 0 && Self.isHangUp(events)
    }

    private static func isHangUp(_ events: Int32) -> Bool {
        let hangUp = UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue)
        return UInt32(bitPattern: events) & hangUp != 0
    }

    /// Waits for the next arrival, up to `deadline` (monotonic seconds).
    func next(until deadline: Double) -> Event {
        while true {
            let remaining = deadline - MonotonicClock.seconds()
            guard remaining > 0 else { return .deadline }
            let events = usersd_wait_arrival(epoll, Int32(min((remaining * 1000).rounded(.up), 60_000)))
            if events < 0 {
                if errno == EINTR { continue }
                return .hungUp
            }
            if events == 0 { continue }  // the timeout: `remaining` ends the loop
            return Self.isHangUp(events) ? .hungUp : .arrived
        }
    }

    func close() {
        Glibc.close(epoll)
    }
}
