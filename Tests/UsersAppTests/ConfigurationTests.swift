import Basics
import Foundation
import Lifecycle
import Logging
import Testing

@testable import UsersApp

@Suite struct ConfigurationTests {
    @Test func workerSchedulingIsBatchUnlessSetOtherwise() throws {
        #expect(try Configuration.parse(["serve"], environment: [:]).workerScheduling == .batch)
        #expect(
            try Configuration.parse(["serve", "--worker-scheduling", "normal"], environment: [:]).workerScheduling
                == .normal)
        #expect(
            try Configuration.parse(["serve"], environment: ["USERSD_WORKER_SCHEDULING": "Normal"]).workerScheduling
                == .normal)
        // The flag wins over its environment twin.
        let both = try Configuration.parse(
            ["serve", "--worker-scheduling", "batch"],
            environment: ["USERSD_WORKER_SCHEDULING": "normal"])
        #expect(both.workerScheduling == .batch)
    }

    @Test func anUnknownSchedulingPolicyIsOneClearError() {
        for value in ["fifo", "", "idle", "batch "] {
            #expect(throws: ConfigurationError("--worker-scheduling: '\(value)' is not batch or normal")) {
                try Configuration.parse(["serve", "--worker-scheduling", value], environment: [:])
            }
        }
    }
}

@Suite struct HardeningSettingsTests {
    @Test func metricsAllowDefaultsToLoopbackAndParsesLists() throws {
        #expect(try Configuration.parse(["serve"], environment: [:]).metricsAllow == AddressRange.loopback)
        let set = try Configuration.parse(["serve", "--metrics-allow", "10.0.0.0/8,::1"], environment: [:])
        #expect(set.metricsAllow == [AddressRange("10.0.0.0/8")!, AddressRange("::1")!])
        let fromEnvironment = try Configuration.parse([], environment: ["USERSD_METRICS_ALLOW": "192.0.2.1"])
        #expect(fromEnvironment.metricsAllow == [AddressRange("192.0.2.1")!])
        #expect(throws: ConfigurationError.self) {
            try Configuration.parse(["--metrics-allow", "everyone"], environment: [:])
        }
        #expect(throws: ConfigurationError.self) { try Configuration.parse(["--metrics-allow", ""], environment: [:]) }
    }

    @Test func idleThreadsAndWriteTimeout() throws {
        let defaults = try Configuration.parse([], environment: [:])
        #expect(defaults.idleThreads == 64 && defaults.writeTimeoutSeconds == 30)
        let set = try Configuration.parse(["--idle-threads", "0", "--write-timeout", "1.5"], environment: [:])
        #expect(set.idleThreads == 0 && set.writeTimeoutSeconds == 1.5)
        #expect(throws: ConfigurationError.self) {
            try Configuration.parse(["--idle-threads", "-1"], environment: [:])
        }
        #expect(throws: ConfigurationError("--write-timeout: '0' is not a number of seconds above 0 and at most 86400"))
        {
            try Configuration.parse(["--write-timeout", "0"], environment: [:])
        }
    }
}

@Suite struct TCPListenSettingsTests {
    @Test func listenTakesIPv4AndBracketedIPv6Addresses() throws {
        #expect(
            try Configuration.parse(["--listen", "127.0.0.1:9000"], environment: [:]).listenAddress
                == TCPAddress(host: "127.0.0.1", port: 9000))
        #expect(
            try Configuration.parse([], environment: ["USERSD_LISTEN": "[::1]:9001"]).listenAddress
                == TCPAddress(host: "::1", port: 9001))
        for bad in ["localhost:9000", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9000", "[::1]9000", ":9000"] {
            #expect(throws: ConfigurationError.self, "\(bad)") {
                try Configuration.parse(["--listen", bad], environment: [:])
            }
        }
        #expect(throws: ConfigurationError("--socket and --listen both name a socket to serve on: choose one")) {
            try Configuration.parse(["--socket", "/tmp/x.sock", "--listen", "127.0.0.1:9000"], environment: [:])
        }
    }

    @Test func allowFromDefaultsToLoopback() throws {
        #expect(try Configuration.parse([], environment: [:]).allowFrom == AddressRange.loopback)
        #expect(
            try Configuration.parse(["--allow-from", "10.0.0.0/8"], environment: [:]).allowFrom
                == [AddressRange("10.0.0.0/8")!])
        #expect(throws: ConfigurationError.self) { try Configuration.parse(["--allow-from", "any"], environment: [:]) }
    }
}

/// The parser as a whole: commands, flag spellings, precedence, files and bad input.
@Suite struct ConfigurationParsingTests {
    @Test func commandsAndTheirDefaults() throws {
        #expect(try Configuration.parse([], environment: [:]).command == .serve)
        #expect(try Configuration.parse(["migrate"], environment: [:]).command == .migrate)
        #expect(try Configuration.parse(["check", "--nginx", "/x.conf"], environment: [:]).nginxSiteFile == "/x.conf")
        #expect(try Configuration.parse(["backup", "/tmp/b.db"], environment: [:]).command == .backup("/tmp/b.db"))
        #expect(try Configuration.parse(["--db", "x.db", "--help"], environment: [:]).command == .help)
        #expect(try Configuration.parse(["-V"], environment: [:]).command == .version)
        #expect(throws: ConfigurationError("backup needs a destination: usersd backup PATH")) {
            try Configuration.parse(["backup"], environment: [:])
        }
        #expect(throws: ConfigurationError("unexpected argument 'check'")) {
            try Configuration.parse(["serve", "check"], environment: [:])
        }
        #expect(throws: ConfigurationError.self) { try Configuration.parse(["frobnicate"], environment: [:]) }
    }

    @Test func flagsWinOverTheEnvironmentWhichWinsOverDefaults() throws {
        let defaults = try Configuration.parse([], environment: [:])
        #expect(defaults.databasePath == "./data/users.sqlite3" && defaults.maxBodyBytes == 1_048_576)
        let environment = ["USERSD_DB": "/env.db", "USERSD_MAX_BODY": "2000", "STATE_DIRECTORY": "/var/lib/usersd"]
        let fromEnvironment = try Configuration.parse([], environment: environment)
        #expect(fromEnvironment.databasePath == "/env.db" && fromEnvironment.maxBodyBytes == 2000)
        let flagged = try Configuration.parse(["--db=/flag.db", "--max-body", "3000"], environment: environment)
        #expect(flagged.databasePath == "/flag.db" && flagged.maxBodyBytes == 3000)
        // Under systemd the state directory is the default home of the database.
        let state = try Configuration.parse([], environment: ["STATE_DIRECTORY": "/var/lib/usersd:/other"])
        #expect(state.databasePath == "/var/lib/usersd/users.sqlite3")
        // An empty environment value counts as unset.
        #expect(try Configuration.parse([], environment: ["USERSD_DB": ""]).databasePath == "./data/users.sqlite3")
    }

    @Test func badValuesAreOneClearLineNamingTheSetting() {
        let cases: [([String], [String: String], String)] = [
            (["--max-body", "0"], [:], "--max-body: '0' is not a whole number in 1...1073741824"),
            (["--db"], [:], "--db needs a value (PATH)"),
            (["--db", ""], [:], "--db must not be empty"),
            (["--nope", "1"], [:], "unknown option '--nope' (see usersd --help)"),
            (["--synchronous", "off"], [:], "--synchronous: 'off' is not normal or full"),
            (["--log-level", "loud"], [:], "--log-level: 'loud' is not one of debug, info, warning, error"),
            (["--socket-mode", "999"], [:], "--socket-mode: '999' is not an octal mode like 0660"),
            (["--shutdown-grace", "-1"], [:], "--shutdown-grace: '-1' is not a number of seconds in 0...86400"),
            (
                [], ["USERSD_TASK_CONCURRENCY": "0"],
                "USERSD_TASK_CONCURRENCY: --task-concurrency: '0' is not a whole number in 1...1024"
            ),
        ]
        for (arguments, environment, message) in cases {
            #expect(throws: ConfigurationError(message), "\(arguments) \(environment)") {
                try Configuration.parse(arguments, environment: environment)
            }
        }
    }

    @Test func anEnvironmentFileSitsBelowTheRealEnvironment() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("usersd-env-\(UUID().uuidString)")
        try """
        # comment
        USERSD_LOG_LEVEL=warning
        USERSD_MAX_CONNECTIONS="77"
        USERSD_DB='/from-file.db'
        """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let parsed = try Configuration.parse(["--env-file", file.path], environment: ["USERSD_DB": "/real.db"])
        #expect(parsed.logLevel == .warning && parsed.maxConnections == 77)
        #expect(parsed.databasePath == "/real.db")
        #expect(throws: ConfigurationError("--env-file: cannot read /no/such/file")) {
            try Configuration.parse(["--env-file", "/no/such/file"], environment: [:])
        }
    }

    @Test func theHelpTextListsEverySettingWithItsVariable() {
        for setting in Configuration.settings {
            #expect(
                Configuration.helpText.contains(setting.flag) && Configuration.helpText.contains(setting.environment))
        }
    }
}
