import Store
import StoreSQLite

/// Opens the database backend the settings name: the one place in the app that names
/// a backend; everything else sees the store protocols.
enum Backends {
    /// `usersd backup PATH`: a consistent copy of the database into a new file.
    static func backup(_ configuration: Configuration, to destination: String) throws(BackupFailure) {
        try SQLiteStore.backup(
            databaseAt: configuration.databasePath, to: destination,
            busyTimeoutMilliseconds: Int32(configuration.busyTimeoutMilliseconds))
    }

    /// Opens it (creating an SQLite file and its directory when missing). For serving,
    /// a backend that allows one serving process throws `DatabaseInUse` when another
    /// serves the database.
    @available(*, noasync, message: "opens files and connections")
    static func open(_ configuration: Configuration, forServing: Bool) throws -> any StoreBackend {
        try SQLiteStore.open(
            SQLiteStore.Settings(
                path: configuration.databasePath, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds,
                synchronous: configuration.synchronous, welcomeMaxAttempts: configuration.taskMaxAttempts
            ),
            forServing: forServing
        )
    }
}
