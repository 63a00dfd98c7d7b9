import Glibc

/// Path parameters captured by a route pattern such as `/users/{id}`.
public struct Parameters: Sendable {
    private var values: [(name: String, value: String)] = []

    public init() {}

    mutating func append(_ name: String, _ value: String) {
        values.append((name, value))
    }

    /// The raw value captured for `name`.
    public subscript(name: String) -> String? {
        values.first { $0.name == name }?.value
    }
}

/// Answers requests. The FastCGI layer calls it once per request.
public protocol Responder: Sendable {
    /// Decides from the request's method, path and headers alone whether it may go
    /// on: `nil` to go on, or the error to answer it with. The FastCGI layer calls it
    /// before it reads the request's body, and answers a refused request through
    /// `respond(rejected:with:)` with the body discarded unread, so a refusal costs
    /// no body buffering and no handler runs. It may note who the request comes from
    /// (`principal`), whether it admits the request or not.
    func admit(_ request: inout Request) -> HTTPError?
    /// Whether `admit` may refuse anything. When it is false the FastCGI layer does
    /// not call it, and builds each request once, body included.
    var checksAdmission: Bool { get }
    func respond(to request: Request) async -> Response
    /// Answers a request the FastCGI layer refused before any handler could see it
    /// (a body over the limit, params too large): `request` holds what could be read
    /// of it (no body). Every answer passes a responder, so each is logged and counted.
    func respond(rejected request: Request, with error: HTTPError) async -> Response
}

extension Responder {
    public func admit(_ request: inout Request) -> HTTPError? { nil }

    public var checksAdmission: Bool { false }

    public func respond(rejected request: Request, with error: HTTPError) async -> Response {
        error.response
    }
}

/// A route handler: may throw `HTTPError` for client mistakes.
public typealias Handler = @Sendable (Request, Parameters) async throws -> Response

/// Collects routes, then freezes them into an immutable `RouterResponder`.
///
/// ```swift
/// var router = Router()
/// router.get("/user/{id}") { request, parameters in ... }
/// let responder = router.buildResponder()
/// ```
public struct Router: Sendable {
    private var routes: [Route] = []
    /// Paths are matched after removing this prefix (for mounting under e.g. `/api`).
    public var mountPrefix: String

    public init(mountPrefix: String = "") {
        self.mountPrefix = Self.normalizedPrefix(mountPrefix)
    }

    /// `/api/` and `api` both mean `/api`; `/` and empty mean no prefix.
    public static func normalizedPrefix(_ prefix: String) -> String {
        var trimmed = prefix
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.isEmpty { return "" }
        return trimmed.hasPrefix("/") ? trimmed : "/" + trimmed
    }

    /// Adds a route. A `GET` route answers `HEAD` too (the handler runs, the body is
    /// not sent) unless `answersHead` is false: a `GET` that changes state (the seed's
    /// `/start-task`) must not run for a `HEAD`, which is 405 there.
    public mutating func add(
        _ method: String, _ pattern: String, answersHead: Bool = true, _ handler: @escaping Handler
    ) {
        let segments = Route.segments(of: pattern)
        if routes.contains(where: { $0.segments == segments && $0.method == method }) {
            preconditionFailure("route \(method) \(pattern) registered twice")
        }
        routes.append(
            Route(
                method: method, segments: segments, handler: handler, pattern: pattern,
                answersHead: method == "GET" && answersHead))
    }

    public mutating func get(_ pattern: String, answersHead: Bool = true, _ handler: @escaping Handler) {
        add("GET", pattern, answersHead: answersHead, handler)
    }
    public mutating func post(_ pattern: String, _ handler: @escaping Handler) { add("POST", pattern, handler) }
    public mutating func patch(_ pattern: String, _ handler: @escaping Handler) { add("PATCH", pattern, handler) }
    public mutating func delete(_ pattern: String, _ handler: @escaping Handler) { add("DELETE", pattern, handler) }

    /// The frozen, `Sendable` responder.
    public func buildResponder(
        onError: @escaping @Sendable (any Error, Request) -> Response = RouterResponder.internalErrorResponse
    ) -> RouterResponder {
        RouterResponder(routes: routes, mountPrefix: mountPrefix, onError: onError)
    }
}

/// One segment of a route pattern.
enum Segment: Sendable, Equatable {
    /// A fixed segment, as UTF-8 bytes: request paths are matched without building strings.
    case literal([UInt8])
    case parameter(String)
}

struct Route: Sendable {
    var method: String
    var segments: [Segment]
    var handler: Handler
    /// The pattern as written, used as the metrics label.
    var pattern: String
    /// A `GET` route that also answers `HEAD`.
    var answersHead: Bool

    static func segments(of pattern: String) -> [Segment] {
        pattern.split(separator: "/", omittingEmptySubsequences: true).map { part in
            if part.hasPrefix("{") && part.hasSuffix("}") {
                return .parameter(String(part.dropFirst().dropLast()))
            }
            return .literal(Array(part.utf8))
        }
    }

    /// Whether the path's segments (byte ranges of `path`) have this route's shape.
    func matches(_ path: UnsafeBufferPointer<UInt8>, _ parts: [Range<Int>]) -> Bool {
        guard parts.count == segments.count else { return false }
        for (segment, part) in zip(segments, parts) {
            guard case .literal(let literal) = segment else { continue }
            guard literal.count == part.count else { return false }
            let equal = literal.withUnsafeBufferPointer { bytes in
                memcmp(bytes.baseAddress!, path.baseAddress! + part.lowerBound, part.count) == 0
            }
            if !equal { return false }
        }
        return true
    }

    /// The parameters captured from a path that `matches`.
    func parameters(_ path: UnsafeBufferPointer<UInt8>, _ parts: [Range<Int>]) -> Parameters {
        var parameters = Parameters()
        for (segment, part) in zip(segments, parts) {
            if case .parameter(let name) = segment {
                parameters.append(name, String(decoding: UnsafeBufferPointer(rebasing: path[part]), as: UTF8.self))
            }
        }
        return parameters
    }

    /// The byte ranges of the non-empty `/`-separated segments of `path`.
    static func split(_ path: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
        var parts: [Range<Int>] = []
        parts.reserveCapacity(6)  // one allocation for the usual few segments
        var start = 0
        for index in 0...path.count where index == path.count || path[index] == UInt8(ascii: "/") {
            if index > start { parts.append(start..<index) }
            start = index + 1
        }
        return parts
    }
}

/// Routes a request to its handler: 404 for an unknown path, 405 + `Allow` for a known
/// path with the wrong method, and every thrown error rendered as JSON.
public struct RouterResponder: Responder {
    let routes: [Route]
    let mountPrefix: String
    let onError: @Sendable (any Error, Request) -> Response

    /// The response for an unexpected error: a 500 that reveals nothing internal.
    public static let internalErrorResponse: @Sendable (any Error, Request) -> Response = { _, _ in
        HTTPError(.internalServerError, "Internal server error").response
    }

    public func respond(to request: Request) async -> Response {
        guard var path = stripPrefix(request.path) else { return HTTPError.notFound().response }
        let isHead = request.method == "HEAD"
        var allowed: [String] = []
        var found: (route: Route, parameters: Parameters)?
        // Empty segments are skipped, so a trailing slash names the same resource
        // (`/users/` is `/users`), and so do doubled slashes.
        path.withUTF8 { bytes in
            let parts = Route.split(bytes)
            for route in routes where route.matches(bytes, parts) {
                if route.method == request.method || (isHead && route.answersHead) {
                    found = (route, route.parameters(bytes, parts))
                    return
                }
                allowed.append(route.method)
                if route.answersHead { allowed.append("HEAD") }
            }
        }
        if let (route, parameters) = found {
            var response: Response
            do {
                response = try await route.handler(request, parameters)
            } catch let error as HTTPError {
                response = error.response
            } catch {
                response = onError(error, request)
            }
            response.route = route.pattern
            return response
        }
        if allowed.isEmpty {
            var response = HTTPError.notFound().response
            response.route = "unmatched"
            return response
        }
        var response = HTTPError(
            .methodNotAllowed,
            "Method \(request.method) not allowed",
            headers: [.init("Allow", allowed.joined(separator: ", "))]
        ).response
        response.route = "unmatched"
        return response
    }

    private func stripPrefix(_ path: String) -> Substring? {
        if mountPrefix.isEmpty { return Substring(path) }
        guard path.hasPrefix(mountPrefix) else { return nil }
        let rest = path.dropFirst(mountPrefix.count)
        if rest.isEmpty || rest.hasPrefix("/") { return rest }
        return nil
    }
}
