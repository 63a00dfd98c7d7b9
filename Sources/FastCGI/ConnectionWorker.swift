internal import CFastCGI
import Foundation
import Glibc
import HTTP
import Lifecycle

/// Serves the requests of one FastCGI connection on the current thread.
///
/// The `FCGX_Request` lives on this thread's stack for the connection's lifetime and
/// never leaves it; handlers receive copied `Request` values.
struct ConnectionWorker {
    let fd: Int32
    let state: WorkerState
    let context: ConnectionContext

    func serve() {
        var request = FCGX_Request()
        FCGX_InitRequest(&request, -1, 0)
        // Hand libfcgi the accepted connection. keepConnection must be set before the
        // first FCGX_Accept_r, whose leading finish would otherwise close the fd.
        // listen_sock stays -1: when nginx closes the connection, FCGX_Accept_r fails
        // instead of accepting on a listening socket.
        request.ipcFd = fd
        request.keepConnection = 1
        let executor = WorkerExecutor()
        var peekBuffer = [UInt8](repeating: 0, count: 8192)
        defer { state.markAccepting() }
        while true {
            // Always read the next request: nginx may already have sent it on this
            // connection, even while draining (closing now would lose it).
            state.markIdle(request.ipcFd)
            // Vet the next request's records before libfcgi allocates what they declare.
            let verdict = ParamsGuard.check(fd: request.ipcFd, buffer: &peekBuffer)
            if verdict != .ok {
                state.markBusy()
                if case .tooLarge(let requestID) = verdict {
                    ParamsGuard.answerTooLarge(fd: request.ipcFd, requestID: requestID)
                    Log.warning("request params over 64 KiB answered 431; connection closed")
                }
                request.keepConnection = 0
                FCGX_Free(&request, 1)
                return
            }
            let accepted = FCGX_Accept_r(&request)
            state.markBusy()
            guard accepted >= 0 else { return }  // nginx closed the connection (or drain woke it)
            handle(&request, executor: executor)
            // While draining, this response is the connection's last.
            if state.isDraining { endAsLast(&request) }
            FCGX_Finish_r(&request)
            if request.ipcFd < 0 { return }  // closed: not kept, or draining
        }
    }

    /// Ends the current response so that nginx closes the connection instead of
    /// sending another request on it (see `Records.closingEnd`), and has
    /// `FCGX_Finish_r` close it without writing anything more.
    private func endAsLast(_ request: inout FCGX_Request) {
        defer { request.keepConnection = 0 }
        // Without FCGI_KEEP_CONN the web server closes the connection after this
        // response anyway.
        guard request.keepConnection != 0, let out = request.out else { return }
        guard FCGX_FFlush(out) == 0 else { return }  // the peer is gone; libfcgi closes
        let end = Records.closingEnd(requestID: UInt16(truncatingIfNeeded: request.requestId), appStatus: request.appStatus)
        Records.send(end, to: request.ipcFd)
        // The end records are out: libfcgi's own (written when it closes the stream)
        // must not follow them.
        out.pointee.wasFCloseCalled = 1
    }

    private func handle(_ request: inout FCGX_Request, executor: WorkerExecutor) {
        let streams = FCGXStreams(request)
        let parsed = RequestDecoder.decode(request, maxBodyBytes: context.maxBodyBytes)
        let response: Response
        let isHead: Bool
        switch parsed {
        case .request(let httpRequest):
            isHead = httpRequest.method == "HEAD"
            let responder = context.responder
            response = executor.run { await responder.respond(to: httpRequest) }
        case .rejected(let early):
            isHead = false
            response = early
        }
        let writer = OutputStream(stream: streams.out)
        writer.write(ResponseEncoder.head(of: response))
        guard !isHead else { return }
        switch response.body {
        case .bytes(let bytes):
            writer.write(bytes)
        case .stream(let produce):
            let sink = StreamSink(writer: writer)
            let failed = executor.run { () -> Bool in
                do {
                    try await produce(sink)
                    return false
                } catch {
                    return true
                }
            }
            sink.invalidate()
            if failed { writer.abort() }
        }
    }
}

/// The C stream pointers of the current request.
struct FCGXStreams {
    let out: UnsafeMutablePointer<FCGX_Stream>

    init(_ request: FCGX_Request) {
        out = request.out
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

    /// A stream failed half-way: mark the output broken so the response is not
    /// mistaken for a complete one (nginx sees a truncated body, not a clean end).
    func abort() {
        FCGX_SetExitStatus(1, stream)
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
