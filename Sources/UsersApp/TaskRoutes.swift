import Basics
import HTTP
import JSON
import Scheduler
import Store

/// The task routes: the tutorial's `GET /start-task` and the `/tasks` API.
struct TaskRoutes: Sendable {
    let scheduler: TaskScheduler
    static let notFound = HTTPError.notFound("Task not found")
    static let maximumListLimit = 1000

    func register(on router: inout Router) {
        // The seed's GET changes state (it starts a task), so HEAD must not run it: 405.
        router.get("/start-task", answersHead: false) { _, _ in try await startTask() }
        router.post("/tasks") { request, _ in try await create(request) }
        router.get("/tasks") { request, _ in try await list(request) }
        router.get("/tasks/{id}") { _, parameters in try await show(parameters) }
        router.delete("/tasks/{id}") { _, parameters in try await cancel(parameters) }
    }

    /// The tutorial's demo: a 5-second `sleep` task, answered at once.
    func startTask() async throws -> Response {
        let (task, _) = try await scheduler.enqueue(kind: "sleep", payload: [:])
        return accepted(task, message: "Task started")
    }

    func create(_ request: Request) async throws -> Response {
        var members = try RequestBody.object(of: request)
        guard let kindValue = members.removeValue(forKey: "kind"), kindValue != .null else {
            throw HTTPError.invalid("kind", "kind is required")
        }
        guard case .string(let kind) = kindValue else {
            throw HTTPError(.badRequest, "kind must be a string, not \(kindValue.typeName)", field: "kind")
        }
        let maxAttempts = try Self.integer(
            members.removeValue(forKey: "max_attempts"), field: "max_attempts", in: 1...100)
        let delay = try Self.number(
            members.removeValue(forKey: "delay_seconds"), field: "delay_seconds", in: 0...86_400)
        var payload = members
        if let explicit = members["payload"] {
            guard case .object(let object) = explicit else {
                throw HTTPError(.badRequest, "payload must be an object, not \(explicit.typeName)", field: "payload")
            }
            payload = object
        }
        var key: String?
        if let header = request.headers["idempotency-key"] {
            guard !header.isEmpty, header.utf8.count <= 200, header.utf8.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) else {
                throw HTTPError(
                    .badRequest, "Idempotency-Key must be 1-200 visible ASCII characters", field: "Idempotency-Key")
            }
            key = header
        }
        do {
            let (task, created) = try await scheduler.enqueue(
                kind: kind, payload: payload, maxAttempts: maxAttempts,
                delayMilliseconds: Int64((delay ?? 0) * 1000), idempotencyKey: key
            )
            var response = accepted(task, message: created ? "Task accepted" : "Task already accepted")
            if !created { response.headers.append(("Idempotent-Replayed", "true")) }
            return response
        } catch let error as TaskPayloadError {
            throw HTTPError.invalid(error.field, error.message)
        }
    }

    func show(_ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]), let task = try await scheduler.store.task(id: id) else {
            throw Self.notFound
        }
        return Response.json(.ok) { $0.task(task) }
    }

    func list(_ request: Request) async throws -> Response {
        let query = request.queryParameters
        var state: TaskState?
        if let text = query["state"] {
            guard let value = TaskState(rawValue: text) else {
                let states = TaskState.allCases.map(\.rawValue).joined(separator: ", ")
                throw HTTPError.invalid("state", "state must be one of \(states)")
            }
            state = value
        }
        var limit = 100
        if let text = query["limit"] {
            guard let value = Int(text), (1...Self.maximumListLimit).contains(value) else {
                throw HTTPError.invalid("limit", "limit must be a whole number from 1 to \(Self.maximumListLimit)")
            }
            limit = value
        }
        var afterID: Int64 = 0
        if let text = query["after_id"] {
            guard let value = Int64(text), value >= 0 else {
                throw HTTPError.invalid("after_id", "after_id must be a whole number of at least 0")
            }
            afterID = value
        }
        let tasks = try await scheduler.store.tasks(state: state, afterID: afterID, limit: limit)
        return Response.json(.ok) { json in json.array(tasks) { writer, task in writer.task(task) } }
    }

    func cancel(_ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]) else { throw Self.notFound }
        switch try await scheduler.cancel(id: id) {
        case .cancelled(let task):
            return Response.json(.ok) { $0.task(task) }
        case .running(let task):
            return Response.json(.accepted) { $0.task(task) }
        case .alreadyFinished(let task):
            throw HTTPError(.conflict, "Task already \(task.state.rawValue)", field: "state")
        case .notFound:
            throw Self.notFound
        }
    }

    private func accepted(_ task: TaskRecord, message: String) -> Response {
        Response.json(.accepted, headers: [("Location", "/tasks/\(task.id)")]) { json in
            json.object { object in
                object.field("message", message)
                object.field("task") { $0.task(task) }
            }
        }
    }

    static func integer(_ value: JSONValue?, field: String, in range: ClosedRange<Int>) throws(HTTPError) -> Int? {
        switch value {
        case nil, .null?: return nil
        case .number(_, let integer?)? where range.contains(Int(integer)): return Int(integer)
        case .number?:
            throw HTTPError.invalid(
                field, "\(field) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        case let other?: throw HTTPError(.badRequest, "\(field) must be a number, not \(other.typeName)", field: field)
        }
    }

    static func number(_ value: JSONValue?, field: String, in range: ClosedRange<Double>) throws(HTTPError) -> Double? {
        switch value {
        case nil, .null?: return nil
        case .number(let number, _)? where range.contains(number): return number
        case .number?:
            throw HTTPError.invalid(field, "\(field) must be from \(range.lowerBound) to \(range.upperBound)")
        case let other?: throw HTTPError(.badRequest, "\(field) must be a number, not \(other.typeName)", field: field)
        }
    }
}

extension JSONWriter {
    /// A task as the API shows it.
    mutating func task(_ task: TaskRecord) {
        object { object in
            object.field("id", task.id)
            object.field("kind", task.kind)
            object.field("state", task.state.rawValue)
            object.field("payload") { $0.raw(Array(task.payload.utf8)) }
            object.field("attempts", task.attempts)
            object.field("max_attempts", task.maxAttempts)
            object.field("run_at", UTCTimestamp.text(milliseconds: task.runAt))
            object.field("created_at", task.createdAt)
            object.field("started_at", task.startedAt)
            object.field("finished_at", task.finishedAt)
            object.field("last_error", task.lastError)
            object.field("result") { writer in
                if let result = task.result { writer.raw(Array(result.utf8)) } else { writer.null() }
            }
        }
    }
}
