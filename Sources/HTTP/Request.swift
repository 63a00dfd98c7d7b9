import Basics

/// One HTTP request as nginx handed it over FastCGI, copied into safe Swift values.
///
/// The FastCGI layer builds it on its worker thread; handlers only ever see this
/// `Sendable` value, never the C request it came from.
public struct Request: Sendable {
    /// `REQUEST_METHOD`, upper-case as sent (`GET`, `POST`, ...).
    public var method: String
    /// The decoded path (`DOCUMENT_URI`), without the query string.
    public var path: String
    /// The raw query string (`QUERY_STRING`), without the leading `?`.
    public var query: String
    /// `CONTENT_TYPE`, if the request had one.
    public var contentType: String?
    /// Request headers from the `HTTP_*` params, keyed by lower-case name with dashes
    /// (`HTTP_X_REQUEST_ID` → `x-request-id`).
    public var headers: HTTPHeaders
    /// The request body (already bounded by the body limit).
    public var body: [UInt8]
    /// The id used in logs and returned as `X-Request-Id`.
    public var requestID: String
    /// The client's address as the web server saw it (`REMOTE_ADDR`), if it sent one.
    public var remoteAddress: String?
    /// The name of the credential the request was admitted with (an API token's name,
    /// see `Responder.admit`), for the access log; never the credential itself.
    public var principal: String?

    public init(
        method: String,
        path: String,
        query: String = "",
        contentType: String? = nil,
        headers: HTTPHeaders = [:],
        body: [UInt8] = [],
        requestID: String = "",
        remoteAddress: String? = nil
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.headers = headers
        self.body = body
        self.requestID = requestID
        self.remoteAddress = remoteAddress
    }

    /// Decoded query parameters; the last value wins when a name repeats.
    public var queryParameters: [String: String] {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = PercentDecoding.decode(parts[0], plusAsSpace: true) else { continue }
            let value = parts.count > 1 ? PercentDecoding.decode(parts[1], plusAsSpace: true) : ""
            if let value { result[name] = value }
        }
        return result
    }
}

/// Request headers by lower-case name with dashes (`x-request-id`).
///
/// A request carries a handful, so they are a list searched from the end rather
/// than a dictionary: no hashing of every name, one allocation. When a name repeats,
/// the last one wins.
public struct HTTPHeaders: Sendable, ExpressibleByDictionaryLiteral {
    private var fields: [(name: String, value: String)] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (name, value) in elements { self[name] = value }
    }

    public var count: Int { fields.count }

    public mutating func reserveCapacity(_ count: Int) {
        fields.reserveCapacity(count)
    }

    /// Adds a header as it arrived (a later one of the same name wins on lookup).
    public mutating func append(name: String, value: String) {
        fields.append((name, value))
    }

    /// The value of the last header named `name` (lower-case with dashes); setting
    /// replaces every header of that name, `nil` removes them.
    public subscript(name: String) -> String? {
        get { fields.last { $0.name == name }?.value }
        set {
            fields.removeAll { $0.name == name }
            if let newValue { fields.append((name, newValue)) }
        }
    }
}

/// Percent-decoding for paths and query strings.
public enum PercentDecoding {
    /// Decodes `%XX` escapes (and `+` as space in query strings); `nil` when an escape
    /// is malformed or the result is not valid UTF-8.
    public static func decode(_ text: Substring, plusAsSpace: Bool) -> String? {
        let utf8 = Array(text.utf8)
        if !utf8.contains(UInt8(ascii: "%")) && !(plusAsSpace && utf8.contains(UInt8(ascii: "+"))) {
            return String(text)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < utf8.count, let high = HexDigit.value(utf8[index + 1]),
                    let low = HexDigit.value(utf8[index + 2])
                else { return nil }
                bytes.append(high << 4 | low)
                index += 3
            } else if plusAsSpace && byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
                index += 1
            } else {
                bytes.append(byte)
                index += 1
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
