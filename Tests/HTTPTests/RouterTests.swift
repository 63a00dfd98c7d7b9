import Synchronization
import Testing

@testable import HTTP

@Suite struct RouterTests {
    func makeResponder(prefix: String = "") -> RouterResponder {
        var router = Router(mountPrefix: prefix)
        router.get("/users") { _, _ in Response.json(.ok, Array("list".utf8)) }
        router.post("/users") { _, _ in Response.json(.created, Array("made".utf8)) }
        router.get("/users/{id}") { _, parameters in Response.json(.ok, Array((parameters["id"] ?? "").utf8)) }
        router.delete("/users/{id}") { _, _ in throw HTTPError(.conflict, "busy", field: "id") }
        router.get("/boom") { _, _ in throw CancellationError() }
        return router.buildResponder()
    }

    func body(_ response: Response) -> String {
        guard case .bytes(let bytes) = response.body else { return "<stream>" }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func routesByMethodAndCapturesParameters() async {
        let responder = makeResponder()
        let list = await responder.respond(to: Request(method: "GET", path: "/users"))
        #expect(list.status == .ok && body(list) == "list")
        let made = await responder.respond(to: Request(method: "POST", path: "/users"))
        #expect(made.status == .created)
        let one = await responder.respond(to: Request(method: "GET", path: "/users/42"))
        #expect(body(one) == "42")
    }

    @Test func unknownPathIs404JSON() async {
        let response = await makeResponder().respond(to: Request(method: "GET", path: "/nope"))
        #expect(response.status == .notFound)
        #expect(response.header("Content-Type") == Response.jsonContentType)
        #expect(body(response) == #"{"error":"Not found"}"#)
    }

    @Test func wrongMethodIs405WithAllow() async {
        let response = await makeResponder().respond(to: Request(method: "PUT", path: "/users"))
        #expect(response.status == .methodNotAllowed)
        #expect(response.header("Allow") == "GET, HEAD, POST")
        let other = await makeResponder().respond(to: Request(method: "POST", path: "/users/1"))
        #expect(other.header("Allow") == "GET, HEAD, DELETE")
    }

    @Test func headIsServedByGet() async {
        let response = await makeResponder().respond(to: Request(method: "HEAD", path: "/users"))
        #expect(response.status == .ok)
    }

    @Test func thrownHTTPErrorRendersItselfAndOthersAre500() async {
        let conflict = await makeResponder().respond(to: Request(method: "DELETE", path: "/users/1"))
        #expect(conflict.status == .conflict)
        #expect(body(conflict) == #"{"error":"busy","field":"id"}"#)
        let boom = await makeResponder().respond(to: Request(method: "GET", path: "/boom"))
        #expect(boom.status == .internalServerError)
        #expect(body(boom) == #"{"error":"Internal server error"}"#)
    }

    @Test func trailingSlashNamesTheSameResource() async {
        let response = await makeResponder().respond(to: Request(method: "GET", path: "/users/"))
        #expect(body(response) == "list")
    }

    @Test func mountPrefixIsStripped() async {
        let responder = makeResponder(prefix: "/api/")
        #expect(await responder.respond(to: Request(method: "GET", path: "/api/users")).status == .ok)
        #expect(await responder.respond(to: Request(method: "GET", path: "/users")).status == .notFound)
        #expect(await responder.respond(to: Request(method: "GET", path: "/apix/users")).status == .notFound)
    }

    @Test func queryParametersAreDecoded() {
        let request = Request(method: "GET", path: "/", query: "limit=10&after_id=5&name=a%20b+c&bad=%zz")
        let query = request.queryParameters
        #expect(query["limit"] == "10")
        #expect(query["after_id"] == "5")
        #expect(query["name"] == "a b c")
        #expect(query["bad"] == nil)
    }
}

/// A `GET` that changes state opts out of `HEAD`, which must never run it.
@Suite struct HeadOnStateChangingGetTests {
    final class Calls: Sendable {
        let count = Atomic<Int>(0)
    }

    func responder(_ calls: Calls) -> RouterResponder {
        var router = Router()
        router.get("/start-task", answersHead: false) { _, _ in
            calls.count.add(1, ordering: .relaxed)
            return Response.json(.accepted, Array("{}".utf8))
        }
        router.get("/users") { _, _ in Response.json(.ok, Array("[]".utf8)) }
        return router.buildResponder()
    }

    @Test func headIs405AndTheHandlerDoesNotRun() async {
        let calls = Calls()
        let head = await responder(calls).respond(to: Request(method: "HEAD", path: "/start-task"))
        #expect(head.status == .methodNotAllowed)
        #expect(head.header("Allow") == "GET")
        #expect(calls.count.load(ordering: .relaxed) == 0)
        let get = await responder(calls).respond(to: Request(method: "GET", path: "/start-task"))
        #expect(get.status == .accepted)
        #expect(calls.count.load(ordering: .relaxed) == 1)
        let post = await responder(calls).respond(to: Request(method: "POST", path: "/start-task"))
        #expect(post.header("Allow") == "GET")
        #expect(await responder(calls).respond(to: Request(method: "HEAD", path: "/users")).status == .ok)
    }
}
