import HTTP
import Lifecycle
public import Store

/// The task kinds usersd ships.
public enum BuiltInTasks {
    public static let sleepDefaultSeconds = 5.0
    public static let sleepMaximumSeconds = 3600.0

    /// `sleep` — `{"seconds": N}` (0 < N ≤ 3600, default 5): the tutorial's demo task.
    public static let sleep = TaskKind(
        name: "sleep",
        validate: { payload in
            var seconds = sleepDefaultSeconds
            switch payload["seconds"] {
            case nil, .null?: break
            case .number(let value, _)?:
                guard value > 0, value <= sleepMaximumSeconds else {
                    throw TaskPayloadError(field: "seconds", message: "seconds must be more than 0 and at most 3600")
                }
                seconds = value
            case let other?:
                throw TaskPayloadError(field: "seconds", message: "seconds must be a number, not \(other.typeName)")
            }
            return JSONWriter.text(["seconds": .number(seconds, integer: seconds == seconds.rounded() ? Int64(seconds) : nil)])
        },
        run: { context in
            guard case .number(let seconds, _)? = context.payload["seconds"] else {
                throw TaskPayloadError(field: "seconds", message: "stored payload has no seconds")
            }
            let start = context.clock.now()
            try await context.clock.sleep(until: start + Int64(seconds * 1000))
            Log.info("Background task completed", ["task_id": String(context.task.id), "kind": "sleep"])
            return JSONWriter.text(["slept_seconds": .number(seconds, integer: nil)])
        }
    )

    /// `welcome` — `{"user_id": N}`: writes the welcome message for a new user into the
    /// outbox (where a mail sender would read it), exactly once per user. The outbox
    /// row and the task's success commit in one transaction (one write, not two).
    /// Internal: the store inserts it with each new user, in the user's transaction;
    /// a client that could create it would write welcome rows for any user id.
    public static func welcome(store: any TaskStore) -> TaskKind {
        // The two possible results, written once (they are stored with every welcome).
        let written = JSONWriter.text(["outbox": .string("written")])
        let gone = JSONWriter.text(["outbox": .string("user no longer exists")])
        let result: @Sendable (Bool) -> String = { $0 ? written : gone }
        return TaskKind(
            name: "welcome",
            isInternal: true,
            validate: { payload in
                guard case .number(_, let id?)? = payload["user_id"], id > 0 else {
                    throw TaskPayloadError(field: "user_id", message: "user_id must be a positive whole number")
                }
                return JSONWriter.text(["user_id": .number(Double(id), integer: id)])
            },
            persistsItsSuccess: true,
            runQueued: { ids, now in try await store.runQueuedWelcomes(ids: ids, now: now, result: result) },
            run: { context in
                guard case .number(_, let id?)? = context.payload["user_id"] else {
                    throw TaskPayloadError(field: "user_id", message: "stored payload has no user_id")
                }
                return try await store.completeWelcome(taskID: context.task.id, userID: id, result: result)
            }
        )
    }

    /// The payload of the welcome task enqueued with a new user.
    public static func welcomePayload(userID: Int64) -> String {
        // What `validate` writes for it, without building a dictionary per new user.
        "{\"user_id\":\(userID)}"
    }
}
