import Basics
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
