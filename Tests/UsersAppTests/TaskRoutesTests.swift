import Foundation
import HTTP
import JSON
import Scheduler
import Store
import StoreSQLite
import TestSupport
import Testing

@testable import UsersApp

/// The task routes through the router, without a socket, on a temporary database. The
/// scheduler is not started: tasks stay where the routes put them.
@Suite struct TaskRoutesTests {
    let temporary: TemporaryDatabase
    let store: SQLiteStore
    let responder: RouterResponder

    init() async throws {
        temporary = try TemporaryDatabase(name: "usersd-tasks")
        store = try await temporary.migratedStore()
        var configuration = TaskScheduler.Configuration()
        configuration.queueLimit = 3
        let scheduler = TaskScheduler(
            store: store, registry: TaskRegistry([BuiltInTasks.sleep, BuiltInTasks.welcome(store: store)]),
            configuration: configuration)
        responder = Application(store: store, scheduler: scheduler).makeRouter()
            .buildResponder(onError: Application.errorResponse)
    }

    func send(
        _ method: String, _ path: String, json: String? = nil, query: String = "", headers: HTTPHeaders = [:]
    ) async -> (status: Int, body: JSONValue?, response: Response) {
        let request = Request(
            method: method, path: path, query: query, contentType: json == nil ? nil : "application/json",
            headers: headers, body: json.map { Array($0.utf8) } ?? [])
        let response = await responder.respond(to: request)
        guard case .bytes(let bytes) = response.body, !bytes.isEmpty else {
            return (response.status.code, nil, response)
        }
        return (response.status.code, try? JSONParser.parse(bytes), response)
    }

    func field(_ body: JSONValue?) -> JSONValue? { body?["field"] }

    @Test func startTaskQueuesASleepTaskAndAnswersAtOnce() async throws {
        let (status, body, response) = await send("GET", "/start-task")
        #expect(status == 202)
        #expect(body?["message"] == .string("Task started"))
        let task = try #require(body?["task"])
        #expect(task["kind"] == .string("sleep") && task["state"] == .string("queued"))
        #expect(task["payload"] == .object(["seconds": .number(5, integer: 5)]))
        guard case .number(_, let id?)? = task["id"] else {
            Issue.record("no id")
            return
        }
        #expect(response.header("Location") == "/tasks/\(id)")
        #expect(await send("HEAD", "/start-task").status == 405)
    }

    @Test(arguments: [
        (#"{}"#, 422, "kind"),
        (#"{"kind": null}"#, 422, "kind"),
        (#"{"kind": 7}"#, 400, "kind"),
        (#"{"kind": "nope"}"#, 422, "kind"),
        (#"{"kind": "welcome", "user_id": 1}"#, 422, "kind"),
        (#"{"kind": "sleep", "seconds": 0}"#, 422, "seconds"),
        (#"{"kind": "sleep", "seconds": "5"}"#, 422, "seconds"),
        (#"{"kind": "sleep", "max_attempts": 0}"#, 422, "max_attempts"),
        (#"{"kind": "sleep", "max_attempts": 101}"#, 422, "max_attempts"),
        (#"{"kind": "sleep", "max_attempts": "3"}"#, 400, "max_attempts"),
        (#"{"kind": "sleep", "delay_seconds": -1}"#, 422, "delay_seconds"),
        (#"{"kind": "sleep", "delay_seconds": 86401}"#, 422, "delay_seconds"),
        (#"{"kind": "sleep", "payload": [1]}"#, 400, "payload"),
    ])
    func badTaskRequestsNameTheirField(_ json: String, _ expected: Int, _ name: String) async {
        let (status, body, _) = await send("POST", "/tasks", json: json)
        #expect(status == expected, "\(json)")
        #expect(field(body) == .string(name), "\(json)")
    }

    @Test func aTaskIsCreatedReadListedAndCancelled() async throws {
        let (status, body, _) = await send("POST", "/tasks", json: #"{"kind": "sleep", "payload": {"seconds": 2}}"#)
        #expect(status == 202 && body?["message"] == .string("Task accepted"))
        guard case .number(_, let id?)? = body?["task"]?["id"] else {
            Issue.record("no id")
            return
        }
        let shown = await send("GET", "/tasks/\(id)")
        #expect(shown.status == 200 && shown.body?["payload"] == .object(["seconds": .number(2, integer: 2)]))
        let listed = await send("GET", "/tasks", query: "state=queued")
        guard case .array(let tasks)? = listed.body else {
            Issue.record("not a list")
            return
        }
        #expect(tasks.contains { $0["id"] == .number(Double(id), integer: id) })
        let cancelled = await send("DELETE", "/tasks/\(id)")
        #expect(cancelled.status == 200 && cancelled.body?["state"] == .string("cancelled"))
        let again = await send("DELETE", "/tasks/\(id)")
        #expect(again.status == 409 && again.body?["error"] == .string("Task already cancelled"))
        for path in ["/tasks/999", "/tasks/0", "/tasks/abc"] {
            #expect(await send("GET", path).status == 404)
            #expect(await send("DELETE", path).status == 404)
        }
    }

    @Test func anIdempotencyKeyReplaysTheSameTask() async throws {
        let key: HTTPHeaders = ["idempotency-key": "order-42"]
        let first = await send("POST", "/tasks", json: #"{"kind": "sleep"}"#, headers: key)
        let second = await send("POST", "/tasks", json: #"{"kind": "sleep"}"#, headers: key)
        #expect(first.status == 202 && second.status == 202)
        #expect(first.body?["task"]?["id"] == second.body?["task"]?["id"])
        #expect(second.response.header("Idempotent-Replayed") == "true")
        #expect(first.response.header("Idempotent-Replayed") == nil)
        for bad in ["", String(repeating: "k", count: 201), "with space", "ümlaut"] {
            let refused = await send("POST", "/tasks", json: #"{"kind": "sleep"}"#, headers: ["idempotency-key": bad])
            #expect(refused.status == 400 && field(refused.body) == .string("Idempotency-Key"), "\(bad)")
        }
    }

    @Test func listParametersAreChecked() async {
        #expect(field(await send("GET", "/tasks", query: "state=done").body) == .string("state"))
        #expect(field(await send("GET", "/tasks", query: "limit=0").body) == .string("limit"))
        #expect(field(await send("GET", "/tasks", query: "limit=1001").body) == .string("limit"))
        #expect(field(await send("GET", "/tasks", query: "after_id=-1").body) == .string("after_id"))
        #expect(await send("GET", "/tasks", query: "limit=1000&after_id=0").status == 200)
    }

    @Test func aFullQueueIs503WithRetryAfter() async {
        for _ in 0..<3 { #expect(await send("POST", "/tasks", json: #"{"kind": "sleep"}"#).status == 202) }
        let full = await send("POST", "/tasks", json: #"{"kind": "sleep"}"#)
        #expect(full.status == 503 && full.response.header("Retry-After") == "5")
    }
}
