internal import CFastCGI
import Foundation
import Glibc
import HTTP

/// Copies a libfcgi request (params and stdin) into a safe `Request`.
enum RequestDecoder {
    enum Outcome {
        case request(Request)
        /// Answered without calling the handler (body too large, bad framing).
        case rejected(Response)
    }

    static func decode(_ request: FCGX_Request, maxBodyBytes: Int) -> Outcome {
        let envp = request.envp
        let params = CGIParams { name in FCGX_GetParam(name, envp).map { String(cString: $0) } }
        var headers: [String: String] = [:]
        if var cursor = envp {
            while let entry = cursor.pointee {
                // Only HTTP_* entries become headers; compare bytes before copying.
                if entry[0] == 0x48, entry[1] == 0x54, entry[2] == 0x54, entry[3] == 0x50, entry[4] == 0x5F {
                    let pair = String(cString: entry + 5)
                    if let equals = pair.firstIndex(of: "=") {
                        headers[CGIParams.headerName(pair[..<equals])] = String(pair[pair.index(after: equals)...])
                    }
                }
                cursor += 1
            }
        }
        let contentLength = params.contentLength
        let requestID = params.requestID(headers: headers)
        if let contentLength, contentLength > maxBodyBytes {
            discard(request.in)
            return .rejected(tooLarge(maxBodyBytes, requestID: requestID))
        }
        guard let body = readBody(request.in, limit: maxBodyBytes) else {
            return .rejected(tooLarge(maxBodyBytes, requestID: requestID))
        }
        return .request(
            Request(
                method: params.method,
                path: params.path,
                query: params["QUERY_STRING"] ?? "",
                contentType: params["CONTENT_TYPE"].flatMap { $0.isEmpty ? nil : $0 },
                headers: headers,
                body: body,
                requestID: requestID
            )
        )
    }

    static func tooLarge(_ limit: Int, requestID: String) -> Response {
        var response = HTTPError(.payloadTooLarge, "Request body is larger than \(limit) bytes").response
        response.headers.append(("X-Request-Id", requestID))
        return response
    }

    /// Reads stdin up to `limit` bytes; `nil` when there is more than that (the rest
    /// is discarded, never buffered).
    static func readBody(_ stream: UnsafeMutablePointer<FCGX_Stream>, limit: Int) -> [UInt8]? {
        var body: [UInt8] = []
        var chunk = [CChar](repeating: 0, count: 16_384)
        while true {
            let count = chunk.withUnsafeMutableBufferPointer { FCGX_GetStr($0.baseAddress, Int32($0.count), stream) }
            if count <= 0 { return body }
            if body.count + Int(count) > limit {
                discard(stream)
                return nil
            }
            chunk.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: UInt8.self) { body.append(contentsOf: $0.prefix(Int(count))) }
            }
        }
    }

    /// Reads and drops the rest of stdin, so a kept-alive connection stays in step.
    static func discard(_ stream: UnsafeMutablePointer<FCGX_Stream>) {
        var chunk = [CChar](repeating: 0, count: 16_384)
        while chunk.withUnsafeMutableBufferPointer({ FCGX_GetStr($0.baseAddress, Int32($0.count), stream) }) > 0 {}
    }
}

/// The CGI parameters usersd routes on, with the fallbacks stock `fastcgi_params`
/// needs (`DOCUMENT_URI`, else the path of `REQUEST_URI`, else `SCRIPT_NAME` +
/// `PATH_INFO`).
struct CGIParams {
    let lookup: (String) -> String?

    subscript(name: String) -> String? { lookup(name) }

    var method: String {
        let method = lookup("REQUEST_METHOD") ?? ""
        return method.isEmpty ? "GET" : method
    }

    var path: String {
        if let uri = lookup("DOCUMENT_URI"), !uri.isEmpty { return uri }
        if let uri = lookup("REQUEST_URI"), !uri.isEmpty {
            let raw = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
            return PercentDecoding.decode(raw, plusAsSpace: false) ?? String(raw)
        }
        let joined = (lookup("SCRIPT_NAME") ?? "") + (lookup("PATH_INFO") ?? "")
        return joined.isEmpty ? "/" : joined
    }

    var contentLength: Int? {
        guard let text = lookup("CONTENT_LENGTH"), !text.isEmpty else { return nil }
        // A length that does not parse or overflows is treated as "too large".
        return Int(text) ?? Int.max
    }

    /// nginx's `$request_id` (param `REQUEST_ID`), an `X-Request-Id` header, or a new id.
    func requestID(headers: [String: String]) -> String {
        if let id = lookup("REQUEST_ID"), Self.isAcceptableID(id) { return id }
        if let id = headers["x-request-id"], Self.isAcceptableID(id) { return id }
        return RequestIDGenerator.next()
    }

    static func isAcceptableID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128
            && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }

    /// `CONTENT_TYPE` → `content-type`, `X_REQUEST_ID` → `x-request-id`.
    static func headerName(_ cgiName: Substring) -> String {
        String(cgiName.lowercased().map { $0 == "_" ? "-" : $0 })
    }
}

/// Request ids for requests that arrive without one: a random per-process prefix and
/// a counter, 32 hex digits like nginx's `$request_id`.
enum RequestIDGenerator {
    private static let prefix: String = {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }()
    private static let counter = AtomicCounter()

    static func next() -> String {
        let hex = String(counter.next(), radix: 16)
        return prefix + String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }
}
