import Store
import StoreSQLite

/// Opens the database backend the settings name: the one place in the app that names
/// a backend; everything else sees the store protocols.
enum Backends {
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
