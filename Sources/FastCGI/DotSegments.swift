/// Removes `.` and `..` segments from a decoded request path (RFC 3986 §5.2.4), the
/// way nginx does before it sets `DOCUMENT_URI`.
///
/// nginx resolves them after percent-decoding (`/users/%2e%2e/user/1` is `/user/1`)
/// and answers 400 to a path that climbs above the root; Apache httpd, lighttpd,
/// Caddy and h2o send `REQUEST_URI` as the client wrote it. usersd resolves the
/// path it routes on the same way, whatever the web server sent, so a route is
/// reached by its one canonical path and every check on a route (the address check
/// of `/metrics`) applies to every spelling that reaches it.
enum DotSegments {
    /// The path with its dot segments resolved; `nil` when a `..` would climb above
    /// the root. A path that does not start with `/` is returned as it is (no route
    /// matches it).
    static func resolve(_ path: String) -> String? {
        guard path.utf8.first == UInt8(ascii: "/"), hasDotSegment(path) else { return path }
        let segments = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
        var output: [String.UTF8View.SubSequence] = []
        output.reserveCapacity(segments.count)
        var endsWithSlash = false
        for segment in segments {
            switch dotKind(segment) {
            case .single:
                endsWithSlash = true
            case .double:
                guard !output.isEmpty else { return nil }
                output.removeLast()
                endsWithSlash = true
            case nil:
                output.append(segment)
                endsWithSlash = false
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(path.utf8.count)
        for segment in output {
            bytes.append(UInt8(ascii: "/"))
            bytes.append(contentsOf: segment)
        }
        // `/a/.` and `/a/b/..` name the directory `/a/`: the last slash stays.
        if endsWithSlash || bytes.isEmpty { bytes.append(UInt8(ascii: "/")) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private enum Kind { case single, double }

    private static func dotKind(_ segment: String.UTF8View.SubSequence) -> Kind? {
        var iterator = segment.makeIterator()
        guard iterator.next() == UInt8(ascii: ".") else { return nil }
        guard let second = iterator.next() else { return .single }
        guard second == UInt8(ascii: "."), iterator.next() == nil else { return nil }
        return .double
    }

    /// Whether some segment is `.` or `..`: one pass over the bytes, so the usual
    /// path (none) costs no allocation.
    static func hasDotSegment(_ path: String) -> Bool {
        var dots = -1  // dots since the last slash; -1 once another byte was seen
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "/"):
                if dots == 1 || dots == 2 { return true }
                dots = 0
            case UInt8(ascii: "."):
                if dots >= 0 { dots += 1 }
            default:
                dots = -1
            }
        }
        return dots == 1 || dots == 2
    }
}
