import JSON
import Logging
import Store

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
            return JSONWriter.text([
                "seconds": .number(seconds, integer: seconds == seconds.rounded() ? Int64(seconds) : nil)
            ])
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
}
