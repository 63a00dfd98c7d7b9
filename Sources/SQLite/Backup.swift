internal import CSQLite
import Glibc

/// Why a backup failed. The command line gives each kind its own exit status.
public struct BackupError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The source is missing, unreadable, or not a database that can be copied.
        case source
        /// The destination exists (as anything, a symbolic link included) or cannot be created.
        case destination
        /// The source stayed locked beyond the busy timeout: trying again later may work.
        case busy
        /// Reading the source or writing the copy failed (I/O error, disk full).
        case copy
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

extension Connection {
    /// Opens an existing database read-only as the source of a backup.
    ///
    /// Nothing is ever created: the path must name a readable regular file, and
    /// SQLite opens it with `SQLITE_OPEN_READONLY` (without `SQLITE_OPEN_CREATE`, so a
    /// missing file is `SQLITE_CANTOPEN`, and no `-wal` or `-shm` appears beside it).
    /// One read checks that the file is a database at all.
    public static func backupSource(path: String, busyTimeoutMilliseconds: Int32) throws(BackupError) -> Connection {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw BackupError(.source, "cannot read database \(path): \(systemError(errno))")
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw BackupError(.source, "cannot read database \(path): not a regular file")
        }
        // SQLite reports a file it may not read as "unable to open database file";
        // open(2) says why.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw BackupError(.source, "cannot read database \(path): \(systemError(errno))")
        }
        close(descriptor)
        let connection: Connection
        do {
            connection = try Connection(path: path, readOnly: true, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            _ = try connection.prepare("SELECT count(*) FROM sqlite_master").firstInteger()
        } catch {
            throw BackupError(error.isBusy ? .busy : .source, "cannot read database \(path): \(error.message)")
        }
        return connection
    }

    /// Copies this database into a new file at `destination`; returns the pages copied.
    ///
    /// The copy is complete or absent, and never replaces anything:
    /// - It is written to a temporary file beside `destination`, created with
    ///   `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 whatever the umask (it holds
    ///   every row), then synced and hard-linked to `destination`. `link(2)` fails
    ///   with `EEXIST` when the name exists, a symbolic link included, so nothing is
    ///   clobbered and no planted link is followed. On any failure the temporary file
    ///   is removed.
    /// - All pages are copied by one `sqlite3_backup_step(backup, -1)`. SQLite's
    ///   backup API: "If the source database is modified by an external process or
    ///   via a database connection other than the one being used by the backup
    ///   operation, then the backup will be automatically restarted by the next call
    ///   to sqlite3_backup_step()". Copying in several steps never finishes under a
    ///   steady stream of writes; one step holds one read transaction, which in WAL
    ///   mode does not block writers, and copies the snapshot it sees.
    /// - The copy is written with `journal_mode = OFF` and `synchronous = OFF`: it is
    ///   not visible until it is complete and synced, so a journal beside it would
    ///   only be one more file to leave behind.
    @discardableResult
    public func backup(to destination: String) throws(BackupError) -> Int {
        var status = stat()
        if lstat(destination, &status) == 0 {
            let link = status.st_mode & S_IFMT == S_IFLNK ? " (a symbolic link)" : ""
            throw BackupError(.destination, "\(destination) already exists\(link)")
        }
        let file = try PartialBackupFile(beside: destination)
        do {
            let pages = try copyPages(into: file.path)
            try file.install(as: destination)
            return pages
        } catch {
            file.discard()
            throw error
        }
    }

    private func copyPages(into path: String) throws(BackupError) -> Int {
        var pointer: OpaquePointer?
        // No SQLITE_OPEN_CREATE: the file was created above, and must still be the file opened.
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let opened = sqlite3_open_v2(path, &pointer, flags, nil)
        defer { sqlite3_close_v2(pointer) }
        guard opened == SQLITE_OK, let target = pointer else {
            throw BackupError(.destination, "cannot open \(path): \(Self.describe(opened, on: pointer))")
        }
        for pragma in ["journal_mode = OFF", "synchronous = OFF"] {
            let code = sqlite3_exec(target, "PRAGMA \(pragma)", nil, nil, nil)
            guard code == SQLITE_OK else {
                throw BackupError(.copy, "cannot set up \(path): \(Self.describe(code, on: target))")
            }
        }
        guard let backup = sqlite3_backup_init(target, "main", handle, "main") else {
            throw BackupError(.copy, "cannot start the backup: \(Self.describe(sqlite3_errcode(target), on: target))")
        }
        let code = sqlite3_backup_step(backup, -1)
        let pages = Int(sqlite3_backup_pagecount(backup))
        sqlite3_backup_finish(backup)
        guard code == SQLITE_DONE else {
            let primary = code & 0xFF
            throw BackupError(
                primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? .busy : .copy,
                "copying failed: \(Self.describe(code, on: target))")
        }
        return pages
    }

    /// SQLite's message for `code` on `connection`, with the system's reason when an
    /// I/O call failed ("disk I/O error (No space left on device)").
    private static func describe(_ code: Int32, on connection: OpaquePointer?) -> String {
        guard let connection else { return String(cString: sqlite3_errstr(code)) }
        let message = String(cString: sqlite3_errmsg(connection))
        let system = sqlite3_system_errno(connection)
        return system == 0 ? message : "\(message) (\(systemError(system)))"
    }
}

/// The text of a system error number.
private func systemError(_ number: Int32) -> String {
    String(cString: strerror(number))
}

/// The file a backup is written to before it gets its name: `.NAME.XXXXXXXXXXXXXXXX.partial`
/// in the destination's directory, so the final `link(2)` stays on one file system.
///
/// Its descriptor is closed only after SQLite closed its own connection to the file:
/// closing any descriptor of a file releases every POSIX lock the process holds on it.
private struct PartialBackupFile {
    let path: String
    let directory: String
    private let descriptor: Int32

    init(beside destination: String) throws(BackupError) {
        let slash = destination.lastIndex(of: "/")
        let name = slash.map { String(destination[destination.index(after: $0)...]) } ?? destination
        directory = slash.map { $0 == destination.startIndex ? "/" : String(destination[..<$0]) } ?? "."
        guard !name.isEmpty, name != ".", name != ".." else {
            throw BackupError(.destination, "\(destination) does not name a file")
        }
        var attempts = 0
        while true {
            let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            let candidate = (directory == "/" ? "" : directory) + "/.\(name).\(random).partial"
            let opened = open(candidate, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if opened >= 0 {
                path = candidate
                descriptor = opened
                break
            }
            let number = errno
            attempts += 1
            guard number == EEXIST, attempts < 8 else {
                throw BackupError(.destination, "cannot create \(destination): \(systemError(number))")
            }
        }
        // The mode given to open(2) is masked by the umask; this one is not.
        guard fchmod(descriptor, 0o600) == 0 else {
            let number = errno
            discard()
            throw BackupError(.destination, "cannot restrict \(path) to its owner: \(systemError(number))")
        }
    }

    /// Syncs the file, gives it the name `destination` (failing if that exists), and
    /// drops the temporary name.
    func install(as destination: String) throws(BackupError) {
        guard fsync(descriptor) == 0 else {
            throw BackupError(.copy, "cannot sync \(path): \(systemError(errno))")
        }
        // SQLite opened the file by its name; the name must still be this file.
        var opened = stat()
        var named = stat()
        guard fstat(descriptor, &opened) == 0, lstat(path, &named) == 0,
            opened.st_dev == named.st_dev, opened.st_ino == named.st_ino
        else {
            throw BackupError(.destination, "\(path) was replaced while the backup was written")
        }
        guard link(path, destination) == 0 else {
            let number = errno
            if number == EEXIST {
                throw BackupError(.destination, "\(destination) already exists")
            }
            throw BackupError(.destination, "cannot create \(destination): \(systemError(number))")
        }
        unlink(path)
        close(descriptor)
        // The new name is durable once its directory is synced.
        let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    /// Removes the temporary file.
    func discard() {
        unlink(path)
        close(descriptor)
    }
}
