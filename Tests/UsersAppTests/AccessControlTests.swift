import Basics
import Foundation
import Glibc
import HTTP
import JSON
import TestSupport
import Testing

@testable import UsersApp

/// Which scope each request needs, and what `AccessControl.admit` answers for each
/// kind of credential.
@Suite struct AccessControlTests {
    static let readToken = "r3ad-T0ken_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    static let writeToken = "wr1te-T0ken_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    static let adminToken = "adm1n-T0ken_cccccccccccccccccccccccccccccccc"

    static func entries() -> [TokenEntry] {
        [
            TokenEntry(name: "reader", scope: .read, digest: SHA256.hash(utf8: readToken), line: 1),
            TokenEntry(name: "writer", scope: .write, digest: SHA256.hash(utf8: writeToken), line: 2),
            TokenEntry(name: "admin", scope: .admin, digest: SHA256.hash(utf8: adminToken), line: 3),
        ]
    }

    // MARK: - Route → scope

    @Test(
        arguments: [
            // open
            ("GET", "/healthz", nil), ("HEAD", "/healthz", nil), ("POST", "/healthz", nil), ("GET", "/healthz/", nil),
            ("GET", "//healthz", nil),
            // read: GET/HEAD of users and tasks, and of any unknown path
            ("GET", "/users", .read), ("HEAD", "/users", .read), ("GET", "/user/1", .read), ("GET", "/users/1", .read),
            ("GET", "/tasks", .read), ("GET", "/tasks/7", .read), ("HEAD", "/tasks/7", .read),
            ("GET", "/no/such/route", .read), ("GET", "/", .read), ("GET", "/healthz/x", .read),
            ("GET", "/x/healthz", .read),
            // write: every other method, and the seed's GET /start-task
            ("POST", "/add-user", .write), ("POST", "/users", .write), ("PATCH", "/users/1", .write),
            ("DELETE", "/users/1", .write), ("POST", "/tasks", .write), ("DELETE", "/tasks/1", .write),
            ("GET", "/start-task", .write), ("HEAD", "/start-task", .write), ("GET", "/start-task/", .write),
            ("PUT", "/users", .write), ("OPTIONS", "/users", .write), ("TRACE", "/", .write),
            // admin
            ("GET", "/metrics", .admin), ("GET", "/metrics/", .admin), ("GET", "//metrics", .admin),
            ("HEAD", "/metrics", .admin),
        ] as [(String, String, TokenScope?)])
    func eachRouteNeedsItsScope(method: String, path: String, scope: TokenScope?) {
        #expect(RouteScope.required(method: method, path: path, mountPrefix: "") == scope)
    }

    /// Under a mount prefix, paths are compared below it, as the router does; a path
    /// outside the prefix (a 404 for the router) needs a token like any other.
    @Test(
        arguments: [
            ("GET", "/api/healthz", nil), ("GET", "/api//healthz/", nil), ("GET", "/api/metrics", .admin),
            ("GET", "/api/start-task", .write), ("GET", "/api/users", .read), ("POST", "/api/users", .write),
            ("GET", "/healthz", .read), ("GET", "/apihealthz", .read), ("GET", "/apix/healthz", .read),
            ("GET", "/metrics", .read),
        ] as [(String, String, TokenScope?)])
    func aMountPrefixIsStrippedFirst(method: String, path: String, scope: TokenScope?) {
        #expect(RouteScope.required(method: method, path: path, mountPrefix: "/api") == scope)
    }

    // MARK: - Admission

    func admit(
        _ method: String, _ path: String, authorization: String?, control: AccessControl? = nil
    ) -> (HTTPError?, Request) {
        var headers = HTTPHeaders()
        if let authorization { headers["authorization"] = authorization }
        var request = Request(method: method, path: path, headers: headers)
        let error = (control ?? AccessControl(entries: Self.entries())).admit(&request)
        return (error, request)
    }

    @Test func healthzNeedsNoToken() {
        let (error, request) = admit("GET", "/healthz", authorization: nil)
        #expect(error == nil && request.principal == nil)
    }

    /// No token, another scheme or an empty one: 401 with the bare challenge, on every
    /// path, known or not (a 401 tells nothing about which routes exist).
    @Test(arguments: [nil, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer    ", "Token \(readToken)"])
    func withoutABearerTokenEveryPathIs401(authorization: String?) {
        for (method, path) in [("GET", "/users"), ("GET", "/user/1"), ("POST", "/users"), ("GET", "/nope/x")] {
            let (error, request) = admit(method, path, authorization: authorization)
            #expect(error?.status == .unauthorized)
            #expect(error?.headers == [.init("WWW-Authenticate", "Bearer realm=\"usersd\"")])
            #expect(request.principal == nil)
        }
    }

    /// A token with a character more or less, another case, or unknown: 401 with
    /// `error="invalid_token"`.
    @Test(arguments: [
        readToken + "x", String(readToken.dropLast()), String(readToken.dropFirst()), readToken.uppercased(),
        readToken.lowercased(), "x" + readToken, "not-a-token", String(repeating: "a", count: 600),
        "\(readToken) \(readToken)",
    ])
    func aTokenThatIsNotExactlyOneOfTheFileIs401(token: String) {
        let (error, request) = admit("GET", "/users", authorization: "Bearer \(token)")
        #expect(error?.status == .unauthorized)
        #expect(error?.headers == [.init("WWW-Authenticate", "Bearer realm=\"usersd\", error=\"invalid_token\"")])
        #expect(request.principal == nil)
    }

    /// The scheme is case-insensitive and spaces around the token do not count.
    @Test(arguments: ["Bearer \(readToken)", "bearer \(readToken)", "BEARER  \(readToken)  "])
    func theSchemeIsCaseInsensitive(authorization: String) {
        let (error, request) = admit("GET", "/users", authorization: authorization)
        #expect(error == nil)
        #expect(request.principal == "reader")
    }

    /// Each scope covers the ones below it; a token short of the scope is 403 naming
    /// the scope, and the request still carries the token's name for the log.
    @Test func scopesNest() {
        let cases: [(String, String, String, TokenScope?)] = [
            (Self.readToken, "GET", "/users", nil), (Self.readToken, "POST", "/users", .write),
            (Self.readToken, "GET", "/start-task", .write), (Self.readToken, "GET", "/metrics", .admin),
            (Self.writeToken, "GET", "/users", nil), (Self.writeToken, "DELETE", "/users/1", nil),
            (Self.writeToken, "GET", "/start-task", nil), (Self.writeToken, "GET", "/metrics", .admin),
            (Self.adminToken, "GET", "/users", nil), (Self.adminToken, "PATCH", "/users/1", nil),
            (Self.adminToken, "GET", "/metrics", nil),
        ]
        let names = [Self.readToken: "reader", Self.writeToken: "writer", Self.adminToken: "admin"]
        for (token, method, path, missing) in cases {
            let (error, request) = admit(method, path, authorization: "Bearer \(token)")
            #expect(request.principal == names[token])
            if let missing {
                #expect(error?.status == .forbidden, "\(method) \(path)")
                #expect(error?.details == [.init("scope", missing.name)])
                #expect(error?.message == "This request needs a token with the \(missing) scope")
                #expect(
                    error?.headers == [
                        .init(
                            "WWW-Authenticate",
                            "Bearer realm=\"usersd\", error=\"insufficient_scope\", scope=\"\(missing)\"")
                    ])
            } else {
                #expect(error == nil, "\(method) \(path)")
            }
        }
    }

    @Test func theForbiddenBodyNamesTheScope() throws {
        let (error, _) = admit("POST", "/users", authorization: "Bearer \(Self.readToken)")
        let response = try #require(error).response
        guard case .bytes(let body) = response.body else {
            Issue.record("not a byte body")
            return
        }
        #expect(
            try JSONParser.parse(body)
                == .object([
                    "error": .string("This request needs a token with the write scope"), "scope": .string("write"),
                ]))
    }

    // MARK: - Reload

    @Test func reloadSwapsTheTokensAndABadFileKeepsTheOldOnes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("tokens").path
        func write(_ text: String, mode: mode_t = 0o600) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            #expect(chmod(path, mode) == 0)
        }
        try write("reader read \(SHA256.hash(utf8: Self.readToken).hex)\n")
        let control = try AccessControl(path: path, mountPrefix: "")
        #expect(admit("GET", "/users", authorization: "Bearer \(Self.readToken)", control: control).0 == nil)
        #expect(admit("GET", "/users", authorization: "Bearer \(Self.writeToken)", control: control).0 != nil)

        // Added: the new token works; revoked: the old one no longer does.
        try write("writer write \(SHA256.hash(utf8: Self.writeToken).hex)\n")
        #expect(try control.reload() == 1)
        #expect(admit("POST", "/users", authorization: "Bearer \(Self.writeToken)", control: control).0 == nil)
        #expect(
            admit("GET", "/users", authorization: "Bearer \(Self.readToken)", control: control).0?.status
                == .unauthorized)

        // A malformed, world-readable or missing file leaves the tokens in force.
        for (text, mode) in [("writer write nothex\n", mode_t(0o600)), ("x read \(TokenFileTests.hashA)\n", 0o644)] {
            try write(text, mode: mode)
            #expect(throws: TokenFileError.self) { try control.reload() }
            #expect(control.count == 1)
            #expect(admit("POST", "/users", authorization: "Bearer \(Self.writeToken)", control: control).0 == nil)
        }
        try FileManager.default.removeItem(atPath: path)
        #expect(throws: TokenFileError.self) { try control.reload() }
        #expect(admit("POST", "/users", authorization: "Bearer \(Self.writeToken)", control: control).0 == nil)
    }

    // MARK: - Through the application's responder

    /// The application's responder asks access control before anything else; without
    /// it, every request is admitted untouched.
    @Test func theResponderAdmitsOnlyWithAccessControl() async throws {
        let temporary = try TemporaryDatabase(name: "usersd-auth")
        let application = Application(store: try await temporary.migratedStore())
        let open = application.makeResponder()
        var request = Request(method: "DELETE", path: "/users/1")
        #expect(open.admit(&request) == nil)
        #expect(request.principal == nil)

        let guarded = application.makeResponder(accessControl: AccessControl(entries: Self.entries()))
        #expect(guarded.admit(&request)?.status == .unauthorized)
        request.headers["authorization"] = "Bearer \(Self.adminToken)"
        #expect(guarded.admit(&request) == nil)
        #expect(request.principal == "admin")
        #expect(await guarded.respond(to: request).status == .notFound)
    }

    /// `/metrics` needs the admin scope and an address `--metrics-allow` admits: an
    /// admin token from elsewhere is still 403 (from the route's own check).
    @Test func metricsNeedBothTheAdminScopeAndAnAllowedAddress() async throws {
        let temporary = try TemporaryDatabase(name: "usersd-auth-metrics")
        let application = Application(store: try await temporary.migratedStore())
        let responder = application.makeResponder(accessControl: AccessControl(entries: Self.entries()))
        for (token, address, status) in [
            (Self.adminToken, "127.0.0.1", 200), (Self.adminToken, "192.0.2.9", 403),
            (Self.writeToken, "127.0.0.1", 403),
            ("", "127.0.0.1", 401),
        ] {
            var request = Request(
                method: "GET", path: "/metrics", headers: token.isEmpty ? [:] : ["authorization": "Bearer \(token)"],
                remoteAddress: address)
            let answer: Response
            if let refusal = responder.admit(&request) {
                answer = await responder.respond(rejected: request, with: refusal)
            } else {
                answer = await responder.respond(to: request)
            }
            #expect(answer.status.code == status, "\(token.prefix(5)) from \(address)")
        }
    }
}
