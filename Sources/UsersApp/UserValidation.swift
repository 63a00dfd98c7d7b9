import Foundation
import HTTP
import JSON

/// The validation rules for user fields (SPEC §2 "Validation and errors").
///
/// Values are validated but stored exactly as given: a name is measured after
/// trimming, yet saved with its spaces, byte for byte.
enum UserValidation {
    static let maximumNameLength = 50
    static let maximumEmailLength = 100

    /// The string member `key`: `nil` when absent or null; 400 when another JSON type.
    static func string(
        _ members: [String: JSONValue], _ key: String, reportAs field: String? = nil
    ) throws(HTTPError) -> String? {
        switch members[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case let other?:
            let field = field ?? key
            throw HTTPError(.badRequest, "\(field) must be a string, not \(other.typeName)", field: field)
        }
    }

    /// The name, accepting the tutorial's `"username"` as an alias (`"name"` wins).
    static func name(in members: [String: JSONValue], required: Bool) throws(HTTPError) -> String? {
        if !required, members["name"] == .null { throw HTTPError.invalid("name", "name must not be null") }
        var value = try string(members, "name")
        if value == nil { value = try string(members, "username", reportAs: "name") }
        guard let value else {
            if required { throw HTTPError.invalid("name", "name is required") }
            return nil
        }
        try validateName(value)
        return value
    }

    static func email(in members: [String: JSONValue], required: Bool) throws(HTTPError) -> String? {
        if !required, members["email"] == .null { throw HTTPError.invalid("email", "email must not be null") }
        guard let value = try string(members, "email") else {
            if required { throw HTTPError.invalid("email", "email is required") }
            return nil
        }
        try validateEmail(value)
        return value
    }

    /// Unicode scalars after trimming white space at both ends, with an ASCII fast path
    /// (this runs on every create and update; Foundation's `CharacterSet` is slower).
    static func trimmedLength(_ text: String) -> Int {
        if isASCII(text) {
            // ASCII white space is exactly 0x09–0x0D and the space.
            let bytes = text.utf8
            let isSpace = { (byte: UInt8) in byte == 0x20 || (0x09...0x0D).contains(byte) }
            guard let first = bytes.firstIndex(where: { !isSpace($0) }),
                let last = bytes.lastIndex(where: { !isSpace($0) })
            else { return 0 }
            return bytes.distance(from: first, to: last) + 1
        }
        return trimmedScalarCount(text)
    }

    /// `trimmedLength` for any text, by Unicode properties.
    static func trimmedScalarCount(_ text: String) -> Int {
        let scalars = Array(text.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return 0 }
        return last - first + 1
    }

    static func validateName(_ name: String) throws(HTTPError) {
        let length = trimmedLength(name)
        guard length >= 1 else { throw HTTPError.invalid("name", "name must not be empty") }
        guard length <= maximumNameLength else {
            throw HTTPError.invalid("name", "name must be at most \(maximumNameLength) characters")
        }
    }

    /// SPEC §2: at most 100 characters (scalars), no format character (Cf), and the
    /// shape of `isPlausibleEmail`; each failure is a 422 naming `email`.
    static func validateEmail(_ email: String) throws(HTTPError) {
        guard email.unicodeScalars.count <= maximumEmailLength else {
            throw HTTPError.invalid("email", "email must be at most \(maximumEmailLength) characters")
        }
        let isPlausible: Bool
        if isASCII(email) {
            isPlausible = isPlausibleASCIIEmail(email.utf8)  // no ASCII character is a format character
        } else {
            if let format = firstFormatCharacter(email) {
                throw HTTPError.invalid(
                    "email",
                    "email must not contain invisible format characters (zero-width spaces and joiners, bidi marks),"
                        + " found " + format
                )
            }
            isPlausible = isPlausibleUnicodeEmail(email)
        }
        guard isPlausible else { throw HTTPError.invalid("email", "email must look like name@example.com") }
    }

    /// The first scalar of general category Cf (format) in `text`, as `U+200B`, or `nil`.
    ///
    /// Such characters are invisible: `sam\u{200B}@x.io` looks like `sam@x.io` but would be
    /// another user, and bidi controls (U+202E) make an address display as another.
    static func firstFormatCharacter(_ text: String) -> String? {
        guard let scalar = text.unicodeScalars.first(where: { $0.properties.generalCategory == .format }) else {
            return nil
        }
        let hex = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    /// One `@`, a non-empty local part, a domain of non-empty dot-separated labels
    /// (at least two), and no whitespace or control characters anywhere.
    static func isPlausibleEmail(_ email: String) -> Bool {
        if isASCII(email) { return isPlausibleASCIIEmail(email.utf8) }
        return isPlausibleUnicodeEmail(email)
    }

    /// `isPlausibleEmail` for any text, by scalars and characters.
    static func isPlausibleUnicodeEmail(_ email: String) -> Bool {
        let scalars = email.unicodeScalars
        guard !scalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F })
        else { return false }
        // Split by scalars, not characters: a combining mark or an emoji modifier after
        // `@` or `.` joins it into one grapheme cluster, which would hide the separator.
        let parts = scalars.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { return false }
        let labels = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    /// The same rule over ASCII bytes, where bytes, scalars and characters coincide
    /// (CR LF, the one two-scalar ASCII character, is rejected as control characters).
    static func isPlausibleASCIIEmail(_ bytes: String.UTF8View) -> Bool {
        var at: String.Index?
        for index in bytes.indices {
            let byte = bytes[index]
            if byte <= 0x20 || byte == 0x7F { return false }  // controls and the space (tabs, CR, LF are controls)
            if byte == UInt8(ascii: "@") {
                if at != nil { return false }
                at = index
            }
        }
        guard let at, at > bytes.startIndex else { return false }
        // Labels counted in place: none empty, at least two.
        var labels = 1
        var labelLength = 0
        for byte in bytes[bytes.index(after: at)...] {
            if byte == UInt8(ascii: ".") {
                guard labelLength > 0 else { return false }
                labels += 1
                labelLength = 0
            } else {
                labelLength += 1
            }
        }
        return labels >= 2 && labelLength > 0
    }

    /// Whether every byte of `text` is ASCII (read in place, nothing copied).
    static func isASCII(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 < 0x80 }
    }

    /// A user id from a path: positive decimal digits that fit Int64, else `nil`.
    static func id(_ text: String?) -> Int64? {
        guard let text, !text.isEmpty, text.utf8.count <= 19,
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let id = Int64(text), id > 0
        else { return nil }
        return id
    }
}
