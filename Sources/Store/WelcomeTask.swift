/// The welcome task: every new user gets one, inserted in the user's own transaction
/// (the transactional outbox). Running it writes the user's welcome message into the
/// outbox table, where a mail sender would read it, exactly once per user; the row
/// and the task's success commit together.
///
/// The task is internal: clients cannot create it (`TaskKind.isInternal`).
public enum WelcomeTask {
    public static let kind = "welcome"

    /// A welcome task is due this long after its user was created. The route hands the
    /// task to the scheduler as soon as the user's transaction has committed, and the
    /// scheduler runs it by id, whether or not it is due yet; the claim path, which runs
    /// whatever is due, takes it only when that hand-over did not happen (a crash, a
    /// failed batch). Without the delay the claim path could take a task in the moment
    /// between its commit and its hand-over, costing a claim and a completion
    /// transaction instead of a share of one batch.
    public static let handOverMilliseconds: Int64 = 1000

    /// Its payload, `{"user_id":N}`.
    public static func payload(userID: Int64) -> String {
        "{\"user_id\":\(userID)}"
    }

    /// What a run stores as the task's result: whether the message was written or the
    /// user was gone by then.
    public static func result(written: Bool) -> String {
        written ? #"{"outbox":"written"}"# : #"{"outbox":"user no longer exists"}"#
    }
}

/// The store side of the welcome task, on the backend that holds users, tasks and
/// the outbox together.
public protocol WelcomeOutbox: Sendable {
    /// Completes a running welcome task in one transaction: writes the welcome message
    /// for the user into the outbox (once per user; nothing when the user no longer
    /// exists) and marks the task `succeeded`; returns the result stored. Both happen
    /// or neither: when the task is no longer `running`, nothing is written and
    /// `TaskStoreError.notRunning` is thrown.
    func completeWelcome(taskID: Int64, userID: Int64) async throws -> String
    /// Runs the welcome tasks among `ids` that are still queued and due at `now` (the
    /// scheduler passes its time plus `handOverMilliseconds`) from
    /// start to finish in one transaction: each gets its outbox row (as
    /// `completeWelcome`) and goes straight to `succeeded` with its attempt counted.
    /// Other ids (not welcome, not queued, not due, unknown) are skipped, so a task
    /// the claim path took meanwhile is never run twice. Returns the ids run, in the
    /// order given.
    func runQueuedWelcomes(ids: [Int64], now: Int64) async throws -> [Int64]
}
