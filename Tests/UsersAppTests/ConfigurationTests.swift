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
