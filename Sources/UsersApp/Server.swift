import FastCGI
import Foundation
import HTTP
import Lifecycle
import Logging
import Metrics
import Scheduler
import Store

/// `usersd serve`: the process's start and stop sequence.
///
/// Start: block the signals the main thread waits for, open the database, then start
/// the services in order (database migrated, scheduler, FastCGI server, watchdog) and
/// tell systemd `READY=1`. Stop (SIGTERM/SIGINT): stop accepting, `STOPPING=1`, then
/// stop the services in reverse order (the FastCGI server finishes in-flight requests
/// within the grace period, the scheduler lets running tasks finish or re-queues
/// them, the database closes), and exit 0.
struct Server {
    let configuration: Configuration
    let environment: [String: String]

    @available(*, noasync, message: "runs the whole process")
    func run() -> Int32 {
        Signals.blockForSigwait()
        let notifier = SystemdNotifier(environment: environment)
        guard let listen = listenSource() else {
            Usersd.printError(
                "usersd: no socket to serve: pass --socket PATH (or USERSD_SOCKET) or --listen HOST:PORT, "
                    + "or start under systemd socket activation or spawn-fcgi"
            )
            return 64
        }
        // The token file before the database: a bad one is a bad setting (64) and
        // nothing is opened or created.
        var accessControl: AccessControl?
        if let path = configuration.authFile {
            do {
                accessControl = try AccessControl(path: path, mountPrefix: configuration.mountPrefix)
            } catch {
                Usersd.printError("usersd: --auth-file \(error.message)")
                return 64
            }
        }
        let backend: any StoreBackend
        do {
            backend = try Backends.open(configuration, forServing: true)
        } catch let error as DatabaseInUse {
            Usersd.printError("usersd: \(error)")
            return 75  // EX_TEMPFAIL: try again once the other process has stopped
        } catch {
            Log.error("cannot open database", ["path": Backends.describe(configuration), "error": "\(error)"])
            return 1
        }

        let scheduler = makeScheduler(backend)
        let application = Application(store: backend, scheduler: scheduler, metricsAllow: configuration.metricsAllow)
        application.metrics.add(backend)
        application.metrics.add(scheduler)
        application.metrics.add(ProcessFigures())
        let fastCGI = FastCGIService(
            configuration: fastCGIConfiguration(listen),
            responder: application.makeResponder(
                mountPrefix: configuration.mountPrefix, slowRequestMilliseconds: configuration.slowRequestMilliseconds,
                accessControl: accessControl),
            hooks: WorkerThreadHooks(
                started: { backend.workerThreadStarted() }, stopping: { backend.workerThreadStopping() }),
            graceSeconds: configuration.shutdownGraceSeconds,
            metrics: application.metrics
        )
        let watchdog = Watchdog(
            notifier: notifier, environment: environment, fastCGI: fastCGI, scheduler: scheduler,
            metrics: application.requestMetrics,
            probePath: Router.normalizedPrefix(configuration.mountPrefix) + "/healthz"
        )
        var steps: [any Service] = [StoreService(backend: backend)]
        if let shared = backend as? any SharedTaskQueue {
            steps.append(LeaseService(queue: shared, scheduler: scheduler))
        }
        steps += [
            SchedulerService(scheduler: scheduler, graceMilliseconds: Int64(configuration.taskGraceSeconds * 1000)),
            fastCGI as any Service,
            watchdog,
        ]
        let services = ServiceGroup(steps)
        do {
            try services.start()
        } catch {
            return 1
        }
        Log.info(
            "serving",
            [
                "socket": describe(listen), "db": Backends.describe(configuration), "version": Usersd.version,
                "malloc": environment["GLIBC_TUNABLES"] ?? "",
                "access_control": accessControl.map { "on (\($0.count) tokens from \($0.path))" }
                    ?? "off (no --auth-file: every route is open)",
            ])
        notifier.notify("READY=1\nSTATUS=serving")

        while true {
            switch Signals.wait() {
            case .reload:
                reload()
                if let accessControl { reloadTokens(accessControl) }
            case .terminate(let signal):
                Log.info("shutting down", ["signal": String(signal)])
                fastCGI.beginDraining()
                notifier.notify("STOPPING=1\nSTATUS=draining")
                services.stop()
                Log.info("stopped")
                return 0
            }
        }
    }

    private func listenSource() -> ListenSource? {
        if let path = configuration.socketPath {
            return .path(path, mode: configuration.socketMode, group: configuration.socketGroup)
        }
        if let address = configuration.listenAddress {
            return .tcp(host: address.host, port: address.port)
        }
        return ListenSource.inherited(environment: environment)
    }

    private func makeScheduler(_ backend: any StoreBackend) -> TaskScheduler {
        var settings = TaskScheduler.Configuration()
        settings.concurrency = configuration.taskConcurrency
        settings.queueLimit = configuration.taskQueueLimit
        settings.maxAttempts = configuration.taskMaxAttempts
        return TaskScheduler(
            store: backend, registry: TaskRegistry([BuiltInTasks.sleep, BuiltInTasks.welcome(store: backend)]),
            configuration: settings
        )
    }

    private func fastCGIConfiguration(_ listen: ListenSource) -> FastCGIConfiguration {
        var settings = FastCGIConfiguration(listen: listen)
        settings.maxBodyBytes = configuration.maxBodyBytes
        settings.maxConnections = configuration.maxConnections
        settings.idleThreads = configuration.idleThreads
        settings.writeTimeoutSeconds = configuration.writeTimeoutSeconds
        settings.workerScheduling = configuration.workerScheduling
        settings.allowFrom = configuration.allowFrom
        return settings
    }

    /// SIGHUP: re-reads the log level from the environment file (`--env-file`), the
    /// one setting that can change without a restart (the token file's contents are
    /// re-read too, see `reloadTokens`). The socket stays open.
    private func reload() {
        guard let file = configuration.environmentFile else {
            Log.info("reload (SIGHUP): no --env-file to re-read; log level stays", ["level": Log.level.name])
            return
        }
        guard let values = EnvironmentFile.read(file) else {
            Log.warning("reload (SIGHUP): cannot read the environment file", ["file": file])
            return
        }
        if let name = values["USERSD_LOG_LEVEL"], let level = LogLevel(name: name) {
            Log.level = level
        }
        Log.warning("reloaded (SIGHUP)", ["level": Log.level.name])
    }

    /// SIGHUP: re-reads the token file. A file that fails to load changes nothing:
    /// the tokens in force stay, and the log says why.
    private func reloadTokens(_ accessControl: AccessControl) {
        do {
            let count = try accessControl.reload()
            Log.warning("reloaded the token file (SIGHUP)", ["auth_file": accessControl.path, "tokens": String(count)])
        } catch {
            Log.error(
                "token file not reloaded (SIGHUP): keeping the tokens in force",
                ["tokens": String(accessControl.count), "error": error.message])
        }
    }

    private func describe(_ listen: ListenSource) -> String {
        switch listen {
        case .path(let path, _, _): path
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .inherited(let fd): "inherited fd \(fd)"
        }
    }
}
