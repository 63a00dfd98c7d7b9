import Postgres
import Store
import StorePostgres
import StoreSQLite

/// Opens the database backend the settings name: the one place in the app that names
/// a backend; everything else sees the store protocols.
enum Backends {
    /// `usersd backup PATH`: a consistent copy of the database into a new file (SQLite;
    /// a PostgreSQL database is backed up with PostgreSQL's tools: pg_dump, pg_basebackup).
    static func backup(_ configuration: Configuration, to destination: String) throws(BackupFailure) {
        if isPostgres(configuration) {
            throw BackupFailure(
                .source,
                "usersd backup copies SQLite files; back up PostgreSQL with pg_dump or pg_basebackup "
                    + "(database \(describe(configuration)))")
        }
        try SQLiteStore.backup(
            databaseAt: configuration.databasePath, to: destination,
            busyTimeoutMilliseconds: Int32(configuration.busyTimeoutMilliseconds))
    }

    /// Opens it: a `postgresql://` or `postgres://` URI is PostgreSQL (handed to libpq
    /// unchanged), anything else an SQLite file (created with its directory when
    /// missing). For serving, a backend that allows one serving process throws
    /// `DatabaseInUse` when another serves the database; PostgreSQL is served by many.
    @available(*, noasync, message: "opens files and connections")
    static func open(_ configuration: Configuration, forServing: Bool) throws -> any StoreBackend {
        if isPostgres(configuration) {
            var settings = PostgresStore.Settings(uri: configuration.databasePath)
            settings.poolSize = forServing ? configuration.databasePool : 1
            settings.welcomeMaxAttempts = configuration.taskMaxAttempts
            return PostgresStore(settings: settings)
        }
        return try SQLiteStore.open(
            SQLiteStore.Settings(
                path: configuration.databasePath, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds,
                synchronous: configuration.synchronous, welcomeMaxAttempts: configuration.taskMaxAttempts
            ),
            forServing: forServing
        )
    }

    static func isPostgres(_ configuration: Configuration) -> Bool {
        ConnectionURI.isPostgres(configuration.databasePath)
    }

    /// The database as logs and messages show it: a URI without its password.
    static func describe(_ configuration: Configuration) -> String {
        isPostgres(configuration) ? ConnectionURI.redacted(configuration.databasePath) : configuration.databasePath
    }
}
