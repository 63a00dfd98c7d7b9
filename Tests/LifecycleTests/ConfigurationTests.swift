import Lifecycle
import Testing

@Suite struct ConfigurationTests {
    @Test func workerSchedulingIsBatchUnlessSetOtherwise() throws {
        #expect(try Configuration.parse(["serve"], environment: [:]).workerScheduling == .batch)
        #expect(try Configuration.parse(["serve", "--worker-scheduling", "normal"], environment: [:]).workerScheduling == .normal)
        #expect(try Configuration.parse(["serve"], environment: ["USERSD_WORKER_SCHEDULING": "Normal"]).workerScheduling == .normal)
        // The flag wins over its environment twin.
        let both = try Configuration.parse(["serve", "--worker-scheduling", "batch"],
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
