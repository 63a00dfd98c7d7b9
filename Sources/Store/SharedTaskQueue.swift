/// A task store several processes serve at once (hosts sharing one database): a task
/// one host claimed may be read, cancelled or rescued through another. The process
/// wires such a backend to its scheduler with `startLeases`, before the scheduler
/// starts claiming, and stops it after the scheduler stopped.
///
/// What such a backend keeps, besides `TaskStore`'s rules:
/// - Each claim carries the claiming process and a lease from the database's clock;
///   while the process lives it extends the leases of the tasks it runs.
/// - A task whose lease expired (its process died or was cut off) is queued again, by
///   any process, within a bound the backend documents.
/// - Every move of a running task is fenced by process and attempt: a process that lost
///   a task's lease changes nothing when it finishes it late.
/// - Starting or stopping one process touches no task another process runs.
public protocol SharedTaskQueue: Sendable {
    /// Starts extending this process's leases, rescuing expired ones and watching for
    /// work: `wake` is called when due tasks wait that no process claimed (another
    /// host enqueued them, or its host died), `cancel` when a client asked, through any
    /// process, to cancel a task this process runs.
    func startLeases(wake: @escaping @Sendable () -> Void, cancel: @escaping @Sendable (Int64) -> Void) throws
    /// Stops that work; the leases of tasks still running are left to expire.
    func stopLeases()
}
