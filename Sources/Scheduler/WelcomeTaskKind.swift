import JSON
public import Store

extension BuiltInTasks {
    /// `welcome` — `{"user_id": N}`: the scheduler's side of `WelcomeTask`. Its whole
    /// work is the store's: the outbox row and the task's success commit in one
    /// transaction, so the scheduler stores no outcome itself. Tasks handed over at
    /// insert run in batches by id (`runQueued`); any other is claimed and run alone.
    /// Internal: a client that could create it would write welcome rows for any user.
    public static func welcome(store: any WelcomeOutbox) -> TaskKind {
        TaskKind(
            name: WelcomeTask.kind,
            isInternal: true,
            validate: { payload in
                guard case .number(_, let id?)? = payload["user_id"], id > 0 else {
                    throw TaskPayloadError(field: "user_id", message: "user_id must be a positive whole number")
                }
                return WelcomeTask.payload(userID: id)
            },
            persistsItsSuccess: true,
            // Handed over at commit: run now, though due only `handOverMilliseconds` later.
            runQueued: { ids, now in
                try await store.runQueuedWelcomes(ids: ids, now: now + WelcomeTask.handOverMilliseconds)
            },
            run: { context in
                guard case .number(_, let id?)? = context.payload["user_id"] else {
                    throw TaskPayloadError(field: "user_id", message: "stored payload has no user_id")
                }
                return try await store.completeWelcome(taskID: context.task.id, userID: id)
            }
        )
    }
}
