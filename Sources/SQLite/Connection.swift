internal import CSQLite

/// `SQLITE_TRANSIENT` is a macro cast that Swift cannot import.
nonisolated(unsafe) let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection: open, configure, prepare (with a statement cache), execute.
///
/// Not `Sendable`: a connection belongs to exactly one thread (a `DatabaseThread` or
/// a FastCGI worker's reader slot) and is only used there. That is why it is opened
/// with `SQLITE_OPEN_NOMUTEX`.
public final class Connection {
    let handle: OpaquePointer
    private var cache: [StatementKey: Statement] = [:]
    public let path: String
    /// Whether a `DatabaseThread` batch is running on this connection, and the sums
    /// its jobs deferred to the commit (see `CommitTally`).
    var isRunningBatch = false
    var pendingTallies: [PendingTally] = []
    /// Kept alive for as long as SQLite may call it (see `onWALCommit`).
    private var walHook: WALHookBox?

    /// Process-wide SQLite settings, applied once before the first connection opens;
    /// `false` when they could not take effect (`sqlite3_config` works only before
    /// SQLite initialises, so other code in the process may have been first). usersd
    /// never reads SQLite's memory statistics, so they are off: counting them takes a
    /// global mutex on every allocation.
    public static let processSettingsApplied: Bool = {
        usersd_sqlite3_disable_memstatus() == SQLITE_OK
            && usersd_sqlite3_statement_journal_spill(Int32(statementJournalSpillBytes)) == SQLITE_OK
    }()

    /// A statement that changes many rows inside a transaction, and every job of a
    /// group commit that runs again with savepoints (`DatabaseThread.runBatch`), keep
    /// a sub-journal: the original of each page changed (about 50 KiB per user created). SQLite
    /// keeps a sub-journal in memory up to this size, in one allocation; past it (by
    /// default 64 KiB) it spills to a new file in /var/tmp, created, written and
    /// unlinked per transaction. `temp_store = MEMORY` would keep it in memory too,
    /// but in 1 KiB chunks: one `malloc` per KiB.
    ///
    /// Not more: with 192 KiB or more, Debian's SQLite 3.40.1 fails a transaction whose
    /// statement journal outgrows the memory and spills ("database or disk is full",
    /// SQLITE_FULL; found with a migration over 200,000 tasks, reproduced outside
    /// usersd with a large UPDATE or DELETE inside BEGIN … COMMIT). 128 KiB spills
    /// correctly, and a group commit's statements and savepoints stay below it (each
    /// sub-journal is emptied when its statement ends or its savepoint is released). The test
    /// `LargeMigrationTests` runs such a transaction.
    private static let statementJournalSpillBytes = 128 << 10

    /// Opens (creating when `readOnly` is false) the database at `path`.
    public init(path: String, readOnly: Bool = false, busyTimeoutMilliseconds: Int32 = 5000) throws(SQLiteError) {
        _ = Self.processSettingsApplied
        var pointer: OpaquePointer?
        let flags =
            (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
            | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let code = sqlite3_open_v2(path, &pointer, flags, nil)
        guard code == SQLITE_OK, let pointer else {
            let message = pointer.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open database"
            sqlite3_close_v2(pointer)
            throw SQLiteError(extendedCode: code, message: message)
        }
        self.handle = pointer
        self.path = path
        sqlite3_extended_result_codes(pointer, 1)
        sqlite3_busy_timeout(pointer, busyTimeoutMilliseconds)
        try execute("PRAGMA foreign_keys = ON")
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Switches to WAL and checks that SQLite really did (it returns the resulting mode).
    public func enableWAL(synchronous: String) throws(SQLiteError) {
        let mode = try prepare("PRAGMA journal_mode = WAL").firstText()
        guard mode?.lowercased() == "wal" else {
            throw SQLiteError(
                extendedCode: SQLITE_ERROR, message: "could not enable WAL (journal_mode is \(mode ?? "?"))")
        }
        try execute("PRAGMA synchronous = \(synchronous)")
    }

    func error(_ code: Int32) -> SQLiteError {
        SQLiteError(
            extendedCode: sqlite3_extended_errcode(handle) == 0 ? code : sqlite3_extended_errcode(handle),
            message: String(cString: sqlite3_errmsg(handle)))
    }

    /// Runs one or more statements without results (`BEGIN`, DDL, pragmas).
    public func execute(_ sql: String) throws(SQLiteError) {
        let code = sqlite3_exec(handle, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw error(code) }
    }

    /// Prepares a statement that is finalized when released.
    public func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        var pointer: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, 0, &pointer, nil)
        guard code == SQLITE_OK, let pointer else { throw error(code) }
        return Statement(handle: pointer, connection: self)
    }

    /// A prepared statement from this connection's cache, reset and with bindings cleared.
    public func cached(_ sql: String) throws(SQLiteError) -> Statement {
        let key = StatementKey(sql: sql)
        if let statement = cache[key] {
            statement.reset()
            return statement
        }
        var pointer: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard code == SQLITE_OK, let pointer else { throw error(code) }
        let statement = Statement(handle: pointer, connection: self)
        cache[key] = statement
        return statement
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
    public var changes: Int { Int(sqlite3_changes(handle)) }
    /// Rows changed by every INSERT, UPDATE and DELETE that completed on this
    /// connection (a statement that failed and was undone adds nothing).
    var totalChanges: Int64 { sqlite3_total_changes64(handle) }
    public var isInTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Calls `hook` after every commit on this connection with the WAL's size in
    /// pages. Replaces SQLite's own automatic checkpoint (which is itself such a
    /// hook): the caller decides when and where the WAL is checkpointed.
    public func onWALCommit(_ hook: @escaping (_ connection: Connection, _ walPages: Int) -> Void) {
        let box = WALHookBox(connection: self, hook: hook)
        walHook = box
        sqlite3_wal_hook(
            handle,
            { context, _, _, pages in
                let box = Unmanaged<WALHookBox>.fromOpaque(context!).takeUnretainedValue()
                box.hook(box.connection, Int(pages))
                return SQLITE_OK
            }, Unmanaged.passUnretained(box).toOpaque())
    }

    /// Copies as many WAL frames into the database file as it can without waiting
    /// for readers or the writer (`SQLITE_CHECKPOINT_PASSIVE`). Returns the WAL's
    /// size and how many of its frames are now in the database.
    @discardableResult
    public func checkpointPassive() throws(SQLiteError) -> (walPages: Int, checkpointed: Int) {
        var log: Int32 = 0
        var done: Int32 = 0
        let code = sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &done)
        guard code == SQLITE_OK else { throw error(code) }
        return (Int(log), Int(done))
    }
}

@available(*, unavailable)
extension Connection: Sendable {}

/// The closure behind a connection's WAL hook; SQLite holds an unretained pointer
/// to it, and the connection holds the box (which does not hold the connection back).
private final class WALHookBox {
    unowned let connection: Connection
    let hook: (Connection, Int) -> Void
    init(connection: Connection, hook: @escaping (Connection, Int) -> Void) {
        self.connection = connection
        self.hook = hook
    }
}

/// The statement cache's key: the SQL text, hashed by its length and a few 8-byte
/// words from its start and end only. Hashing whole statements (a few hundred bytes
/// each, about a dozen lookups per `POST /add-user`) with `Hasher` cost more than
/// the rest of the lookup. Two statements that agree in length and in those words
/// just share a bucket: equality still compares the whole text.
struct StatementKey: Hashable {
    let sql: String

    static func == (left: StatementKey, right: StatementKey) -> Bool {
        left.sql == right.sql
    }

    func hash(into hasher: inout Hasher) {
        let utf8 = sql.utf8
        let mixed = utf8.withContiguousStorageIfAvailable { bytes -> UInt64 in
            let raw = UnsafeRawBufferPointer(bytes)
            var mix = UInt64(raw.count)
            // Up to 4 words from the start and 4 from the end (overlapping when short).
            if raw.count >= 8 {
                for word in 0..<min(4, raw.count / 8) {
                    mix = (mix ^ raw.loadUnaligned(fromByteOffset: word * 8, as: UInt64.self)) &* 0x100_0000_01b3
                    mix =
                        (mix ^ raw.loadUnaligned(fromByteOffset: raw.count - 8 - word * 8, as: UInt64.self))
                        &* 0x100_0000_01b3
                }
            } else {
                for byte in raw { mix = (mix ^ UInt64(byte)) &* 0x100_0000_01b3 }
            }
            return mix
        }
        if let mixed {
            hasher.combine(mixed)
        } else {
            hasher.combine(sql)
        }
    }
}
