public import Foundation
public import SQLite
public import StoreSQLite

/// A fresh SQLite database in a temporary directory of its own, removed (with the
/// directory) when the value goes away: one per test, so tests never share data.
public final class TemporaryDatabase: Sendable {
    public let directory: URL
    public let database: Database

    /// Opens a new, empty database (no migrations applied).
    public init(name: String = "usersd-test") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        database = try Database(options: DatabaseOptions(path: directory.appendingPathComponent("users.sqlite3").path))
    }

    public var path: String { database.options.path }

    /// The database migrated to the current schema, as a store.
    public func migratedStore(welcomeMaxAttempts: Int = 5) async throws -> SQLiteStore {
        let store = SQLiteStore(database: database, welcomeMaxAttempts: welcomeMaxAttempts)
        _ = try await store.migrate()
        return store
    }

    deinit {
        database.close()
        try? FileManager.default.removeItem(at: directory)
    }
}
