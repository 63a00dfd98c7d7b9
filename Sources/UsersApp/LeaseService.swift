import Lifecycle
import Scheduler
import Store

/// The task leases of a backend several hosts share (`SharedTaskQueue`): started after
/// the database and before the scheduler claims anything, stopped after the scheduler
/// (so the leases of tasks re-queued at shutdown are kept until then). It hands the
/// scheduler the work other hosts leave: due tasks nobody claimed, and cancels asked
/// through another host for a task running here.
struct LeaseService: Service {
    let queue: any SharedTaskQueue
    let scheduler: TaskScheduler
    var name: String { "task leases" }

    func start() throws {
        let scheduler = self.scheduler
        try queue.startLeases(
            wake: { scheduler.wakeUp() },
            cancel: { id in Task { _ = try? await scheduler.cancel(id: id) } })
    }

    func stop() {
        queue.stopLeases()
    }
}
