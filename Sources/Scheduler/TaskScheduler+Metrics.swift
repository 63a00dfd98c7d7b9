public import Metrics
import Store
import Synchronization

extension TaskScheduler: MetricsSource {
    /// Tasks by state (from the database) and attempt durations by kind.
    public nonisolated func render(into text: inout PrometheusText) async {
        text.help("usersd_tasks", "Background tasks by state.", type: "gauge")
        let counts = (try? await store.taskCounts()) ?? [:]
        for state in TaskState.allCases {
            text.sample("usersd_tasks", ["state": state.rawValue], Double(counts[state] ?? 0))
        }
        text.help("usersd_task_duration_seconds", "Run time of task attempts, by kind.", type: "histogram")
        for (kind, histogram) in durations.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            text.histogram("usersd_task_duration_seconds", ["kind": kind], histogram)
        }
    }

    /// Answers when the actor is responsive (used by the watchdog check).
    public func ping() -> Int { runningCount }
}
