import FastCGI
import Foundation
import HTTP
import Lifecycle
import SQLite
import Scheduler
import Store
import Synchronization

/// `usersd serve`: the process's start and stop sequence.
///
/// Start: block signals, open and migrate the database, start the FastCGI server,
/// then tell systemd `READY=1`. Stop (SIGTERM/SIGINT): `STOPPING=1`, drain the
/// FastCGI server (finish in-flight requests within the grace period), then close the
/// database, and exit 0.
struct Server {
    let configuration: Configuration
    let environment: [String: String]

    @available(*, noasync, message: "runs the whole process")
    func run() -> Int32 {
        Signals.blockForSigwait()
        let notifier = SystemdNotifier(environment: environment)

        let listen: ListenSource
        if let path = configuration.socketPath {
            listen = .path(path, mode: configuration.socketMode, group: configuration.socketGroup)
        } else if let inherited = ListenSource.inherited(environment: environment) {
            listen = inherited
        } else {
            Usersd.printError(
                "usersd: no socket to serve: pass --socket PATH (or USERSD_SOCKET), or start under systemd socket activation or spawn-fcgi"
            )
            return 64
        }

        do {
            try Usersd.createDatabaseDirectory(configuration)
            try ServingLock.acquire(path: configuration.databasePath)
        } catch ServingLock.Failure.heldByAnotherProcess {
            Usersd.printError(
                "usersd: \(configuration.databasePath) is already served by another usersd process; "
                    + "a database is served by one process at a time (backup and check work beside it)"
            )
            return 75  // EX_TEMPFAIL: try again once the other process has stopped
        } catch {
            Log.error("cannot open database", ["path": configuration.databasePath, "error": "\(error)"])
            return 1
        }
        let database: Database
        do {
            database = try Usersd.openDatabase(configuration)
            let applied = try blockingWait { try await Migrations.migrate(database) }
            if !applied.isEmpty { Log.info("migrations applied", ["versions": applied.map(String.init).joined(separator: ",")]) }
        } catch {
            Log.error("cannot open database", ["path": configuration.databasePath, "error": "\(error)"])
            return 1
        }

        let maxAttempts = configuration.taskMaxAttempts
        // The welcome task is inserted in the same transaction as its user
        // (transactional outbox): both commit, or neither.
        // Its id is noted for the scheduler, which runs welcome tasks by id, many per
        // transaction, once the route has woken it after the commit.
        // (An actor reference, not a closure: a closure read out of a `Mutex` with
        // `withLock { $0 }` came back wrapped in one more reabstraction thunk per call.)
        let welcomeScheduler = Mutex<TaskScheduler?>(nil)
        let store = SQLiteStore(database: database) { connection, user in
            let task = try SQLiteStore.insertTask(
                NewTask(kind: "welcome", payload: BuiltInTasks.welcomePayload(userID: user.id),
                        maxAttempts: maxAttempts, runAt: SystemClock().now()),
                on: connection
            )
            welcomeScheduler.withLock { $0 }?.noteInserted(taskID: task.id, kind: "welcome")
        }
        var schedulerConfiguration = TaskScheduler.Configuration()
        schedulerConfiguration.concurrency = configuration.taskConcurrency
        schedulerConfiguration.queueLimit = configuration.taskQueueLimit
        schedulerConfiguration.maxAttempts = configuration.taskMaxAttempts
        let scheduler = TaskScheduler(
            store: store,
            registry: TaskRegistry([BuiltInTasks.sleep, BuiltInTasks.welcome(store: store)]),
            configuration: schedulerConfiguration
        )
        welcomeScheduler.withLock { $0 = scheduler }
        do {
            try blockingWait { try await scheduler.start() }
        } catch {
            Log.error("cannot start the task scheduler", ["error": "\(error)"])
            database.close()
            return 1
        }
        let application = Application(store: store, scheduler: scheduler, metricsAllow: configuration.metricsAllow)
        let responder = application.makeResponder(
            mountPrefix: configuration.mountPrefix,
            slowRequestMilliseconds: configuration.slowRequestMilliseconds
        )
        var fastCGI = FastCGIConfiguration(listen: listen)
        fastCGI.maxBodyBytes = configuration.maxBodyBytes
        fastCGI.maxConnections = configuration.maxConnections
        fastCGI.idleThreads = configuration.idleThreads
        fastCGI.writeTimeoutSeconds = configuration.writeTimeoutSeconds
        fastCGI.workerScheduling = configuration.workerScheduling
        let server: FastCGIServer
        do {
            server = try FastCGIServer(
                configuration: fastCGI,
                responder: responder,
                hooks: WorkerThreadHooks(
                    started: { database.attachReaderToCurrentThread() },
                    stopping: { database.detachReaderFromCurrentThread() }
                )
            )
        } catch {
            Log.error("cannot listen", ["error": error.description])
            database.close()
            return 1
        }
        server.start()
        Self.registerCollectors(application.collectors, server: server, database: database, scheduler: scheduler)
        let watchdog = Watchdog(
            notifier: notifier, environment: environment, server: server, scheduler: scheduler,
            metrics: application.metrics, probePath: Router.normalizedPrefix(configuration.mountPrefix) + "/healthz"
        )
        watchdog.start()
        Log.info("serving", [
            "socket": describe(listen), "db": configuration.databasePath, "version": Usersd.version,
            "malloc": environment["GLIBC_TUNABLES"] ?? "",
        ])
        notifier.notify("READY=1\nSTATUS=serving")

        while true {
            switch Signals.wait() {
            case .reload:
                reload()
            case .terminate(let signal):
                Log.info("shutting down", ["signal": String(signal)])
                watchdog.stop()
                server.beginDraining()
                notifier.notify("STOPPING=1\nSTATUS=draining")
                let clean = server.drain(grace: configuration.shutdownGraceSeconds)
                if !clean { Log.warning("requests still running after the grace period; exiting anyway") }
                let grace = Int64(configuration.taskGraceSeconds * 1000)
                _ = try? blockingWait { await scheduler.shutdown(graceMilliseconds: grace) }
                database.close()
                Log.info("stopped")
                return 0
            }
        }
    }

    /// SIGHUP: re-reads the log level from the environment file (`--env-file`), the
    /// one setting that can change without a restart. The socket stays open.
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

    static func registerCollectors(
        _ collectors: MetricsCollectors, server: FastCGIServer, database: Database, scheduler: TaskScheduler
    ) {
        collectors.add { text in
            let figures = server.statistics
            text.help("usersd_worker_threads", "FastCGI worker threads (one per nginx connection), by state.", type: "gauge")
            text.sample("usersd_worker_threads", ["state": "busy"], Double(figures.busyThreads))
            text.sample("usersd_worker_threads", ["state": "total"], Double(figures.threads))
            text.help("usersd_fastcgi_connections_total", "FastCGI connections accepted.", type: "counter")
            text.sample("usersd_fastcgi_connections_total", [:], Double(figures.connectionsAccepted))
        }
        collectors.add { text in
            let writes = database.writeStatistics
            text.help("usersd_db_write_transactions_total", "Write transactions (group commits).", type: "counter")
            text.sample("usersd_db_write_transactions_total", [:], Double(writes.batches))
            text.help("usersd_db_write_transactions_failed_total", "Write transactions that could not commit.", type: "counter")
            text.sample("usersd_db_write_transactions_failed_total", [:], Double(writes.failedBatches))
            text.help("usersd_db_writes_total", "Writes carried by those transactions.", type: "counter")
            text.sample("usersd_db_writes_total", [:], Double(writes.jobs))
            text.help("usersd_db_write_transaction_seconds", "Time from BEGIN IMMEDIATE to the end of COMMIT.", type: "histogram")
            text.histogram("usersd_db_write_transaction_seconds", [:], writes.transactionSeconds)
            let checkpoints = database.checkpointStatistics
            text.help("usersd_db_checkpoints_total", "WAL checkpoint passes, by the thread that ran them.", type: "counter")
            text.sample("usersd_db_checkpoints_total", ["thread": "checkpointer"], Double(checkpoints.backgroundPasses))
            text.sample("usersd_db_checkpoints_total", ["thread": "writer"], Double(checkpoints.writerPasses))
            text.help("usersd_db_wal_pages", "Pages in the WAL after the last commit.", type: "gauge")
            text.sample("usersd_db_wal_pages", [:], Double(checkpoints.walPages))
            text.help("usersd_db_checkpoint_seconds", "Time each pass of the checkpoint thread took.", type: "histogram")
            text.histogram("usersd_db_checkpoint_seconds", [:], checkpoints.backgroundSeconds)
        }
        collectors.add { text in await scheduler.render(into: &text) }
        collectors.add { text in ProcessFigures.render(into: &text) }
    }

    private func describe(_ listen: ListenSource) -> String {
        switch listen {
        case .path(let path, _, _): path
        case .inherited(let fd): "inherited fd \(fd)"
        }
    }
}
