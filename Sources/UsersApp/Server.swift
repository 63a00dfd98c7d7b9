import FastCGI
import Foundation
import HTTP
import Lifecycle
import SQLite
import Scheduler
import Store

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
        let store = SQLiteStore(database: database) { connection, user in
            _ = try SQLiteStore.insertTask(
                NewTask(kind: "welcome", payload: BuiltInTasks.welcomePayload(userID: user.id),
                        maxAttempts: maxAttempts, runAt: SystemClock().now()),
                on: connection
            )
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
        do {
            try blockingWait { try await scheduler.start() }
        } catch {
            Log.error("cannot start the task scheduler", ["error": "\(error)"])
            database.close()
            return 1
        }
        let application = Application(store: store, scheduler: scheduler)
        let responder = application.makeResponder(
            mountPrefix: configuration.mountPrefix,
            slowRequestMilliseconds: configuration.slowRequestMilliseconds
        )
        var fastCGI = FastCGIConfiguration(listen: listen)
        fastCGI.maxBodyBytes = configuration.maxBodyBytes
        fastCGI.maxConnections = configuration.maxConnections
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
        Log.info("serving", ["socket": describe(listen), "db": configuration.databasePath, "version": Usersd.version])
        notifier.notify("READY=1\nSTATUS=serving")

        while true {
            switch Signals.wait() {
            case .reload:
                Log.info("reload requested (SIGHUP): nothing to reload; log level stays", ["level": Log.level.name])
            case .terminate(let signal):
                Log.info("shutting down", ["signal": String(signal)])
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

    private func describe(_ listen: ListenSource) -> String {
        switch listen {
        case .path(let path, _, _): path
        case .inherited(let fd): "inherited fd \(fd)"
        }
    }
}
