import Foundation
import Glibc
import Postgres
import Synchronization

/// A private PostgreSQL cluster for the unit tests of one test process, started on
/// first use with `scripts/pg-cluster.sh` (as the `postgres` user under root, data,
/// socket and log in a temporary directory) and stopped when the process exits. Each
/// test takes a database of its own (`makeDatabase()`), so tests never share data.
public final class PostgresCluster: Sendable {
    public let directory: String
    private static let started = Mutex<Result<PostgresCluster, PostgresClusterError>?>(nil)
    private static let databaseSerial = Atomic<Int>(0)

    private init(directory: String) {
        self.directory = directory
    }

    /// The cluster of this test process, started on first use.
    public static func shared() throws -> PostgresCluster {
        try started.withLock { started -> Result<PostgresCluster, PostgresClusterError> in
            if let started { return started }
            let result = Result { () throws(PostgresClusterError) -> PostgresCluster in try start() }
            started = result
            return result
        }.get()
    }

    /// The repository's `scripts/pg-cluster.sh`.
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/pg-cluster.sh").path
    }

    private static func start() throws(PostgresClusterError) -> PostgresCluster {
        let directory = "/tmp/usersd-pg-unit-\(getpid())-\(UUID().uuidString.prefix(8))"
        try run(["start", directory], environment: ["PG_OWNER_PID": String(getpid())])
        let cluster = PostgresCluster(directory: directory)
        atexit {
            guard case .success(let cluster)? = PostgresCluster.started.withLock({ $0 }) else { return }
            try? PostgresCluster.run(["stop", cluster.directory])
            try? FileManager.default.removeItem(atPath: cluster.directory)
        }
        return cluster
    }

    /// Runs the cluster script with `arguments` (through `system(3)`, which waits for
    /// its child itself: Foundation's `Process` left the script unreaped here).
    public static func run(_ arguments: [String], environment: [String: String] = [:]) throws(PostgresClusterError) {
        let errorPath = NSTemporaryDirectory() + "pg-cluster-\(UUID().uuidString).err"
        defer { try? FileManager.default.removeItem(atPath: errorPath) }
        let assignments = environment.map { "\($0.key)=\(quoted($0.value))" }.joined(separator: " ")
        let words = ([script] + arguments).map(quoted).joined(separator: " ")
        let status = system("\(assignments) /bin/bash \(words) >/dev/null 2>\(quoted(errorPath)) </dev/null")
        guard status == 0 else {
            let output = FileManager.default.contents(atPath: errorPath) ?? Data()
            throw PostgresClusterError(
                "pg-cluster.sh \(arguments.joined(separator: " ")) failed (\(status)): "
                    + String(decoding: output, as: UTF8.self))
        }
    }

    private static func quoted(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The URI of database `name` in this cluster.
    public func uri(database name: String) -> String {
        "postgresql:///\(name)?host=\(directory)&port=5432&user=postgres"
    }

    /// A new, empty database; returns its URI.
    public func makeDatabase(_ prefix: String = "t") throws -> String {
        let name = "\(prefix)_\(getpid())_\(Self.databaseSerial.add(1, ordering: .relaxed).newValue)"
        let admin = try PostgresConnection(uri: uri(database: "postgres"))
        try admin.execute("CREATE DATABASE \(name)")
        return uri(database: name)
    }
}

public struct PostgresClusterError: Error, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
