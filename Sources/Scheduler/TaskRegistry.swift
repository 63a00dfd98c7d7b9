public import JSON
public import Store

/// A client's payload did not fit the task kind: 422 naming the field.
public struct TaskPayloadError: Error, Sendable, Equatable {
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }
}

/// What a running task gets: its row, its decoded payload, and the scheduler's clock.
public struct TaskContext: Sendable {
    public let task: TaskRecord
    public let payload: [String: JSONValue]
    public let clock: any SchedulerClock
}

/// One kind of background task: how to check a payload and how to run it.
public struct TaskKind: Sendable {
    public let name: String
    /// Checks a client's payload and returns it as canonical JSON text.
    public let validate: @Sendable ([String: JSONValue]) throws -> String
    /// Runs one attempt; returns the result as JSON text. Must be cancellable: use
    /// `Task.sleep`/`clock.sleep` and check cancellation, never block a thread.
    public let run: @Sendable (TaskContext) async throws -> String
    /// `run` itself marks the task `succeeded` (in the transaction that does its
    /// work) before it returns, so the scheduler does not write that again.
    public let persistsItsSuccess: Bool
    /// For kinds whose whole work is a database write: runs the given tasks (ids noted
    /// at commit, see `TaskScheduler.committed(taskID:kind:)`) that are still queued and due from
    /// start to finish in one store transaction, and returns the ids it ran. Those
    /// take no slot and no claim; any it skips run through `run` as usual.
    public let runQueued: (@Sendable (_ ids: [Int64], _ now: Int64) async throws -> [Int64])?
    /// Only usersd itself creates tasks of this kind, in the transaction that needs one
    /// (the welcome task commits with its user): `TaskRegistry.validate` refuses it, so
    /// a client can neither create it nor learn its name from the list of kinds.
    public let isInternal: Bool

    public init(
        name: String,
        isInternal: Bool = false,
        validate: @escaping @Sendable ([String: JSONValue]) throws -> String,
        persistsItsSuccess: Bool = false,
        runQueued: (@Sendable (_ ids: [Int64], _ now: Int64) async throws -> [Int64])? = nil,
        run: @escaping @Sendable (TaskContext) async throws -> String
    ) {
        self.name = name
        self.isInternal = isInternal
        self.validate = validate
        self.persistsItsSuccess = persistsItsSuccess
        self.runQueued = runQueued
        self.run = run
    }
}

/// The task kinds the scheduler knows, by name.
public struct TaskRegistry: Sendable {
    public private(set) var kinds: [String: TaskKind] = [:]

    public init(_ kinds: [TaskKind] = []) {
        for kind in kinds { register(kind) }
    }

    public mutating func register(_ kind: TaskKind) {
        kinds[kind.name] = kind
    }

    /// The canonical payload of a task a client asks for; throws `TaskPayloadError`
    /// (field `kind`) for an unknown kind or an internal one, or the kind's own error for
    /// a payload it rejects. The list of known kinds in the message names only the ones
    /// a client may create.
    public func validate(kind: String, payload: [String: JSONValue]) throws -> String {
        guard let taskKind = kinds[kind] else {
            let known = kinds.values.filter { !$0.isInternal }.map(\.name).sorted().joined(separator: ", ")
            throw TaskPayloadError(field: "kind", message: "unknown task kind '\(kind)' (known: \(known))")
        }
        guard !taskKind.isInternal else {
            let message = "task kind '\(kind)' is internal: usersd creates these tasks itself, clients cannot"
            throw TaskPayloadError(field: "kind", message: message)
        }
        return try taskKind.validate(payload)
    }
}
