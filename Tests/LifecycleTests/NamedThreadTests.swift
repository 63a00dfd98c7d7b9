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
}
