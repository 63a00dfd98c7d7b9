import Basics
import Foundation
import Glibc
import HTTP
import Synchronization
import Testing

@testable import FastCGI

@Suite struct ResponseEncoderTests {
    func head(_ response: Response) -> String {
        var bytes: [UInt8] = []
        ResponseEncoder.appendHead(of: response, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func writesStatusHeadersAndContentLength() {
        let response = Response.json(.created, Array("{}".utf8), headers: [("Location", "/users/1")])
        let head = head(response)
        #expect(
            head
                == "Status: 201 Created\r\nContent-Type: application/json; charset=utf-8\r\nLocation: /users/1\r\nContent-Length: 2\r\n\r\n"
        )
    }

    @Test func streamedBodiesHaveNoContentLength() {
        let response = Response(status: .ok, headers: [("Content-Type", "application/json")], body: .stream { _ in })
        let head = head(response)
        #expect(head == "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n")
    }

    @Test func anExplicitContentLengthIsNotRepeated() {
        let response = Response(status: .ok, headers: [("content-LENGTH", "2")], body: .bytes(Array("{}".utf8)))
        let head = head(response)
        #expect(head == "Status: 200 OK\r\ncontent-LENGTH: 2\r\n\r\n")
    }

    /// The head as the encoder wrote it before it measured first: piece by piece.
    func appendPiecewiseHead(of response: Response, to head: inout [UInt8]) {
        head += Array("Status: \(response.status.code) \(response.status.reason)\r\n".utf8)
        var hasLength = false
        for header in response.headers where ResponseEncoder.isSafe(header.name) && ResponseEncoder.isSafe(header.value)
        {
            if !hasLength && ResponseEncoder.isContentLength(header.name) { hasLength = true }
            head += Array("\(header.name): \(header.value)\r\n".utf8)
        }
        if case .bytes(let bytes) = response.body, !hasLength {
            head += Array("Content-Length: \(bytes.count)\r\n".utf8)
        }
        head += Array("\r\n".utf8)
    }

    /// The measured, one-copy head is byte for byte the piecewise one.
    @Test func measuredHeadEqualsThePiecewiseHead() {
        let many = (0..<70).map { (name: "X-H\($0)", value: "v\($0)") }
        let responses = [
            Response.json(.created, Array("{}".utf8), headers: [("Location", "/users/1")]),
            Response(
                status: Status(code: 599, reason: "Ünusual Réason"), headers: [("X-Émoji", "✓ ok"), ("Empty", "")]),
            Response(status: .ok, headers: [("X-Evil", "a\r\nSet-Cookie: x=1"), ("X-Fine", "yes"), ("X-LF", "a\nb")]),
            Response(status: .ok, headers: [("content-length", "5")], body: .bytes(Array("hello".utf8))),
            Response(status: .noContent),
            Response(status: .ok, headers: many, body: .bytes(Array(repeating: 0x41, count: 123_456))),
            Response(status: .ok, headers: [("Content-Type", "text/plain")], body: .stream { _ in }),
        ]
        for response in responses {
            var measured: [UInt8] = Array("kept|".utf8)
            ResponseEncoder.appendHead(of: response, to: &measured)
            var piecewise: [UInt8] = Array("kept|".utf8)
            appendPiecewiseHead(of: response, to: &piecewise)
            #expect(String(decoding: measured, as: UTF8.self) == String(decoding: piecewise, as: UTF8.self))
        }
    }

    @Test func headersWithLineBreaksAreDropped() {
        let response = Response(status: .ok, headers: [("X-Evil", "a\r\nSet-Cookie: x=1")])
        let head = head(response)
        #expect(!head.contains("Set-Cookie"))
    }
}

@Suite struct CGIParamsTests {
    func params(_ values: [String: String]) -> CGIParams { CGIParams { values[$0.rawValue] } }

    @Test func prefersDocumentURI() {
        #expect(params(["DOCUMENT_URI": "/user/1", "REQUEST_URI": "/other?x=1"]).path == "/user/1")
    }

    @Test func fallsBackToDecodedRequestURIThenScriptNameAndPathInfo() {
        #expect(params(["REQUEST_URI": "/user/%31?x=1"]).path == "/user/1")
        #expect(params(["SCRIPT_NAME": "/api", "PATH_INFO": "/users"]).path == "/api/users")
        #expect(params([:]).path == "/")
    }

    @Test func contentLengthThatDoesNotParseCountsAsTooLarge() {
        #expect(params(["CONTENT_LENGTH": "12"]).contentLength == 12)
        #expect(params(["CONTENT_LENGTH": ""]).contentLength == nil)
        #expect(params(["CONTENT_LENGTH": "99999999999999999999999"]).contentLength == Int.max)
    }

    @Test func headerNamesAreLowercasedWithDashes() {
        #expect(CGIParams.headerName("X_REQUEST_ID") == "x-request-id")
        #expect(CGIParams.headerName("ACCEPT_Ü1") == "accept-Ü1")
    }

    /// The one-pass gathering of params from a C environment list.
    @Test func knownParamsTakeTheFirstOfANameAndOnlyWholeNames() {
        let entries = [
            "REQUEST_METHOD=GET", "REQUEST_METHOD=POST", "REQUEST_URIX=/no", "REQUEST_URI=/yes", "QUERY_STRING=",
            "OTHER=1",
        ]
        let storage = entries.map { strdup($0)! }
        defer { for entry in storage { free(entry) } }
        var known = KnownParams()
        for entry in storage { known.record(entry) }
        #expect(known[.requestMethod] == "GET")
        #expect(known[.requestURI] == "/yes")
        #expect(known[.queryString] == "")
        #expect(known[.contentType] == nil)
        // Every name is found under its own spelling.
        let all = KnownParams.Name.allCases.map { strdup("\($0.rawValue)=value of \($0.rawValue)")! }
        defer { for entry in all { free(entry) } }
        var every = KnownParams()
        for entry in all { every.record(entry) }
        for name in KnownParams.Name.allCases { #expect(every[name] == "value of \(name.rawValue)") }
    }

    @Test func requestIDComesFromNginxOrHeaderOrIsGenerated() {
        #expect(params(["REQUEST_ID": "abc123"]).requestID(headers: [:]) == "abc123")
        #expect(params([:]).requestID(headers: ["x-request-id": "from-client"]) == "from-client")
        let generated = params([:]).requestID(headers: ["x-request-id": "bad\"id"])
        #expect(generated.count == 32)
        #expect(
            generated.utf8.allSatisfy {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            })
        #expect(generated != params([:]).requestID(headers: [:]))
    }
}

/// Dot segments resolved as nginx resolves them for `DOCUMENT_URI` (RFC 3986 §5.2.4,
/// a climb above the root refused).
@Suite struct DotSegmentsTests {
    @Test(arguments: [
        ("/users/../user/1", "/user/1"),
        ("/./user/1", "/user/1"),
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/users/./", "/users/"),
        ("//..", "/"),
    ])
    func resolvesDotSegments(path: String, resolved: String) {
        #expect(DotSegments.resolve(path) == resolved)
    }

    /// Names that only look like dot segments are ordinary segments; a path without
    /// dot segments comes back unchanged.
    @Test(arguments: ["/user/1", "/...", "/a/.b", "/a/..b/c", "/a..", "/.well-known/x", "/", "", "user/../x", "*"])
    func leavesOtherPathsAlone(path: String) {
        #expect(DotSegments.resolve(path) == path)
    }

    @Test(arguments: ["/..", "/../metrics", "/users/../..", "/a/../../b", "/./../x"])
    func refusesAClimbAboveTheRoot(path: String) {
        #expect(DotSegments.resolve(path) == nil)
    }

    /// Through the params: the path is decoded first, then resolved (so `%2e%2e` is a
    /// dot segment, as in nginx), from every source of the path.
    @Test func theRoutedPathIsDecodedThenResolved() {
        func route(_ values: [String: String]) -> (String, Bool) {
            let route = CGIParams { values[$0.rawValue] }.route
            return (route.path, route.climbsAboveRoot)
        }
        #expect(route(["REQUEST_URI": "/users/%2e%2e/user/1?x=/../"]) == ("/user/1", false))
        #expect(route(["REQUEST_URI": "/users/..%2Fmetrics"]) == ("/metrics", false))
        #expect(route(["REQUEST_URI": "/%2E/user/1"]) == ("/user/1", false))
        #expect(route(["SCRIPT_NAME": "/users", "PATH_INFO": "/../user/1"]) == ("/user/1", false))
        #expect(route(["DOCUMENT_URI": "", "REQUEST_URI": "/./user/1"]) == ("/user/1", false))
        #expect(route(["REQUEST_URI": "/users/../../user/1"]) == ("/users/../../user/1", true))
        #expect(route(["REQUEST_URI": "/%2e%2e/metrics"]) == ("/../metrics", true))
    }
}

/// The pre-libfcgi check of a request's PARAMS records (see ParamsGuard).
@Suite struct ParamsGuardTests {
    func record(_ type: UInt8, id: UInt16 = 1, _ content: [UInt8], padding: UInt8 = 0) -> [UInt8] {
        let length = content.count
        return [1, type, UInt8(id >> 8), UInt8(id & 0xFF), UInt8(length >> 8), UInt8(length & 0xFF), padding, 0]
            + content + [UInt8](repeating: 0, count: Int(padding))
    }

    func pair(_ name: String, _ value: String) -> [UInt8] {
        func length(_ n: Int) -> [UInt8] {
            n < 128
                ? [UInt8(n)]
                : [UInt8(0x80 | (n >> 24)), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        }
        return length(name.utf8.count) + length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
    }

    let begin: [UInt8] = [1, 1, 0, 7, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]  // BEGIN_REQUEST id 7, responder, keep

    @Test func completeAtTheEmptyParamsRecord() {
        let params = pair("REQUEST_METHOD", "GET") + pair("DOCUMENT_URI", "/healthz")
        let bytes = begin + record(4, id: 7, params, padding: 3) + record(4, id: 7, [])
        #expect(ParamsGuard.inspect(bytes[...]) == .complete)
        #expect(ParamsGuard.inspect(bytes.dropLast(4)) == .incomplete)
    }

    @Test func hugeDeclaredLengthsAreRefusedBeforeLibfcgiAllocatesThem() {
        // nameLen 0x7fffffff: libfcgi would try to allocate 2 GB and abort.
        let hostile: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0x05] + Array("AAAAA".utf8)
        #expect(ParamsGuard.inspect((begin + record(4, id: 7, hostile))[...]) == .invalid)
        #expect(ParamsGuard.inspect(record(9, id: 0, hostile)[...]) == .invalid)  // GET_VALUES
    }

    @Test func paramsOverTheLimitAreAnsweredOnTheirRequestID() {
        var bytes = begin
        for _ in 0..<3 { bytes += record(4, id: 7, pair("HTTP_X_BIG", String(repeating: "v", count: 30_000))) }
        #expect(ParamsGuard.inspect(bytes[...]) == .tooLarge(7))
    }

    /// A connected pair of unix stream sockets, as nginx and usersd hold one. Close on
    /// exec: a process started meanwhile (the PostgreSQL tests' cluster) must not hold
    /// an end open, or closing it here would never reach the other end.
    func socketPair() -> (nginx: Int32, usersd: Int32) {
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        return (fds[0], fds[1])
    }

    func send(_ bytes: [UInt8], to fd: Int32) {
        #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
    }

    @Test func checkOnASocketLeavesTheRequestForLibfcgi() {
        let (nginx, usersd) = socketPair()
        defer {
            close(nginx)
            close(usersd)
        }
        let request =
            begin + record(4, id: 7, pair("REQUEST_METHOD", "GET")) + record(4, id: 7, []) + record(5, id: 7, [])
        send(request, to: nginx)
        var buffer = [UInt8](repeating: 0, count: 8192)
        #expect(ParamsGuard.check(fd: usersd, buffer: &buffer) == .ok)
        // Only peeked: every byte is still there for FCGX_Accept_r to read.
        var unread = [UInt8](repeating: 0, count: 8192)
        let count = unread.withUnsafeMutableBytes { recv(usersd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        #expect(count == request.count)
        #expect(Array(unread[..<max(count, 0)]) == request)
    }

    @Test func checkSeesAClosedConnection() {
        let (nginx, usersd) = socketPair()
        defer { close(usersd) }
        close(nginx)
        var buffer = [UInt8](repeating: 0, count: 8192)
        #expect(ParamsGuard.check(fd: usersd, buffer: &buffer) == .closed)
    }

    /// Draining wakes an idle kept connection with `shutdown(SHUT_RD)` (see
    /// `WorkerState.closeIfIdle`): whether it comes before the wait or during it,
    /// the check ends as closed, and the connection is not left waiting.
    @Test func shutdownForReadingEndsTheWait() async {
        let (nginx, usersd) = socketPair()
        defer {
            close(nginx)
            close(usersd)
        }
        let waiting = Task.detached {
            var buffer = [UInt8](repeating: 0, count: 8192)
            return ParamsGuard.check(fd: usersd, buffer: &buffer)
        }
        shutdown(usersd, Int32(SHUT_RD))
        #expect(await waiting.value == .closed)
    }

    /// A connected pair of loopback TCP sockets (usersd also listens on TCP), close on
    /// exec as `socketPair`'s.
    func tcpPair() -> (nginx: Int32, usersd: Int32) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                #expect(bind(listener, pointer, length) == 0)
                #expect(listen(listener, 1) == 0)
                #expect(getsockname(listener, pointer, &length) == 0)
            }
        }
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var on: Int32 = 1
        setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { #expect(connect(client, $0, length) == 0) }
        }
        let accepted = accept(listener, nil, nil)
        _ = fcntl(accepted, F_SETFD, FD_CLOEXEC)
        return (client, accepted)
    }

    /// Apache httpd and Caddy write each record of a request with its own system call,
    /// so the params check often sees a request in pieces. It must return as soon as
    /// the last piece arrives: the wait is for new bytes, never a timer. The last
    /// piece comes `pause` after the others; the check must return after it is written
    /// and within an eighth of the pause (a back-off timer that has grown to steps of
    /// tens of milliseconds by then answers later than that).
    @Test(arguments: ["unix", "tcp"])
    func aRequestInPiecesIsCheckedAsSoonAsTheLastPieceArrives(transport: String) {
        let (nginx, usersd) = transport == "unix" ? socketPair() : tcpPair()
        defer {
            close(nginx)
            close(usersd)
        }
        let pieces = [
            begin, record(4, id: 7, pair("REQUEST_METHOD", "GET") + pair("REQUEST_URI", "/user/1")),
            record(4, id: 7, []), record(5, id: 7, []),
        ]
        let pauseNanoseconds: UInt64 = 130_000_000
        for _ in 0..<3 {
            let lastWrite = Atomic<UInt64>(0)
            let writer = Thread {
                for (index, piece) in pieces.enumerated() {
                    if index == 2 {
                        usleep(UInt32(pauseNanoseconds / 1000))
                        lastWrite.store(MonotonicClock.nanoseconds(), ordering: .sequentiallyConsistent)
                    }
                    _ = piece.withUnsafeBytes { write(nginx, $0.baseAddress, $0.count) }
                }
            }
            writer.start()
            var buffer = [UInt8](repeating: 0, count: 8192)
            #expect(ParamsGuard.check(fd: usersd, buffer: &buffer) == .ok)
            let returned = MonotonicClock.nanoseconds()
            let written = lastWrite.load(ordering: .sequentiallyConsistent)
            #expect(written > 0 && returned >= written)
            #expect(returned &- written < pauseNanoseconds / 8, "returned \((returned &- written) / 1000) µs late")
            // Consume the request, as libfcgi would, before the next round.
            var drained = 0
            let total = pieces.reduce(0) { $0 + $1.count }
            while drained < total {
                let count = buffer.withUnsafeMutableBytes { recv(usersd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { break }
                drained += count
            }
            #expect(drained == total)
        }
    }

    /// A request cut off half way: the check ends when the peer closes (no more bytes
    /// can come), and a peer that stays silent meets the deadline.
    @Test func aPartialRequestEndsAtTheHangUpOrTheDeadline() {
        let partial = begin + record(4, id: 7, pair("REQUEST_METHOD", "GET"))
        let (nginx, usersd) = socketPair()
        defer { close(usersd) }
        send(partial, to: nginx)
        let writer = Thread {
            usleep(50_000)
            close(nginx)
        }
        writer.start()
        var buffer = [UInt8](repeating: 0, count: 8192)
        let started = MonotonicClock.seconds()
        #expect(ParamsGuard.check(fd: usersd, buffer: &buffer, deadlineSeconds: 30) == .closed)
        #expect(MonotonicClock.seconds() - started < 10)

        let (silent, waiting) = socketPair()
        defer {
            close(silent)
            close(waiting)
        }
        send(partial, to: silent)
        #expect(ParamsGuard.check(fd: waiting, buffer: &buffer, deadlineSeconds: 0.2) == .reject)
    }

    /// A peer that sent half a request and closed before the check began: the hang-up
    /// is already there when the watch starts, and ends the check at once.
    @Test func aPartialRequestWhosePeerAlreadyClosedEndsAtOnce() {
        let partial = begin + record(4, id: 7, pair("REQUEST_METHOD", "GET"))
        let (nginx, usersd) = socketPair()
        defer { close(usersd) }
        send(partial, to: nginx)
        close(nginx)
        var buffer = [UInt8](repeating: 0, count: 8192)
        #expect(ParamsGuard.check(fd: usersd, buffer: &buffer, deadlineSeconds: 30) == .closed)
    }

    @Test func malformedRecordsAreInvalid() {
        #expect(ParamsGuard.inspect([2, 1, 0, 1, 0, 0, 0, 0][...]) == .invalid)  // version 2
        #expect(ParamsGuard.inspect([1, 42, 0, 1, 0, 0, 0, 0][...]) == .invalid)  // type 42
        #expect(ParamsGuard.inspect([1, 4, 0][...]) == .incomplete)  // half a header
    }
}

@Suite struct RecordsTests {
    @Test func aRecordCarriesItsRequestIDAndLength() {
        let bytes = Records.record(.stdout, requestID: 0x0102, content: Array("abc".utf8))
        #expect(bytes == [1, 6, 1, 2, 0, 3, 0, 0, 97, 98, 99])
    }

    /// What nginx reads at the end of a connection's last response: stdout's end,
    /// END_REQUEST (app status big-endian, protocol status 0 = complete), then the
    /// empty GET_VALUES_RESULT on id 0 that makes it close instead of reuse.
    @Test func aClosingEndFollowsEndRequestWithOneMoreRecord() {
        let bytes = Records.closingEnd(requestID: 7, appStatus: 0x0102_0304)
        #expect(bytes.count == 8 + 16 + 8)
        #expect(Array(bytes[0..<8]) == [1, 6, 0, 7, 0, 0, 0, 0])
        #expect(Array(bytes[8..<24]) == [1, 3, 0, 7, 0, 8, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0])
        #expect(Array(bytes[24...]) == [1, 10, 0, 0, 0, 0, 0, 0])
        let failed = Records.closingEnd(requestID: 7, appStatus: -1)
        #expect(Array(failed[16..<20]) == [0xFF, 0xFF, 0xFF, 0xFF])
    }
}
