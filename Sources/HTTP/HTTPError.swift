import JSON

/// An error that renders itself as a JSON response: `{"error": message, "field": field}`.
///
/// Handlers throw it for every client mistake; the router turns it into the response,
/// so every error the service sends has the same shape.
public struct HTTPError: Error, Sendable, Equatable {
    public var status: Status
    public var message: String
    /// The request field the error is about, when there is one.
    public var field: String?
    /// Extra headers (`Allow`, `Retry-After`).
    public var headers: [Header]
    /// Extra string members of the JSON body after `error` and `field` (a 403's
    /// `scope`), as name and value.
    public var details: [Header]

    public struct Header: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(
        _ status: Status, _ message: String, field: String? = nil, headers: [Header] = [], details: [Header] = []
    ) {
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.details = details
    }

    /// The JSON response for this error.
    public var response: Response {
        Response.json(status, headers: headers.map { ($0.name, $0.value) }) { json in
            json.object { object in
                object.field("error", message)
                if let field { object.field("field", field) }
                for detail in details { object.field(detail.name, detail.value) }
            }
        }
    }

    public static func notFound(_ message: String = "Not found") -> HTTPError { HTTPError(.notFound, message) }
    public static func badRequest(_ message: String) -> HTTPError { HTTPError(.badRequest, message) }
    public static func invalid(_ field: String, _ message: String) -> HTTPError {
        HTTPError(.unprocessableContent, message, field: field)
    }
}
