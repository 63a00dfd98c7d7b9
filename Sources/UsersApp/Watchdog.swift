import Dispatch
import FastCGI
import Foundation
import Lifecycle
import Logging
import Metrics
import Scheduler
import Synchronization

/// Feeds systemd's watchdog and keeps `STATUS=` current.
///
/// Every half watchdog interval (or every 10 s without a watchdog) it checks the
/// service for real: that some worker thread is accepting connections, a FastCGI
/// round trip for `/healthz` through a worker of its own (the request decoder, the
/// router and the database), and an answer from the scheduler actor.
/// Only when both pass does it send `WATCHDOG=1`; otherwise systemd restarts usersd.
final class Watchdog: Service {
    let notifier: SystemdNotifier
    let intervalSeconds: Double
    let isWatchdogEnabled: Bool
    let fastCGI: FastCGIService
    let scheduler: TaskScheduler
    let metrics: RequestMetrics
    let probePath: String
    private let stopped = DispatchSemaphore(value: 0)
    private let isStopping = Atomic<Bool>(false)

    var name: String { "watchdog" }

    init(
        notifier: SystemdNotifier, environment: [String: String], fastCGI: FastCGIService, scheduler: TaskScheduler,
        metrics: RequestMetrics, probePath: String
    ) {
        self.notifier = notifier
        let microseconds = environment["WATCHDOG_USEC"].flatMap(Double.init)
        let forUs = environment["WATCHDOG_PID"].flatMap(Int32.init).map { $0 == getpid() } ?? true
        isWatchdogEnabled = microseconds != nil && forUs
        intervalSeconds = isWatchdogEnabled ? max(0.5, microseconds! / 2_000_000) : 10
        self.fastCGI = fastCGI
        self.scheduler = scheduler
        self.metrics = metrics
        self.probePath = probePath
    }

    func start() {
        guard notifier.socketPath != nil else { return }
        NamedThread.start("usersd-watchdog") { [self] in
            while !isStopping.load(ordering: .relaxed) {
                check()
                _ = stopped.wait(timeout: .now() + intervalSeconds)
            }
        }
    }

    func stop() {
        isStopping.store(true, ordering: .relaxed)
        stopped.signal()
    }

    private func check() {
        guard let server = fastCGI.server else { return }
        let status = server.probe(path: probePath, timeoutMilliseconds: Int32(min(intervalSeconds, 5) * 1000))
        let schedulerAnswered =
            (try? blockingWait(timeoutSeconds: min(intervalSeconds, 5)) { [scheduler] in
                await scheduler.ping()
            }) != nil
        let figures = server.statistics
        let line =
            "STATUS=serving: \(metrics.totalRequests) requests, \(metrics.inFlight) in flight, "
            + "\(figures.threads) worker threads"
        if status == 200 && schedulerAnswered {
            notifier.notify(isWatchdogEnabled ? "WATCHDOG=1\n" + line : line)
        } else {
            Log.error(
                "health check failed; not feeding the watchdog",
                [
                    "probe_status": status.map(String.init) ?? "none", "scheduler": schedulerAnswered ? "ok" : "stuck",
                ])
            notifier.notify(
                "STATUS=unhealthy: probe \(status.map(String.init) ?? "failed"), scheduler \(schedulerAnswered ? "ok" : "stuck")"
            )
        }
    }
}
