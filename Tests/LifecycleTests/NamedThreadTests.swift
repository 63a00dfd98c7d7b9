import Dispatch
import Lifecycle
import Synchronization
import Testing

@Suite struct NamedThreadTests {
    /// What the kernel reports for a thread started with `name`.
    private func kernelName(of name: String) -> String {
        let seen = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        NamedThread.start(name) {
            seen.withLock { $0 = NamedThread.currentName }
            done.signal()
        }
        done.wait()
        return seen.withLock { $0 } ?? "<none>"
    }

    @Test func aStartedThreadCarriesItsNameInTheKernel() {
        #expect(kernelName(of: "usersd-test") == "usersd-test")
    }

    @Test func aLongNameIsCutToTheKernelsFifteenBytes() {
        #expect(kernelName(of: "usersd-a-very-long-name") == "usersd-a-very-l")
    }

    @Test func theCallingThreadCanBeRenamed() {
        let seen = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        NamedThread.start("usersd-before") {
            NamedThread.setCurrentName("usersd-after")
            seen.withLock { $0 = NamedThread.currentName }
            done.signal()
        }
        done.wait()
        #expect(seen.withLock { $0 } == "usersd-after")
    }

    /// The policies a thread reports after asking for `steps` in turn (0 SCHED_OTHER,
    /// 3 SCHED_BATCH), with the result of each request.
    private func policies(after steps: [ThreadScheduling]) -> [(code: Int32, policy: Int32)] {
        let seen = Mutex<[(code: Int32, policy: Int32)]>([])
        let done = DispatchSemaphore(value: 0)
        NamedThread.start("usersd-sched") {
            var results: [(code: Int32, policy: Int32)] = [(0, NamedThread.currentSchedulingPolicy)]
            for step in steps {
                let code = NamedThread.setCurrentScheduling(step)
                results.append((code, NamedThread.currentSchedulingPolicy))
            }
            seen.withLock { $0 = results }
            done.signal()
        }
        done.wait()
        return seen.withLock { $0 }
    }

    @Test func aThreadMovesToBatchSchedulingAndBack() {
        let results = policies(after: [.batch, .normal])
        #expect(results.map(\.code) == [0, 0, 0])
        #expect(results.map(\.policy) == [0, 3, 0])
    }

    @Test func schedulingChangesOnlyTheCallingThread() {
        let before = NamedThread.currentSchedulingPolicy
        _ = policies(after: [.batch])
        #expect(NamedThread.currentSchedulingPolicy == before)
    }
}
