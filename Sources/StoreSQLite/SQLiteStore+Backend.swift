public import Metrics
import SQLite
public import Store

/// What running the SQLite database takes besides the store protocols: migrations,
/// the integrity check, per-thread read connections, closing, figures, backups.
extension SQLiteStore {
    public func migrate() async throws -> [Int] {
        try await Migrations.migrate(database)
    }

    public func pendingMigrations() async throws -> [(version: Int, name: String)] {
        try await Migrations.pending(database).map { ($0.version, $0.name) }
    }

    /// `PRAGMA integrity_check`: `ok`, or the first problem SQLite found.
    public func integrityCheck() async throws -> String {
        try await database.read { try $0.prepare("PRAGMA integrity_check").firstText() ?? "?" }
    }

    /// Gives the worker thread its own read-only connection (WAL readers never block
    /// the writer), so its reads run inline, without a thread hop.
    public func workerThreadStarted() {
        database.attachReaderToCurrentThread()
    }

    public func workerThreadStopping() {
        database.detachReaderFromCurrentThread()
    }

    public func close() {
        database.close()
    }

    /// The writer's transactions and the WAL checkpoints.
    public func render(into text: inout PrometheusText) async {
        let writes = database.writeStatistics
        text.help("usersd_db_write_transactions_total", "Write transactions (group commits).", type: "counter")
        text.sample("usersd_db_write_transactions_total", [:], Double(writes.batches))
        text.help(
            "usersd_db_write_transactions_failed_total", "Write transactions that could not commit.", type: "counter")
        text.sample("usersd_db_write_transactions_failed_total", [:], Double(writes.failedBatches))
        text.help("usersd_db_writes_total", "Writes carried by those transactions.", type: "counter")
        text.sample("usersd_db_writes_total", [:], Double(writes.jobs))
        text.help(
            "usersd_db_write_transaction_seconds", "Time from BEGIN IMMEDIATE to the end of COMMIT.", type: "histogram")
        text.histogram("usersd_db_write_transaction_seconds", [:], writes.transactionSeconds)
        let checkpoints = database.checkpointStatistics
        text.help("usersd_db_checkpoints_total", "WAL checkpoint passes, by the thread that ran them.", type: "counter")
        text.sample("usersd_db_checkpoints_total", ["thread": "checkpointer"], Double(checkpoints.backgroundPasses))
        text.sample("usersd_db_checkpoints_total", ["thread": "writer"], Double(checkpoints.writerPasses))
        text.help("usersd_db_wal_pages", "Pages in the WAL after the last commit.", type: "gauge")
        text.sample("usersd_db_wal_pages", [:], Double(checkpoints.walPages))
        text.help("usersd_db_checkpoint_seconds", "Time each pass of the checkpoint thread took.", type: "histogram")
        text.histogram("usersd_db_checkpoint_seconds", [:], checkpoints.backgroundSeconds)
    }

    /// Copies the usersd database at `path` (which may be serving) into a new file
    /// `destination`, readable by its owner only; see `Connection.backup(to:)`. A
    /// missing database, or a file that is not a usersd database, is an error and
    /// nothing is created.
    public static func backup(
        databaseAt path: String, to destination: String, busyTimeoutMilliseconds: Int32
    ) throws(BackupFailure) {
        do throws(BackupError) {
            let source = try Connection.backupSource(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            let applied: Set<Int>
            do {
                applied = try Migrations.appliedVersions(source)
            } catch let error as SQLiteError where error.isBusy {
                throw BackupError(.busy, "cannot read database \(path): \(error.message)")
            } catch {
                throw BackupError(.source, "cannot read database \(path): \(error)")
            }
            guard !applied.isEmpty else {
                throw BackupError(.source, "\(path) is not a usersd database (no migrations applied)")
            }
            _ = try source.backup(to: destination)
        } catch {
            let kind: BackupFailure.Kind =
                switch error.kind {
                case .source: .source
                case .destination: .destination
                case .busy: .busy
                case .copy: .copy
                }
            throw BackupFailure(kind, error.message)
        }
    }
}
