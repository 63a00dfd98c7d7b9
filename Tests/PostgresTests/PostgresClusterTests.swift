import Foundation
import Glibc
import TestSupport
import Testing

/// The private cluster the tests start through `scripts/pg-cluster.sh`.
@Suite struct PostgresClusterTests {
    /// A test process starts the cluster through system(3) while other tests hold
    /// sockets; the server, its children and the watcher must hold none of the
    /// process's descriptors, or a socket closed by a test would never hang up its peer.
    @Test func aClusterHoldsNoneOfTheDescriptorsOfTheProcessThatStartedIt() throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)  // without O_CLOEXEC, as a careless test would open it
        defer { for end in ends { close(end) } }
        let pipeName = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(ends[0])")
        #expect(pipeName.hasPrefix("pipe:["))

        let directory = "/tmp/usersd-pg-cluster-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try PostgresCluster.run(["start", directory, "5433"], environment: ["PG_OWNER_PID": String(getpid())])
        defer {
            try? PostgresCluster.run(["stop", directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
        // The server runs (so the scan below looks at it).
        let postmaster = try String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8)
            .split(separator: "\n").first.flatMap { Int32($0) }
        #expect(postmaster.map { kill($0, 0) == 0 } == true)

        let holders = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init)
            .filter { $0 != getpid() }
            .filter { pid in
                let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
                return descriptors.contains {
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == pipeName
                }
            }
        #expect(holders.isEmpty, "processes holding the test's pipe: \(holders)")
    }
}
