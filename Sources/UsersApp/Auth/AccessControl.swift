import Basics
public import HTTP
import Synchronization

/// Access control with API tokens (`--auth-file`): every route but `/healthz` needs
/// `Authorization: Bearer <token>` with a token of the file whose scope covers the
/// route (see `RouteScope`).
///
/// It decides from the method, the path and the `Authorization` header alone, before
/// routing, before the body is read and before the database is touched (the FastCGI
/// layer calls `admit` right after the params): a request without a valid token is
/// `401` on every path, known or not, so a `401` says nothing about which routes or
/// users exist. A known token whose scope falls short is `403` naming the scope
/// needed; by then the caller is someone the operator issued a token to.
///
/// The presented token is hashed (SHA-256) and the digest compared with every
/// token's digest in constant time, all of them every time: neither the comparison
/// nor the number of tokens compared depends on how much of a digest matched. (The
/// client chooses the token, not its hash, so even a leaky comparison would give
/// nothing useful away; the constant-time one costs the same.)
///
/// `reload()` (SIGHUP) swaps the tokens in whole: a request sees the old set or the
/// new one, and a file that fails to load leaves the old set in place.
public final class AccessControl: Sendable {
    public let path: String
    let mountPrefix: String
    private let tokens: Mutex<[TokenEntry]>

    /// Loads the file; throws when it is missing, unreadable, open to every user or
    /// malformed.
    public init(path: String, mountPrefix: String) throws(TokenFileError) {
        self.path = path
        self.mountPrefix = Router.normalizedPrefix(mountPrefix)
        tokens = Mutex(try TokenFile.load(path: path).entries)
    }

    /// For tests: the given tokens, with no file behind them.
    init(entries: [TokenEntry], mountPrefix: String = "") {
        path = ""
        self.mountPrefix = Router.normalizedPrefix(mountPrefix)
        tokens = Mutex(entries)
    }

    /// The number of tokens in force.
    public var count: Int { tokens.withLock { $0.count } }

    /// Re-reads the file. On success the new tokens replace the old ones and their
    /// count is returned; on failure the old tokens stay and the error says why.
    @discardableResult
    public func reload() throws(TokenFileError) -> Int {
        let entries = try TokenFile.load(path: path).entries
        tokens.withLock { $0 = entries }
        return entries.count
    }

    /// `nil` when the request may go on; otherwise the `401` or `403` to answer.
    /// Notes the token's name in `request.principal` when the token is known.
    public func admit(_ request: inout Request) -> HTTPError? {
        guard let needed = RouteScope.required(method: request.method, path: request.path, mountPrefix: mountPrefix)
        else { return nil }
        guard let header = request.headers["authorization"], let token = Self.bearerToken(header) else {
            return Self.missingToken
        }
        // Far longer than any token `usersd token add` makes: refused without hashing.
        guard token.count <= 512, let (name, scope) = lookup(Self.digest(of: token)) else { return Self.invalidToken }
        request.principal = name
        guard scope >= needed else { return Self.insufficientScope[needed.rawValue] }
        return nil
    }

    /// The name and scope of the token whose digest this is. Compares with every
    /// token and keeps the last match (there is at most one: the file's hashes are
    /// unique), without stopping early.
    func lookup(_ digest: SHA256.Digest) -> (name: String, scope: TokenScope)? {
        tokens.withLock { entries in
            var match = -1
            for index in entries.indices where entries[index].digest == digest {
                match = index
            }
            return match < 0 ? nil : (entries[match].name, entries[match].scope)
        }
    }

    /// The token of an `Authorization: Bearer <token>` value (RFC 6750 section 2.1;
    /// the scheme name is case-insensitive, RFC 9110 section 11.1): `nil` for another
    /// scheme or no token.
    static func bearerToken(_ value: String) -> Substring.UTF8View? {
        let utf8 = value.utf8
        guard utf8.count > 7 else { return nil }
        var index = utf8.startIndex
        for expected in "bearer".utf8 {
            guard utf8[index] | 0x20 == expected else { return nil }
            index = utf8.index(after: index)
        }
        guard utf8[index] == UInt8(ascii: " ") else { return nil }
        while index < utf8.endIndex, utf8[index] == UInt8(ascii: " ") { index = utf8.index(after: index) }
        var end = utf8.endIndex
        while end > index, utf8[utf8.index(before: end)] == UInt8(ascii: " ") { end = utf8.index(before: end) }
        guard index < end else { return nil }
        return Substring(value)[index..<end].utf8
    }

    static func digest(of token: Substring.UTF8View) -> SHA256.Digest {
        var token = Substring(token)
        return token.withUTF8 { SHA256.hash(UnsafeRawBufferPointer($0)) }
    }

    /// The challenge every `401` and `403` carries (RFC 6750 section 3).
    static let realm = "Bearer realm=\"usersd\""

    static let missingToken = HTTPError(
        .unauthorized, "A token is required: send Authorization: Bearer <token>",
        headers: [.init("WWW-Authenticate", realm)])

    static let invalidToken = HTTPError(
        .unauthorized, "Invalid token", headers: [.init("WWW-Authenticate", realm + ", error=\"invalid_token\"")])

    /// By `TokenScope.rawValue`: the `403` for a token that lacks that scope.
    static let insufficientScope: [HTTPError] = TokenScope.allCases.map { scope in
        HTTPError(
            .forbidden, "This request needs a token with the \(scope) scope",
            headers: [.init("WWW-Authenticate", realm + ", error=\"insufficient_scope\", scope=\"\(scope)\"")],
            details: [.init("scope", scope.name)])
    }
}

/// The scope each request needs, from its method and path alone (no routing):
///
/// - `/healthz`: none (open: load balancers and the watchdog probe it);
/// - `/metrics`: `admin` (and the route's own `--metrics-allow` check: both hold);
/// - `/start-task`: `write` (a `GET` that starts a task);
/// - any other path: `read` for `GET` and `HEAD`, `write` for every other method.
///
/// Paths are compared the way the router compares them: below the mount prefix, by
/// their non-empty segments (`/healthz/` and `//healthz` are `/healthz`). A path
/// outside the mount prefix (which the router answers `404`) needs a token like any
/// other, so that `401` is the answer for every path without one.
enum RouteScope {
    static func required(method: String, path: String, mountPrefix: String) -> TokenScope? {
        let byMethod: TokenScope = method == "GET" || method == "HEAD" ? .read : .write
        var rest = Substring(path)
        if !mountPrefix.isEmpty {
            guard rest.hasPrefix(mountPrefix) else { return byMethod }
            rest = rest.dropFirst(mountPrefix.count)
            guard rest.isEmpty || rest.hasPrefix("/") else { return byMethod }
        }
        guard let segment = onlySegment(rest) else { return byMethod }
        if segment.elementsEqual("healthz".utf8) { return nil }
        if segment.elementsEqual("metrics".utf8) { return .admin }
        if segment.elementsEqual("start-task".utf8) { return .write }
        return byMethod
    }

    /// The path's one non-empty segment, or `nil` when it has none or several.
    static func onlySegment(_ path: Substring) -> Substring.UTF8View.SubSequence? {
        let utf8 = path.utf8
        let slash = UInt8(ascii: "/")
        var found: Range<Substring.UTF8View.Index>?
        var index = utf8.startIndex
        while index < utf8.endIndex {
            guard utf8[index] != slash else {
                index = utf8.index(after: index)
                continue
            }
            guard found == nil else { return nil }
            let start = index
            while index < utf8.endIndex, utf8[index] != slash { index = utf8.index(after: index) }
            found = start..<index
        }
        return found.map { utf8[$0] }
    }
}
