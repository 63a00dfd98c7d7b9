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
        let digest: SHA256.Digest
        switch Self.credential(request.headers["authorization"]) {
        case .missing: return Self.missingToken
        case .invalid: return Self.invalidToken
        case .digest(let presented): digest = presented
        }
        guard let (name, scope) = lookup(digest) else { return Self.invalidToken }
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

    enum Credential: Equatable {
        /// No `Authorization` header, another scheme, or no token after `Bearer`.
        case missing
        /// A bearer token far longer than any `usersd token add` makes (refused
        /// without hashing it).
        case invalid
        /// The SHA-256 of the bearer token.
        case digest(SHA256.Digest)
    }

    /// What an `Authorization` header value holds, read from its UTF-8 bytes.
    static func credential(_ header: String?) -> Credential {
        guard var header else { return .missing }
        return header.withUTF8 { bytes in
            guard let token = bearerToken(bytes) else { return .missing }
            guard token.count <= 512 else { return .invalid }
            return .digest(SHA256.hash(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[token]))))
        }
    }

    /// Where the token of an `Authorization: Bearer <token>` value is (RFC 6750
    /// section 2.1; the scheme name is case-insensitive, RFC 9110 section 11.1; spaces
    /// around the token do not count): `nil` for another scheme or no token.
    static func bearerToken(_ bytes: UnsafeBufferPointer<UInt8>) -> Range<Int>? {
        let space = UInt8(ascii: " ")
        guard bytes.count > 7 else { return nil }
        let scheme: StaticString = "bearer"
        for offset in 0..<6 where bytes[offset] | 0x20 != scheme.utf8Start[offset] {
            return nil
        }
        guard bytes[6] == space else { return nil }
        var start = 7
        while start < bytes.count, bytes[start] == space { start += 1 }
        var end = bytes.count
        while end > start, bytes[end - 1] == space { end -= 1 }
        return start < end ? start..<end : nil
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
        var path = path
        var prefix = mountPrefix
        let special = path.withUTF8 { path in prefix.withUTF8 { prefix in Special(path: path, mountPrefix: prefix) } }
        switch special {
        case .healthz: return nil
        case .metrics: return .admin
        case .startTask: return .write
        case .none: return method == "GET" || method == "HEAD" ? .read : .write
        }
    }

    /// The paths whose scope does not follow from the method.
    enum Special: Equatable {
        case healthz
        case metrics
        case startTask
        case none

        /// Compares bytes: a path the router takes for one of these under the same
        /// prefix has the same bytes (nginx hands over the decoded path, and the
        /// prefix and route names are ASCII), and a byte mismatch only ever makes a
        /// request need a token.
        init(path: UnsafeBufferPointer<UInt8>, mountPrefix prefix: UnsafeBufferPointer<UInt8>) {
            let slash = UInt8(ascii: "/")
            var index = 0
            if !prefix.isEmpty {
                guard path.count >= prefix.count, path[0..<prefix.count].elementsEqual(prefix),
                    path.count == prefix.count || path[prefix.count] == slash
                else {
                    self = .none
                    return
                }
                index = prefix.count
            }
            // The path's one non-empty segment.
            var found: Range<Int>?
            while index < path.count {
                guard path[index] != slash else {
                    index += 1
                    continue
                }
                guard found == nil else {
                    self = .none
                    return
                }
                let start = index
                while index < path.count, path[index] != slash { index += 1 }
                found = start..<index
            }
            guard let found else {
                self = .none
                return
            }
            let segment = path[found]
            if segment.elementsEqual("healthz".utf8) {
                self = .healthz
            } else if segment.elementsEqual("metrics".utf8) {
                self = .metrics
            } else if segment.elementsEqual("start-task".utf8) {
                self = .startTask
            } else {
                self = .none
            }
        }
    }
}
