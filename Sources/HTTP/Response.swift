public import JSON

/// An HTTP status code with its reason phrase.
public struct Status: Sendable, Hashable {
    public let code: Int
    public let reason: String

    public init(code: Int, reason: String) {
        self.code = code
        self.reason = reason
    }

    public static let ok = Status(code: 200, reason: "OK")
    public static let created = Status(code: 201, reason: "Created")
    public static let accepted = Status(code: 202, reason: "Accepted")
    public static let noContent = Status(code: 204, reason: "No Content")
    public static let badRequest = Status(code: 400, reason: "Bad Request")
    public static let unauthorized = Status(code: 401, reason: "Unauthorized")
    public static let forbidden = Status(code: 403, reason: "Forbidden")
    public static let notFound = Status(code: 404, reason: "Not Found")
    public static let methodNotAllowed = Status(code: 405, reason: "Method Not Allowed")
    public static let conflict = Status(code: 409, reason: "Conflict")
    public static let payloadTooLarge = Status(code: 413, reason: "Payload Too Large")
    public static let unsupportedMediaType = Status(code: 415, reason: "Unsupported Media Type")
    public static let unprocessableContent = Status(code: 422, reason: "Unprocessable Content")
    public static let requestHeaderFieldsTooLarge = Status(code: 431, reason: "Request Header Fields Too Large")
    public static let internalServerError = Status(code: 500, reason: "Internal Server Error")
    public static let serviceUnavailable = Status(code: 503, reason: "Service Unavailable")
}

/// Receives a streamed response body piece by piece.
///
/// `write` suspends until the bytes are handed to the connection, so a producer
/// can never run ahead of the client (back-pressure).
public protocol BodyWriter: Sendable {
    func write(_ bytes: [UInt8]) async throws
}

/// A response body: bytes known up front, or a producer that streams them.
public enum ResponseBody: Sendable {
    case bytes([UInt8])
    /// Streamed in pieces; used for `GET /users` so memory stays flat.
    case stream(@Sendable (any BodyWriter) async throws -> Void)

    public static let empty = ResponseBody.bytes([])
}

/// An HTTP response: status, headers and body.
public struct Response: Sendable {
    public var status: Status
    /// Headers in order; `Content-Type` is one of them when there is a body.
    public var headers: [(name: String, value: String)]
    public var body: ResponseBody
    /// The route pattern that answered (`/users/{id}`), for metrics; set by the router.
    public var route: String?

    public init(status: Status, headers: [(name: String, value: String)] = [], body: ResponseBody = .empty) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static let jsonContentType = "application/json; charset=utf-8"

    /// A JSON response with the given encoded body.
    public static func json(
        _ status: Status, _ body: [UInt8], headers: [(name: String, value: String)] = []
    ) -> Response {
        var all: [(name: String, value: String)] = []
        all.reserveCapacity(headers.count + 2)  // + X-Request-Id, added on the way out
        all.append(("Content-Type", jsonContentType))
        all.append(contentsOf: headers)
        return Response(status: status, headers: all, body: .bytes(body))
    }

    /// A JSON response built with a `JSONWriter`.
    public static func json(
        _ status: Status,
        headers: [(name: String, value: String)] = [],
        _ build: (inout JSONWriter) -> Void
    ) -> Response {
        var writer = JSONWriter()
        build(&writer)
        return json(status, writer.bytes, headers: headers)
    }

    /// The value of the first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first { $0.name.lowercased() == lowered }?.value
    }
}
