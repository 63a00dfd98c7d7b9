public import Basics
import Foundation
public import Lifecycle
public import Logging

/// A setting the user got wrong: printed as one line, exit status 64 (EX_USAGE).
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Every setting of usersd: a flag, its `USERSD_*` environment twin, and a default.
/// Flags win over the environment, the environment over defaults.
public struct Configuration: Sendable, Equatable {
    public enum Command: Sendable, Equatable {
        case serve
        case migrate
        case check
        case backup(String)
        case token(TokenCommand)
        case help
        case version

        /// The commands that read `--env-file` (the others need no settings).
        var readsEnvironmentFile: Bool {
            switch self {
            case .serve, .migrate, .check, .token: true
            case .backup, .help, .version: false
            }
        }
    }

    public var command: Command = .serve
    /// Unix socket to create; `nil` means use the socket systemd or spawn-fcgi passed.
    public var socketPath: String?
    /// TCP address to listen on (`--listen HOST:PORT`), for web servers on other hosts.
    public var listenAddress: TCPAddress?
    /// Peers a TCP socket serves (`--allow-from`): FastCGI has no authentication.
    public var allowFrom: [AddressRange] = AddressRange.loopback
    public var socketMode: UInt32 = 0o660
    public var socketGroup: String?
    /// An SQLite file, or a `postgresql://` / `postgres://` URI.
    public var databasePath: String = "./data/users.sqlite3"
    /// Connections to PostgreSQL this process opens at most (`--db-pool`).
    public var databasePool: Int = 8
    public var mountPrefix: String = ""
    public var maxBodyBytes: Int = 1_048_576
    public var logLevel: LogLevel = .info
    public var shutdownGraceSeconds: Double = 10
    public var busyTimeoutMilliseconds: Int = 5000
    public var synchronous: String = "NORMAL"
    public var maxConnections: Int = 1024
    /// Worker threads kept waiting for a new connection once theirs closed; beyond
    /// that, a thread whose connection closed exits.
    public var idleThreads: Int = 64
    /// How long a write to the web server may block before the connection is dropped.
    public var writeTimeoutSeconds: Double = 30
    /// Client addresses (`REMOTE_ADDR`) that `GET /metrics` answers.
    public var metricsAllow: [AddressRange] = AddressRange.loopback
    public var workerScheduling: ThreadScheduling = .batch
    public var slowRequestMilliseconds: Int = 1000
    public var taskConcurrency: Int = 4
    public var taskQueueLimit: Int = 10_000
    public var taskGraceSeconds: Double = 10
    public var taskMaxAttempts: Int = 5
    /// For `check`: an nginx site file to compare with these settings.
    public var nginxSiteFile: String?
    /// `KEY=VALUE` lines (systemd `EnvironmentFile` syntax) read at start and on SIGHUP.
    public var environmentFile: String?
    /// The API tokens file (`--auth-file`); `nil` leaves every route open.
    public var authFile: String?

    public init() {}

    /// Parses `arguments` over `environment`, then again with the values of an
    /// environment file (`--env-file`) added below the real environment.
    public static func parse(
        _ arguments: [String], environment: [String: String]
    ) throws(ConfigurationError) -> Configuration {
        let first = try parseOnce(arguments, environment: environment)
        guard let file = first.environmentFile, first.command.readsEnvironmentFile else {
            return first
        }
        guard let values = EnvironmentFile.read(file) else {
            throw ConfigurationError("--env-file: cannot read \(file)")
        }
        return try parseOnce(arguments, environment: values.merging(environment) { _, real in real })
    }

    static func parseOnce(
        _ arguments: [String], environment: [String: String]
    ) throws(ConfigurationError) -> Configuration {
        var configuration = Configuration()
        if let stateDirectory = environment["STATE_DIRECTORY"], !stateDirectory.isEmpty {
            // systemd may list several directories separated by ':'; the first is ours.
            let first = stateDirectory.split(separator: ":").first.map(String.init) ?? stateDirectory
            configuration.databasePath = first + "/users.sqlite3"
        }
        for setting in settings {
            if let value = environment[setting.environment], !value.isEmpty {
                do {
                    try setting.apply(&configuration, value)
                } catch {
                    throw ConfigurationError("\(setting.environment): \(Self.message(of: error))")
                }
            }
        }
        var remaining = arguments[...]
        var commandSeen = false
        var scope: String?
        var tokenArguments: TokenCommand.Arguments?
        while let argument = remaining.popFirst() {
            if argument == "--help" || argument == "-h" {
                configuration.command = .help
                return configuration
            }
            if argument == "--version" || argument == "-V" {
                configuration.command = .version
                return configuration
            }
            if argument.hasPrefix("--") {
                var name = argument
                var value: String?
                if let equals = argument.firstIndex(of: "=") {
                    name = String(argument[..<equals])
                    value = String(argument[argument.index(after: equals)...])
                }
                if name == "--scope" {
                    // `usersd token add NAME --scope SCOPE`: an argument of that command,
                    // not a setting (it has no environment twin).
                    if value == nil { value = remaining.popFirst() }
                    guard let value else { throw ConfigurationError("--scope needs a value (read, write or admin)") }
                    scope = value
                    continue
                }
                guard let setting = settings.first(where: { $0.flag == name }) else {
                    throw ConfigurationError("unknown option '\(name)' (see usersd --help)")
                }
                if value == nil { value = remaining.popFirst() }
                guard let value else { throw ConfigurationError("\(name) needs a value (\(setting.placeholder))") }
                do {
                    try setting.apply(&configuration, value)
                } catch {
                    throw ConfigurationError(Self.message(of: error))
                }
                continue
            }
            if var arguments = tokenArguments, arguments.takesName, arguments.name == nil {
                arguments.name = argument
                tokenArguments = arguments
                continue
            }
            guard !commandSeen else { throw ConfigurationError("unexpected argument '\(argument)'") }
            commandSeen = true
            switch argument {
            case "serve": configuration.command = .serve
            case "migrate": configuration.command = .migrate
            case "check": configuration.command = .check
            case "help": configuration.command = .help
            case "version": configuration.command = .version
            case "backup":
                guard let path = remaining.popFirst(), !path.hasPrefix("--") else {
                    throw ConfigurationError("backup needs a destination: usersd backup PATH")
                }
                configuration.command = .backup(path)
            case "token":
                tokenArguments = try TokenCommand.Arguments.parse(&remaining)
                configuration.command = .token(.list)
            default:
                throw ConfigurationError(
                    "unknown command '\(argument)' (serve, migrate, check, backup PATH, token add|list|revoke)")
            }
        }
        if let tokenArguments, case .token = configuration.command {
            configuration.command = .token(try tokenArguments.command(scope: scope))
        } else if scope != nil {
            throw ConfigurationError("--scope belongs to usersd token add NAME --scope SCOPE")
        }
        if configuration.socketPath != nil, configuration.listenAddress != nil {
            throw ConfigurationError("--socket and --listen both name a socket to serve on: choose one")
        }
        return configuration
    }

    public static var helpText: String {
        var text = """
            usersd — a user directory served over FastCGI behind nginx

            Usage: usersd [serve|migrate|check|backup PATH|token ...] [options]

            Commands:
              serve          serve FastCGI requests (default)
              migrate        apply pending database migrations and exit
              check          check configuration, the token file, database integrity, pending
                             migrations (and an nginx site file with --nginx FILE)
              backup PATH    write a consistent copy of the database to PATH while serving
              token add NAME --scope read|write|admin
                             make a new API token, print it (once) and add its hash to the
                             --auth-file (created 0600 when missing)
              token list     show the names and scopes in the --auth-file
              token revoke NAME
                             remove the token NAME from the --auth-file
                             (a serving usersd re-reads the file on SIGHUP)

            Options (each also as an environment variable):

            """
        for setting in settings {
            let flag = "\(setting.flag) \(setting.placeholder)"
            text += "  \(flag.padding(toLength: 26, withPad: " ", startingAt: 0)) [\(setting.environment)]\n"
            text += "      \(setting.help)\n"
        }
        text += "  --help                      show this text\n  --version                   print the version\n"
        return text
    }
}
