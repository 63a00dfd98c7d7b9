import Foundation
import Glibc
import HTTP
import Synchronization
import Testing

@testable import FastCGI

/// The FastCGI server on a real unix socket with real libfcgi, driven by a raw
/// FastCGI client, with responders written for each case.
@Suite(.serialized) struct ServerTests {
    /// `/stream` sends part of a body, then fails; other paths are 200.
    /// `/private` is refused by `admit` (401, noting the principal "guest").
    final class FailingStream: Responder {
        let rejected = Mutex<[(Request, HTTPError)]>([])
        let answered = Mutex<[String]>([])

        var checksAdmission: Bool { true }

        func admit(_ request: inout Request) -> HTTPError? {
            guard request.path == "/private" else { return nil }
            request.principal = "guest"
            return HTTPError(.unauthorized, "no")
        }

        func respond(to request: Request) async -> Response {
            answered.withLock { $0.append(request.path) }
            guard request.path == "/stream" else { return Response.json(.ok, Array("{}".utf8)) }
            return Response(
                status: .ok, headers: [("Content-Type", "application/json")],
                body: .stream { writer in
                    // More than libfcgi's stream buffer, so part of it is on the wire.
                    try await writer.write(Array("[".utf8) + Array(repeating: UInt8(ascii: "1"), count: 20_000))
                    struct Broken: Error {}
                    throw Broken()
                })
        }

        func respond(rejected request: Request, with error: HTTPError) async -> Response {
            rejected.withLock { $0.append((request, error)) }
            return error.response
        }
    }

    func withServer(maxBodyBytes: Int = 1024, _ body: (String, FailingStream) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "fcgi-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("s.sock").path
        var configuration = FastCGIConfiguration(listen: .path(path, mode: 0o600, group: nil))
        configuration.maxBodyBytes = maxBodyBytes
        let responder = FailingStream()
        let server = try FastCGIServer(configuration: configuration, responder: responder)
        server.start()
        defer { _ = server.drain(grace: 5) }
        try body(path, responder)
    }

    /// One request; returns every record received until the server closed the
    /// connection (or sent END_REQUEST and nothing else followed).
    func exchange(
        _ path: String, params: [(String, String)], stdin: [UInt8] = []
    ) throws -> [(type: UInt8, content: [UInt8])] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(connected == 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // BEGIN_REQUEST (responder, connection not kept), PARAMS, STDIN, each stream
        // split into records of at most 60,000 bytes and ended by an empty record.
        var request = Records.record(.beginRequest, requestID: 1, content: [0, 1, 0, 0, 0, 0, 0, 0])
        func stream(_ kind: Records.Kind, _ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let chunk = Array(bytes[offset..<min(bytes.count, offset + 60_000)])
                request += Records.record(kind, requestID: 1, content: chunk)
                offset += chunk.count
            }
            request += Records.record(kind, requestID: 1)
        }
        stream(
            .params,
            params.flatMap { name, value in
                SelfProbe.length(name.utf8.count) + SelfProbe.length(value.utf8.count) + Array(name.utf8)
                    + Array(value.utf8)
            })
        stream(.stdin, stdin)
        #expect(Records.send(request, to: fd))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        var records: [(UInt8, [UInt8])] = []
        var index = 0
        while index + 8 <= received.count {
            let length = Int(received[index + 4]) << 8 | Int(received[index + 5])
            let end = index + 8 + length
            guard end <= received.count else { break }
            records.append((received[index + 1], Array(received[(index + 8)..<end])))
            index = end + Int(received[index + 6])
        }
        return records
    }

    func stdout(_ records: [(type: UInt8, content: [UInt8])]) -> String {
        String(decoding: records.filter { $0.type == Records.Kind.stdout.rawValue }.flatMap(\.content), as: UTF8.self)
    }

    /// A stream that fails after its head went out ends with a dropped connection,
    /// never with FCGI_END_REQUEST: a clean end would pass the truncated body on as
    /// complete.
    @Test func aStreamThatFailsMidwayDropsTheConnectionWithoutAnEnd() throws {
        try withServer { path, _ in
            let records = try exchange(path, params: [("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", "/stream")])
            let text = stdout(records)
            #expect(text.hasPrefix("Status: 200 OK\r\n"))
            #expect(text.contains("\r\n\r\n[1111"))
            #expect(!records.contains { $0.type == Records.Kind.endRequest.rawValue })
            // The server is fine afterwards: the next connection is answered and ended.
            let next = try exchange(path, params: [("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", "/other")])
            #expect(stdout(next).hasPrefix("Status: 200 OK\r\n"))
            #expect(next.contains { $0.type == Records.Kind.endRequest.rawValue })
        }
    }

    /// A body over the limit is refused before any handler runs, but the refusal
    /// passes the responder (which logs and counts it) with what was read of it.
    @Test func aBodyOverTheLimitIsRejectedThroughTheResponder() throws {
        try withServer(maxBodyBytes: 100) { path, responder in
            let records = try exchange(
                path,
                params: [
                    ("REQUEST_METHOD", "POST"), ("DOCUMENT_URI", "/users"), ("CONTENT_LENGTH", "500"),
                    ("REMOTE_ADDR", "192.0.2.7"), ("REQUEST_ID", "abc"),
                ],
                stdin: [UInt8](repeating: 0x41, count: 500)
            )
            #expect(stdout(records).hasPrefix("Status: 413 Payload Too Large\r\n"))
            let seen = responder.rejected.withLock { $0 }
            #expect(seen.count == 1)
            #expect(seen.first?.0.method == "POST" && seen.first?.0.path == "/users")
            #expect(seen.first?.0.requestID == "abc" && seen.first?.0.remoteAddress == "192.0.2.7")
            #expect(seen.first?.1.status == .payloadTooLarge)
        }
    }

    /// A request `admit` refuses is answered through `respond(rejected:with:)` before
    /// its body is read: the handler never runs, the body is discarded (a body over
    /// the limit too: the refusal comes first), and what `admit` noted stays.
    @Test(arguments: [500, 5000])
    func aRequestNotAdmittedIsRefusedBeforeItsBodyIsRead(bodyBytes: Int) throws {
        try withServer(maxBodyBytes: 1024) { path, responder in
            let records = try exchange(
                path,
                params: [
                    ("REQUEST_METHOD", "POST"), ("DOCUMENT_URI", "/private"), ("CONTENT_LENGTH", "\(bodyBytes)"),
                    ("CONTENT_TYPE", "application/json"),
                ],
                stdin: [UInt8](repeating: 0x41, count: bodyBytes)
            )
            #expect(stdout(records).hasPrefix("Status: 401 Unauthorized\r\n"))
            #expect(records.contains { $0.type == Records.Kind.endRequest.rawValue })
            let seen = responder.rejected.withLock { $0 }
            #expect(seen.count == 1)
            #expect(seen.first?.0.path == "/private" && seen.first?.0.body.isEmpty == true)
            #expect(seen.first?.0.principal == "guest")
            #expect(seen.first?.1.status == .unauthorized)
            #expect(responder.answered.withLock { $0 }.isEmpty)
            // Another path is admitted and answered by the handler.
            let next = try exchange(path, params: [("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", "/other")])
            #expect(stdout(next).hasPrefix("Status: 200 OK\r\n"))
            #expect(responder.answered.withLock { $0 } == ["/other"])
        }
    }

    /// Params over 64 KiB never reach libfcgi; the 431 answer passes the responder
    /// with the method and path read from the params seen before the big one.
    @Test func paramsOverTheLimitAreRejectedThroughTheResponder() throws {
        try withServer { path, responder in
            let records = try exchange(
                path,
                params: [
                    ("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", "/user/1"), ("REQUEST_ID", "big-one"),
                    ("HTTP_X_HUGE", String(repeating: "h", count: 70_000)),
                ]
            )
            #expect(stdout(records).hasPrefix("Status: 431 Request Header Fields Too Large\r\n"))
            let seen = responder.rejected.withLock { $0 }
            #expect(seen.count == 1)
            #expect(seen.first?.0.method == "GET" && seen.first?.0.path == "/user/1")
            #expect(seen.first?.0.requestID == "big-one")
            #expect(seen.first?.1.status == .requestHeaderFieldsTooLarge)
        }
    }
}
