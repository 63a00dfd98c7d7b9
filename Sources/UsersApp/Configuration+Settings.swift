import Basics
import Lifecycle
import Logging

/// Every setting: its flag, its `USERSD_*` twin, its help line and how its value is
/// checked and applied (a bad value is one line naming the setting: exit 64).
extension Configuration {
    /// One documented setting.
    struct Setting: Sendable {
        let flag: String
        let environment: String
        let placeholder: String
        let help: String
        let apply: @Sendable (inout Configuration, String) throws -> Void
    }

    static let settings: [Setting] = [
        Setting(
            flag: "--socket", environment: "USERSD_SOCKET", placeholder: "PATH",
            help: "unix socket to create (mode --socket-mode); without it: the socket from systemd (LISTEN_FDS) or fd 0"
        ) {
            $0.socketPath = try nonEmpty($1, "--socket")
        },
        Setting(
            flag: "--listen", environment: "USERSD_LISTEN", placeholder: "HOST:PORT",
            help: "serve FastCGI over TCP on this address (127.0.0.1:9000, [::1]:9000) instead of a unix socket"
        ) {
            guard let address = TCPAddress(parsing: $1) else {
                throw ConfigurationError(
                    "--listen: '\($1)' is not HOST:PORT with an IPv4 or [IPv6] address and a port 1-65535")
            }
            $0.listenAddress = address
        },
        Setting(
            flag: "--allow-from", environment: "USERSD_ALLOW_FROM", placeholder: "CIDR,...",
            help:
                "peers a TCP socket (--listen, or systemd's) serves; others are closed at once (default 127.0.0.0/8,::1)"
        ) {
            guard let ranges = AddressRange.list($1) else {
                throw ConfigurationError(
                    "--allow-from: '\($1)' is not a comma-separated list of addresses or CIDR networks")
            }
            $0.allowFrom = ranges
        },
        Setting(
            flag: "--socket-mode", environment: "USERSD_SOCKET_MODE", placeholder: "OCTAL",
            help: "permissions of a created socket (default 0660)"
        ) {
            guard let mode = UInt32($1, radix: 8), mode <= 0o777 else {
                throw ConfigurationError("--socket-mode: '\($1)' is not an octal mode like 0660")
            }
            $0.socketMode = mode
        },
        Setting(
            flag: "--socket-group", environment: "USERSD_SOCKET_GROUP", placeholder: "GROUP",
            help: "group of a created socket, e.g. www-data so nginx can connect"
        ) {
            $0.socketGroup = try nonEmpty($1, "--socket-group")
        },
        Setting(
            flag: "--db", environment: "USERSD_DB", placeholder: "PATH",
            help:
                "SQLite database file (default ./data/users.sqlite3, or $STATE_DIRECTORY/users.sqlite3 under systemd), "
                + "or a postgresql:// URI (several hosts share it; see docs/scale-out.md)"
        ) {
            $0.databasePath = try nonEmpty($1, "--db")
        },
        Setting(
            flag: "--db-pool", environment: "USERSD_DB_POOL", placeholder: "N",
            help: "PostgreSQL only: connections this process opens at most (default 8; hosts x N < max_connections)"
        ) {
            $0.databasePool = try integer($1, "--db-pool", 1...1000)
        },
        Setting(
            flag: "--prefix", environment: "USERSD_PREFIX", placeholder: "PATH",
            help: "URL prefix the API is mounted under, e.g. /api (default: none)"
        ) {
            $0.mountPrefix = $1
        },
        Setting(
            flag: "--max-body", environment: "USERSD_MAX_BODY", placeholder: "BYTES",
            help: "largest accepted request body; larger gets 413 (default 1048576)"
        ) {
            $0.maxBodyBytes = try integer($1, "--max-body", 1...1_073_741_824)
        },
        Setting(
            flag: "--log-level", environment: "USERSD_LOG_LEVEL", placeholder: "LEVEL",
            help: "debug, info, warning or error (default info)"
        ) {
            guard let level = LogLevel(name: $1) else {
                throw ConfigurationError("--log-level: '\($1)' is not one of debug, info, warning, error")
            }
            $0.logLevel = level
        },
        Setting(
            flag: "--shutdown-grace", environment: "USERSD_SHUTDOWN_GRACE", placeholder: "SECONDS",
            help: "on SIGTERM, how long in-flight requests may take to finish (default 10)"
        ) {
            $0.shutdownGraceSeconds = try seconds($1, "--shutdown-grace")
        },
        Setting(
            flag: "--busy-timeout", environment: "USERSD_BUSY_TIMEOUT", placeholder: "MS",
            help: "how long a write waits for a database locked by another process before 503 (default 5000)"
        ) {
            $0.busyTimeoutMilliseconds = try integer($1, "--busy-timeout", 0...600_000)
        },
        Setting(
            flag: "--synchronous", environment: "USERSD_SYNCHRONOUS", placeholder: "MODE",
            help: "normal (survives a process crash; default) or full (also survives power loss)"
        ) {
            let mode = $1.uppercased()
            guard mode == "NORMAL" || mode == "FULL" else {
                throw ConfigurationError("--synchronous: '\($1)' is not normal or full")
            }
            $0.synchronous = mode
        },
        Setting(
            flag: "--max-connections", environment: "USERSD_MAX_CONNECTIONS", placeholder: "N",
            help: "most FastCGI connections served at once, one thread each (default 1024)"
        ) {
            $0.maxConnections = try integer($1, "--max-connections", 1...65_536)
        },
        Setting(
            flag: "--idle-threads", environment: "USERSD_IDLE_THREADS", placeholder: "N",
            help: "worker threads kept waiting for new connections; more exit when idle (default 64)"
        ) {
            $0.idleThreads = try integer($1, "--idle-threads", 0...65_536)
        },
        Setting(
            flag: "--write-timeout", environment: "USERSD_WRITE_TIMEOUT", placeholder: "SECONDS",
            help: "a response write the web server does not take within this time drops the connection (default 30)"
        ) {
            $0.writeTimeoutSeconds = try seconds($1, "--write-timeout", minimum: 0.001)
        },
        Setting(
            flag: "--metrics-allow", environment: "USERSD_METRICS_ALLOW", placeholder: "CIDR,...",
            help: "client addresses (REMOTE_ADDR) GET /metrics answers; others get 403 (default 127.0.0.0/8,::1)"
        ) {
            guard let ranges = AddressRange.list($1) else {
                throw ConfigurationError(
                    "--metrics-allow: '\($1)' is not a comma-separated list of addresses or CIDR networks")
            }
            $0.metricsAllow = ranges
        },
        Setting(
            flag: "--worker-scheduling", environment: "USERSD_WORKER_SCHEDULING", placeholder: "POLICY",
            help: "batch (default: a worker woken up does not preempt the writer or nginx) or normal"
        ) {
            guard let policy = ThreadScheduling(rawValue: $1.lowercased()) else {
                throw ConfigurationError("--worker-scheduling: '\($1)' is not batch or normal")
            }
            $0.workerScheduling = policy
        },
        Setting(
            flag: "--slow-request", environment: "USERSD_SLOW_REQUEST", placeholder: "MS",
            help: "requests slower than this are logged at warning level (default 1000)"
        ) {
            $0.slowRequestMilliseconds = try integer($1, "--slow-request", 0...3_600_000)
        },
        Setting(
            flag: "--task-concurrency", environment: "USERSD_TASK_CONCURRENCY", placeholder: "N",
            help: "background tasks run at once (default 4)"
        ) {
            $0.taskConcurrency = try integer($1, "--task-concurrency", 1...1024)
        },
        Setting(
            flag: "--task-queue-limit", environment: "USERSD_TASK_QUEUE_LIMIT", placeholder: "N",
            help: "queued tasks before POST /tasks answers 503 (default 10000)"
        ) {
            $0.taskQueueLimit = try integer($1, "--task-queue-limit", 1...10_000_000)
        },
        Setting(
            flag: "--task-grace", environment: "USERSD_TASK_GRACE", placeholder: "SECONDS",
            help: "on SIGTERM, how long running tasks may take before they are re-queued (default 10)"
        ) {
            $0.taskGraceSeconds = try seconds($1, "--task-grace")
        },
        Setting(
            flag: "--task-max-attempts", environment: "USERSD_TASK_MAX_ATTEMPTS", placeholder: "N",
            help: "attempts before a failing task ends failed (default 5)"
        ) {
            $0.taskMaxAttempts = try integer($1, "--task-max-attempts", 1...100)
        },
        Setting(
            flag: "--auth-file", environment: "USERSD_AUTH_FILE", placeholder: "FILE",
            help:
                "API tokens (NAME SCOPE SHA256HEX lines, see usersd token): every route but /healthz then needs "
                + "Authorization: Bearer TOKEN; SIGHUP re-reads it (default: none, every route open)"
        ) {
            $0.authFile = try nonEmpty($1, "--auth-file")
        },
        Setting(
            flag: "--env-file", environment: "USERSD_ENV_FILE", placeholder: "FILE",
            help:
                "USERSD_* settings as KEY=VALUE lines, below the environment and flags; SIGHUP re-reads its USERSD_LOG_LEVEL"
        ) {
            $0.environmentFile = try nonEmpty($1, "--env-file")
        },
        Setting(
            flag: "--nginx", environment: "USERSD_NGINX_SITE", placeholder: "FILE",
            help: "for 'check': an nginx site file to compare with these settings"
        ) {
            $0.nginxSiteFile = try nonEmpty($1, "--nginx")
        },
    ]

    static func message(of error: any Error) -> String {
        (error as? ConfigurationError)?.message ?? "\(error)"
    }

    private static func nonEmpty(_ value: String, _ name: String) throws(ConfigurationError) -> String {
        guard !value.isEmpty else { throw ConfigurationError("\(name) must not be empty") }
        return value
    }

    private static func integer(
        _ value: String, _ name: String, _ range: ClosedRange<Int>
    ) throws(ConfigurationError) -> Int {
        guard let number = Int(value), range.contains(number) else {
            throw ConfigurationError(
                "\(name): '\(value)' is not a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    private static func seconds(
        _ value: String, _ name: String, minimum: Double = 0
    ) throws(ConfigurationError) -> Double {
        guard let number = Double(value), number.isFinite, number >= minimum, number <= 86_400 else {
            let range = minimum == 0 ? "in 0...86400" : "above 0 and at most 86400"
            throw ConfigurationError("\(name): '\(value)' is not a number of seconds \(range)")
        }
        return number
    }
}
