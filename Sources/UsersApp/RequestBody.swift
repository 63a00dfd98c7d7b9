import Foundation
import HTTP
import JSON

/// Reads a request body as a JSON object, with the status codes of the contract:
/// 415 for a body that is not JSON by content type, 400 for bytes that are not a JSON
/// object (malformed, invalid UTF-8, another JSON type).
enum RequestBody {
    static func object(of request: Request) throws(HTTPError) -> [String: JSONValue] {
        if !request.body.isEmpty, !isJSON(request.contentType) {
            throw HTTPError(.unsupportedMediaType, "Content-Type must be application/json")
        }
        guard !request.body.isEmpty else {
            throw HTTPError.badRequest("Request body must be a JSON object")
        }
        let value: JSONValue
        do {
            value = try JSONParser.parse(request.body)
        } catch {
            throw HTTPError.badRequest("Malformed JSON: \(error.description)")
        }
        guard case .object(let members) = value else {
            throw HTTPError.badRequest("Request body must be a JSON object, not \(value.typeName)")
        }
        return members
    }

    /// `application/json`, optionally with `charset=utf-8`; also `application/*+json`.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        // What nearly every client sends, compared with String's `==` (which compares
        // the bytes of two native strings at once, unlike the UTF-8 view's generic
        // iterator); anything else is parsed below.
        if contentType == "application/json" { return true }
        let parts = contentType.split(separator: ";")
        let mediaType = parts.first.map { trimmed($0).lowercased() } ?? ""
        guard mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json"))
        else { return false }
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { trimmed($0).lowercased() }
            if pair.first == "charset", pair.count == 2 {
                var charset = Substring(pair[1])
                if charset.count >= 2, charset.hasPrefix("\""), charset.hasSuffix("\"") {
                    charset = charset.dropFirst().dropLast()
                }
                if charset != "utf-8" && charset != "utf8" { return false }
            }
        }
        return true
    }

    /// Without spaces and tabs at both ends.
    static func trimmed(_ text: Substring) -> Substring {
        var text = text
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}
