import Basics
internal import CFastCGI
import Foundation
import Glibc
import HTTP
import Synchronization

/// Copies a libfcgi request (params and stdin) into a safe `Request`.
enum RequestDecoder {
    enum Outcome {
        case request(Request)
        /// To be answered with the error without calling a handler (not admitted, or
        /// the body too large); the request carries everything but the body.
        case rejected(Request, HTTPError)
    }

    /// Decodes the params, then reads the body; the request is built once, with it.
    static func decode(_ request: FCGX_Request, maxBodyBytes: Int) -> Outcome {
        let (known, headers) = params(of: request)
        let params = CGIParams { known[$0] }
        let route = params.route
        if route.climbsAboveRoot {
            discard(request.in)
            return .rejected(params.request(headers: headers, path: route.path), aboveRoot)
        }
        if let contentLength = params.contentLength, contentLength > maxBodyBytes {
            discard(request.in)
            return .rejected(params.request(headers: headers, path: route.path), tooLarge(maxBodyBytes))
        }
        guard let body = readBody(request.in, limit: maxBodyBytes) else {
            return .rejected(params.request(headers: headers, path: route.path), tooLarge(maxBodyBytes))
        }
        return .request(params.request(headers: headers, path: route.path, body: body))
    }

    /// Decodes the params, asks `admit` whether the request may go on (see
    /// `Responder.admit`), then reads the body. A refused request's body, like one
    /// over the limit, is discarded unread. A path that climbs above the root is
    /// refused first, as without `admit`: it names no route at all.
    static func decode(
        _ request: FCGX_Request, maxBodyBytes: Int, admit: (inout Request) -> HTTPError?
    ) -> Outcome {
        let (known, headers) = params(of: request)
        let params = CGIParams { known[$0] }
        let route = params.route
        var decoded = params.request(headers: headers, path: route.path)
        if route.climbsAboveRoot {
            discard(request.in)
            return .rejected(decoded, aboveRoot)
        }
        if let refusal = admit(&decoded) {
            discard(request.in)
            return .rejected(decoded, refusal)
        }
        if let contentLength = params.contentLength, contentLength > maxBodyBytes {
            discard(request.in)
            return .rejected(decoded, tooLarge(maxBodyBytes))
        }
        guard let body = readBody(request.in, limit: maxBodyBytes) else {
            return .rejected(decoded, tooLarge(maxBodyBytes))
        }
        decoded.body = body
        return .request(decoded)
    }

    /// One pass over the params: the ones usersd routes on, and HTTP_* as headers.
    /// The `KnownParams` point into the request's params: use them before it is
    /// finished.
    @inline(__always)
    private static func params(of request: FCGX_Request) -> (KnownParams, HTTPHeaders) {
        var known = KnownParams()
        var headers = HTTPHeaders()
        headers.reserveCapacity(8)  // room for the usual headers: one allocation
        if var cursor = request.envp {
            while let entry = cursor.pointee {
                // Only HTTP_* entries become headers; compare bytes before copying.
                if entry[0] == 0x48, entry[1] == 0x54, entry[2] == 0x54, entry[3] == 0x50, entry[4] == 0x5F {
                    if let equals = strchr(entry + 5, 0x3D) {
                        let name = UnsafeBufferPointer(
                            start: UnsafeRawPointer(entry + 5).assumingMemoryBound(to: UInt8.self),
                            count: equals - (entry + 5))
                        headers.append(name: CGIParams.headerName(utf8: name), value: String(cString: equals + 1))
                    }
                } else {
                    known.record(entry)
                }
                cursor += 1
            }
        }
        return (known, headers)
    }

    /// nginx answers 400 to a path whose `..` climbs above the root; usersd does the
    /// same when the web server passed the path on as the client wrote it.
    static let aboveRoot = HTTPError(.badRequest, "Request path climbs above the root")

    static func tooLarge(_ limit: Int) -> HTTPError {
        HTTPError(.payloadTooLarge, "Request body is larger than \(limit) bytes")
    }

    /// Reads stdin up to `limit` bytes; `nil` when there is more than that (the rest
    /// is discarded, never buffered). The chunk buffer is a stack allocation: most
    /// requests have no body, and reading their empty stdin must not cost a heap
    /// allocation.
    static func readBody(_ stream: UnsafeMutablePointer<FCGX_Stream>, limit: Int) -> [UInt8]? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: chunkSize) { chunk in
            var body: [UInt8] = []
            while true {
                let count = Int(FCGX_GetStr(chunk.baseAddress, Int32(chunk.count), stream))
                if count <= 0 { return body }
                if body.count + count > limit {
                    discard(stream)
                    return nil
                }
                UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(chunk)[..<count]).withMemoryRebound(
                    to: UInt8.self
                ) {
                    body.append(contentsOf: $0)
                }
            }
        }
    }

    /// Reads and drops the rest of stdin, so a kept-alive connection stays in step.
    static func discard(_ stream: UnsafeMutablePointer<FCGX_Stream>) {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: chunkSize) { chunk in
            while FCGX_GetStr(chunk.baseAddress, Int32(chunk.count), stream) > 0 {}
        }
    }

    /// At most 1 KiB: Swift places larger temporary allocations on the heap, which
    /// would cost a malloc and free on every request.
    static let chunkSize = 1024
}

/// The CGI params `CGIParams` asks for, gathered in one pass over the environment
/// (libfcgi's `FCGX_GetParam` scans the whole list on every call). The first
/// occurrence of a name wins, as with `FCGX_GetParam`.
///
/// It keeps pointers to the values inside libfcgi's environment and makes a `String`
/// only of the ones asked for (most requests never need the fallbacks
/// `REQUEST_URI`, `SCRIPT_NAME`, `PATH_INFO`): it must not outlive the `FCGX_Request`
/// whose `envp` it read, so it lives only inside `RequestDecoder.decode`.
struct KnownParams {
    /// The params `CGIParams` asks for.
    enum Name: String, CaseIterable {
        case requestMethod = "REQUEST_METHOD"
        case documentURI = "DOCUMENT_URI"
        case requestURI = "REQUEST_URI"
        case scriptName = "SCRIPT_NAME"
        case pathInfo = "PATH_INFO"
        case queryString = "QUERY_STRING"
        case contentType = "CONTENT_TYPE"
        case contentLength = "CONTENT_LENGTH"
        case requestID = "REQUEST_ID"
        case remoteAddress = "REMOTE_ADDR"

        /// The name of the param `entry` (`NAME=value`) whose name is `length` bytes,
        /// if it is one of these. A switch on the length, then one or two compares:
        /// most params (`SERVER_PORT`, `REMOTE_ADDR`, ...) are dismissed without any.
        static func of(_ entry: UnsafePointer<CChar>, length: Int) -> Name? {
            func matches(_ name: StaticString) -> Bool { memcmp(entry, name.utf8Start, length) == 0 }
            switch length {
            case 9: return matches("PATH_INFO") ? .pathInfo : nil
            case 10: return matches("REQUEST_ID") ? .requestID : nil
            case 11:
                return matches("REQUEST_URI")
                    ? .requestURI
                    : matches("SCRIPT_NAME") ? .scriptName : matches("REMOTE_ADDR") ? .remoteAddress : nil
            case 12:
                return matches("DOCUMENT_URI")
                    ? .documentURI
                    : matches("QUERY_STRING") ? .queryString : matches("CONTENT_TYPE") ? .contentType : nil
            case 14:
                return matches("REQUEST_METHOD") ? .requestMethod : matches("CONTENT_LENGTH") ? .contentLength : nil
            default: return nil
            }
        }
    }

    /// Where each param's value starts (NUL-terminated), indexed like `Name.allCases`.
    private var values:
        (
            UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?,
            UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?,
            UnsafePointer<CChar>?, UnsafePointer<CChar>?
        ) = (nil, nil, nil, nil, nil, nil, nil, nil, nil, nil)

    mutating func record(_ entry: UnsafeMutablePointer<CChar>) {
        guard let equals = strchr(entry, 0x3D), let name = Name.of(entry, length: equals - entry) else { return }
        if pointer(name) == nil { setPointer(name, UnsafePointer(equals + 1)) }
    }

    subscript(name: Name) -> String? {
        pointer(name).map { String(cString: $0) }
    }

    private func pointer(_ name: Name) -> UnsafePointer<CChar>? {
        switch name {
        case .requestMethod: values.0
        case .documentURI: values.1
        case .requestURI: values.2
        case .scriptName: values.3
        case .pathInfo: values.4
        case .queryString: values.5
        case .contentType: values.6
        case .contentLength: values.7
        case .requestID: values.8
        case .remoteAddress: values.9
        }
    }

    private mutating func setPointer(_ name: Name, _ value: UnsafePointer<CChar>) {
        switch name {
        case .requestMethod: values.0 = value
        case .documentURI: values.1 = value
        case .requestURI: values.2 = value
        case .scriptName: values.3 = value
        case .pathInfo: values.4 = value
        case .queryString: values.5 = value
        case .contentType: values.6 = value
        case .contentLength: values.7 = value
        case .requestID: values.8 = value
        case .remoteAddress: values.9 = value
        }
    }
}

/// The CGI parameters usersd routes on, with the fallbacks stock `fastcgi_params`
/// and the other web servers need (`DOCUMENT_URI`, else the percent-decoded path of
/// `REQUEST_URI`, else `SCRIPT_NAME` + `PATH_INFO`). Only nginx sends `DOCUMENT_URI`
/// (Caddy sends it empty); Apache httpd, lighttpd, Caddy and h2o are routed on
/// `REQUEST_URI`, which they pass on as the client wrote it.
struct CGIParams {
    let lookup: (KnownParams.Name) -> String?

    subscript(name: KnownParams.Name) -> String? { lookup(name) }

    var method: String {
        let method = lookup(.requestMethod) ?? ""
        return method.isEmpty ? "GET" : method
    }

    /// The path to route on, its dot segments resolved (see `DotSegments`), and whether
    /// it climbs above the root (then `path` is the decoded path as sent, for the log).
    var route: (path: String, climbsAboveRoot: Bool) {
        let sent = sentPath
        guard let resolved = DotSegments.resolve(sent) else { return (sent, true) }
        return (resolved, false)
    }

    var path: String { route.path }

    /// The decoded path as the web server passed it on.
    private var sentPath: String {
        if let uri = lookup(.documentURI), !uri.isEmpty { return uri }
        if let uri = lookup(.requestURI), !uri.isEmpty {
            let raw = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
            return PercentDecoding.decode(raw, plusAsSpace: false) ?? String(raw)
        }
        let joined = (lookup(.scriptName) ?? "") + (lookup(.pathInfo) ?? "")
        return joined.isEmpty ? "/" : joined
    }

    /// The request these params describe, with `body`; `path` is `self.path` unless
    /// given (the decoder resolves it once, see `route`).
    func request(headers: HTTPHeaders, path: String? = nil, body: [UInt8] = []) -> Request {
        Request(
            method: method, path: path ?? self.path, query: lookup(.queryString) ?? "",
            contentType: lookup(.contentType).flatMap { $0.isEmpty ? nil : $0 },
            headers: headers, body: body, requestID: requestID(headers: headers), remoteAddress: lookup(.remoteAddress)
        )
    }

    var contentLength: Int? {
        guard let text = lookup(.contentLength), !text.isEmpty else { return nil }
        // A length that does not parse or overflows is treated as "too large".
        return Int(text) ?? Int.max
    }

    /// nginx's `$request_id` (param `REQUEST_ID`), an `X-Request-Id` header, or a new id.
    func requestID(headers: HTTPHeaders) -> String {
        if let id = lookup(.requestID), Self.isAcceptableID(id) { return id }
        if let id = headers["x-request-id"], Self.isAcceptableID(id) { return id }
        return RequestIDGenerator.next()
    }

    static func isAcceptableID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128
            && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }

    /// `CONTENT_TYPE` → `content-type`, `X_REQUEST_ID` → `x-request-id`.
    static func headerName(_ cgiName: Substring) -> String {
        var name = cgiName
        return name.withUTF8 { headerName(utf8: $0) }
    }

    /// The same from the raw bytes of the name (ASCII letters lower-cased, `_` → `-`).
    static func headerName(utf8 name: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: name.count) { target in
            for (index, byte) in name.enumerated() {
                target[index] =
                    switch byte {
                    case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte + 32
                    case UInt8(ascii: "_"): UInt8(ascii: "-")
                    default: byte
                    }
            }
            return name.count
        }
    }
}

/// Request ids for requests that arrive without one: a random per-process prefix and
/// a counter, 32 hex digits like nginx's `$request_id`.
enum RequestIDGenerator {
    private static let prefix: UInt64 = UInt64.random(in: .min ... .max)
    private static let counter = Atomic<UInt64>(0)

    static func next() -> String {
        let count = counter.add(1, ordering: .relaxed).newValue
        return String(unsafeUninitializedCapacity: 32) { buffer in
            HexDigit.write(prefix, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<16]))
            HexDigit.write(count, into: UnsafeMutableBufferPointer(rebasing: buffer[16..<32]))
            return 32
        }
    }
}
