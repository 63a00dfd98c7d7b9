import Glibc

/// One serving process per database file.
///
/// `usersd serve` takes an exclusive `flock` on the database file before it opens it
/// and holds it until the process ends; a second `serve` on the same file finds it
/// taken and refuses to start. Two processes serving one file would each re-queue the
/// other's running tasks at start-up and serve the other's changes stale from their
/// caches. `backup` and `check` only read the file and take no lock, so they work
/// beside a serving process.
///
/// `flock` locks and the POSIX record locks SQLite uses are independent on Linux, so
/// this lock never interferes with SQLite's own locking. The descriptor is never
/// closed: closing any descriptor of a file drops every POSIX lock the process holds
/// on it (SQLite's "How To Corrupt An SQLite Database File", §2.2), so it stays open
/// for the life of the process, and the kernel releases the lock when the process
/// exits, however it exits.
enum ServingLock {
    enum Failure: Error, Sendable, Equatable {
        /// Another process holds the lock: it serves this database.
        case heldByAnotherProcess
        /// The file could not be opened or created (the message says why).
        case cannotOpen(String)
    }

    /// Takes the lock on `path`, creating the file (empty: SQLite initialises an empty
    /// file as a new database) when it does not exist yet.
    static func acquire(path: String) throws(Failure) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotOpen(String(cString: strerror(errno))) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let code = errno
            // Closing this descriptor drops no POSIX lock: SQLite has not opened the file yet.
            close(fd)
            if code == EWOULDBLOCK { throw .heldByAnotherProcess }
            throw .cannotOpen(String(cString: strerror(code)))
        }
    }
}
