import Foundation
import Logging
import SQLite
import Store

extension SQLiteStore {
    /// How to open the database file.
    public struct Settings: Sendable {
        public var path: String
        /// How long a write waits for a lock another process holds before it fails.
        public var busyTimeoutMilliseconds: Int
        /// `NORMAL` or `FULL` (see `DatabaseOptions.synchronous`).
        public var synchronous: String
        public var welcomeMaxAttempts: Int

        public init(
            path: String, busyTimeoutMilliseconds: Int = 5000, synchronous: String = "NORMAL",
            welcomeMaxAttempts: Int = 5
        ) {
            self.path = path
            self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
            self.synchronous = synchronous
            self.welcomeMaxAttempts = welcomeMaxAttempts
        }
    }

    /// Opens the database, creating it and its directory when missing. For serving,
    /// the serving lock is taken first: a database another process serves throws
    /// `DatabaseInUse`, before anything is read or changed.
    public static func open(_ settings: Settings, forServing: Bool) throws -> SQLiteStore {
        let directory = (settings.path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        if forServing {
            do {
                try ServingLock.acquire(path: settings.path)
            } catch .heldByAnotherProcess {
                throw DatabaseInUse(
                    "\(settings.path) is already served by another usersd process; a database is served by one "
                        + "process at a time (backup and check work beside it)")
            }
        }
        var options = DatabaseOptions(path: settings.path)
        options.busyTimeoutMilliseconds = Int32(settings.busyTimeoutMilliseconds)
        options.synchronous = settings.synchronous
        let database = try Database(options: options)
        if !Connection.processSettingsApplied {
            Log.warning(
                "SQLite was initialised before usersd could configure it; savepoint journals may spill to temporary files"
            )
        }
        return SQLiteStore(database: database, welcomeMaxAttempts: settings.welcomeMaxAttempts)
    }
}
