internal import CFastCGI
import Foundation
import Glibc
import HTTP
import Logging

/// Serves the requests of one FastCGI connection on the current thread.
///
/// The worker thread runs one task for its whole life (see `WorkerPool`), started on
/// this thread and preferring this thread's executor; `serve()` runs inside it and
/// reads each request, runs its async handler and writes the answer, in a loop until
/// the connection closes. Requests and connections create no task of their own, and
/// handlers' frames reuse the memory the thread's task already holds (a task keeps
/// its allocator slabs until it ends). The task blocks this thread while it waits for
/// the next request: that is fine, the thread serves this connection only, and jobs
/// that arrive for its executor meanwhile go to the `OverflowRunner` (see
/// `WorkerExecutor.whileWaiting`).
///
/// The `FCGX_Request` is allocated once per connection (libfcgi's streams point back
/// at it, so its address must not change) and never leaves this thread; handlers
/// receive copied `Request` values. The executor and the buffers belong to the thread
/// (`WorkerThreadResources`) and serve its connections one after another.
struct ConnectionWorker: Sendable {
    let fd: Int32
    let state: WorkerState
    let context: ConnectionContext
    let resources: WorkerThreadResources

    /// Serves the connection until it closes. Call from the thread's task, on the
    /// thread that owns `resources`.
    func serve() async {
        Self.setSendTimeout(fd, seconds: context.writeTimeoutSeconds)
        let request = FCGXRequestBox(fd: fd)
        await serveRequests(request.pointer, executor: resources.executor)
        request.deallocate()
        state.markAccepting()
    }

    private func serveRequests(_ request: UnsafeMutablePointer<FCGX_Request>, executor: WorkerExecutor) async {
        var (peekBuffer, headBuffer) = resources.takeBuffers()
        defer { resources.putBack(peek: peekBuffer, head: headBuffer) }
        var served = false
        // Whether this idle kept connection may be shut to make room (not behind nginx,
        // see `WorkerState.freeIfIdle`); asked once per connection, on its first request.
        var idleMayBeShut = false
        while true {
            // Always read the next request: nginx may already have sent it on this
            // connection, even while draining (closing now would lose it).
            state.markIdle(request.pointee.ipcFd, kept: served, idleMayBeShut: idleMayBeShut)
            // Vet the next request's records before libfcgi allocates what they declare.
            let verdict = executor.whileWaiting { ParamsGuard.check(fd: request.pointee.ipcFd, buffer: &peekBuffer) }
            if verdict != .ok {
                state.markBusy()
                if case .tooLarge(let requestID, let peeked) = verdict {
                    let partial = ParamsGuard.partialRequest(peekBuffer[0..<peeked])
                    let error = HTTPError(
                        .requestHeaderFieldsTooLarge, "Request headers too large (over 64 KiB of FastCGI params)")
                    let response = await context.responder.respond(rejected: partial, with: error)
                    ParamsGuard.answer(response, fd: request.pointee.ipcFd, requestID: requestID)
                }
                request.pointee.keepConnection = 0
                FCGX_Free(request, 1)
                return
            }
            let accepted = executor.whileWaiting { FCGX_Accept_r(request) }
            guard accepted >= 0 else {  // nginx closed the connection (or drain woke it)
                state.markBusy()
                return
            }
            state.markAnswering()
            await handle(request, head: &headBuffer)
            if !served { idleMayBeShut = !Self.isNginx(request) }
            served = true
            // While draining, or once the connection was picked to make room, this
            // response is the connection's last.
            if state.finishAnswer() { endAsLast(request) }
            FCGX_Finish_r(request)
            if request.pointee.ipcFd < 0 { return }  // closed: not kept, or draining
        }
    }

    /// Ends the current response so that nginx closes the connection instead of
    /// sending another request on it (see `Records.closingEnd`), and has
    /// `FCGX_Finish_r` close it without writing anything more.
    private func endAsLast(_ request: UnsafeMutablePointer<FCGX_Request>) {
        defer { request.pointee.keepConnection = 0 }
        // Without FCGI_KEEP_CONN the web server closes the connection after this
        // response anyway.
        guard request.pointee.keepConnection != 0, let out = request.pointee.out else { return }
        guard FCGX_FFlush(out) == 0 else { return }  // the peer is gone; libfcgi closes
        let apache = Self.isApache(request)
        let end = Records.closingEnd(
            requestID: UInt16(truncatingIfNeeded: request.pointee.requestId), appStatus: request.pointee.appStatus,
            extraRecord: !apache
        )
        Records.send(end, to: request.pointee.ipcFd)
        // Apache learns that the connection ends from its end of file only: sent at
        // once, so that it reaches Apache's check before the next request could.
        if apache { shutdown(request.pointee.ipcFd, Int32(SHUT_WR)) }
        // The end records are out: libfcgi's own (written when it closes the stream)
        // must not follow them.
        out.pointee.wasFCloseCalled = 1
    }

    /// Whether the web server is Apache httpd (its `SERVER_SOFTWARE` param), which
    /// must not get the extra record of `Records.closingEnd`: mod_proxy_fcgi takes a
    /// kept connection with unread bytes for a live one and reads them as the next
    /// response ("Got bogus rid 0"). It checks a kept connection before reusing it,
    /// and finds it closed.
    static func isApache(_ request: UnsafeMutablePointer<FCGX_Request>) -> Bool {
        guard let software = FCGX_GetParam("SERVER_SOFTWARE", request.pointee.envp) else { return false }
        return strncmp(software, "Apache", 6) == 0
    }

    /// Whether the web server is nginx (its `SERVER_SOFTWARE` param, `nginx/1.22.1`
    /// with the stock `fastcgi_params`).
    static func isNginx(_ request: UnsafeMutablePointer<FCGX_Request>) -> Bool {
        guard let software = FCGX_GetParam("SERVER_SOFTWARE", request.pointee.envp) else { return false }
        return strncmp(software, "nginx", 5) == 0
    }

    /// Reads one request, runs the handler, writes the answer. `head` is the
    /// connection's reused buffer for the response head (and a small body with it,
    /// so most answers are one write into libfcgi's stream).
    private func handle(_ request: UnsafeMutablePointer<FCGX_Request>, head: inout [UInt8]) async {
        let writer = OutputStream(stream: request.pointee.out)
        let parsed =
            context.checksAdmission
            ? RequestDecoder.decode(request.pointee, maxBodyBytes: context.maxBodyBytes) {
                context.responder.admit(&$0)
            }
            : RequestDecoder.decode(request.pointee, maxBodyBytes: context.maxBodyBytes)
        let response: Response
        let isHead: Bool
        switch consume parsed {
        case .request(let httpRequest):
            isHead = httpRequest.method == "HEAD"
            response = await context.responder.respond(to: httpRequest)
        case .rejected(let httpRequest, let error):
            isHead = httpRequest.method == "HEAD"
            response = await context.responder.respond(rejected: httpRequest, with: error)
        }
        head.removeAll(keepingCapacity: true)
        ResponseEncoder.appendHead(of: response, to: &head)
        guard !isHead else {
            writer.write(head)
            return
        }
        switch response.body {
        case .bytes(let bytes):
            if bytes.count <= Self.coalesceLimit {
                head.append(contentsOf: bytes)
                writer.write(head)
            } else {
                writer.write(head)
                writer.write(bytes)
            }
        case .stream(let produce):
            writer.write(head)
            let sink = StreamSink(writer: writer)
            do {
                try await produce(sink)
            } catch {
                abort(request)
            }
            sink.invalidate()
        }
    }

    /// Ends a response that failed after its head was sent by dropping the connection
    /// without FCGI_END_REQUEST. The status is already on its way, so only a broken
    /// connection tells the web server (and through it the client) that the body is
    /// incomplete: nginx then reports "upstream prematurely closed connection" and
    /// cuts the client's response instead of ending it cleanly. (The FastCGI app
    /// status of a clean end is ignored by nginx.)
    private func abort(_ request: UnsafeMutablePointer<FCGX_Request>) {
        shutdown(request.pointee.ipcFd, Int32(SHUT_RDWR))
        request.pointee.keepConnection = 0
        // Nothing more is written: libfcgi's end records must not follow.
        request.pointee.out?.pointee.wasFCloseCalled = 1
        request.pointee.err?.pointee.wasFCloseCalled = 1
    }

    /// `SO_SNDTIMEO`: a blocked write of the connection fails after `seconds` (libfcgi
    /// then reports the stream broken), so a peer that stops reading cannot hold this
    /// thread longer than that.
    static func setSendTimeout(_ fd: Int32, seconds: Double) {
        let whole = Int(seconds)
        var timeout = timeval(tv_sec: whole, tv_usec: Int((seconds - Double(whole)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Bodies up to this size are copied behind the head and written with it.
    static let coalesceLimit = 16 * 1024
}

/// What a worker thread keeps from one connection to the next: its executor and the
/// buffers its connections read params into and build response heads in.
///
/// Connections are often short (nginx closes upstream connections beyond its idle
/// `keepalive` cache), and making these per connection costs about as much as the
/// request served on it: they are made once per thread.
///
/// `@unchecked Sendable`: created by its worker thread and used only there.
final class WorkerThreadResources: @unchecked Sendable {
    /// The peek buffer's usual size: a request's params are usually under 1 KB.
    static let peekBytes = 8192

    let executor = WorkerExecutor()
    private var peek: [UInt8]
    private var head: [UInt8]

    init() {
        peek = [UInt8](repeating: 0, count: Self.peekBytes)
        head = []
        head.reserveCapacity(512)
    }

    /// Moves the buffers out for a connection (no copy: the box keeps empty arrays).
    func takeBuffers() -> (peek: [UInt8], head: [UInt8]) {
        defer {
            peek = []
            head = []
        }
        return (peek, head)
    }

    /// Takes the buffers back when the connection ends. A peek buffer grown for one
    /// oversized request is not kept.
    func putBack(peek: [UInt8], head: [UInt8]) {
        self.peek = peek.count > Self.peekBytes ? [UInt8](repeating: 0, count: Self.peekBytes) : peek
        self.head = head
    }
}

/// The connection's `FCGX_Request`, at a fixed address for the connection's life.
///
/// `@unchecked Sendable`: it is created on the worker thread and only used there (by
/// the connection's task, which runs on that thread's executor).
final class FCGXRequestBox: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<FCGX_Request>

    init(fd: Int32) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: FCGX_Request())
        FCGX_InitRequest(pointer, -1, 0)
        // Hand libfcgi the accepted connection. keepConnection must be set before the
        // first FCGX_Accept_r, whose leading finish would otherwise close the fd.
        // listen_sock stays -1: when nginx closes the connection, FCGX_Accept_r fails
        // instead of accepting on a listening socket.
        pointer.pointee.ipcFd = fd
        pointer.pointee.keepConnection = 1
    }

    func deallocate() {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }
}

/// Writes to a request's FastCGI stdout. Used only on the worker thread.
struct OutputStream {
    let stream: UnsafeMutablePointer<FCGX_Stream>

    /// `false` once the peer went away (EPIPE): further output is dropped.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty else { return true }
        guard FCGX_GetError(stream) == 0 else { return false }
        return bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                FCGX_PutStr(chars.baseAddress, Int32(chars.count), stream) == Int32(chars.count)
            }
        }
    }
}

/// The `BodyWriter` handed to a streaming handler.
///
/// `@unchecked Sendable`: it wraps the worker thread's C stream. Every use checks
/// that it runs on that thread (the handler's task prefers the worker's executor, so
/// it does) and the sink is invalidated before the request is finished, so the
/// pointer is never used from another thread or after it died.
final class StreamSink: BodyWriter, @unchecked Sendable {
    private var writer: OutputStream?
    private let owner = pthread_self()

    init(writer: OutputStream) {
        self.writer = writer
    }

    func write(_ bytes: [UInt8]) async throws {
        guard pthread_equal(owner, pthread_self()) != 0, let writer else {
            throw StreamClosedError()
        }
        guard writer.write(bytes) else { throw StreamClosedError() }
    }

    func invalidate() {
        writer = nil
    }
}

/// The client went away (or the stream is finished); stop producing.
struct StreamClosedError: Error {}
