import Glibc

/// Per-thread read-only connections, keyed by database.
///
/// Kept in a pthread key: a plain pointer lookup on every read (Foundation's thread
/// dictionary hashes and locks). The slot belongs to its thread alone, so the
/// non-Sendable `Connection` never crosses threads.
enum ThreadReaders {
    /// A box so the key can hold non-Sendable connections.
    private final class Slot {
        var connections: [Int: Connection] = [:]
        /// Databases this thread wants a reader of but found none free.
        var waiting: Set<Int> = []
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // The destructor releases the slot (and closes its connections) when a thread
        // exits without detaching.
        pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<AnyObject>.fromOpaque(pointer).release() }
        }
        return key
    }()

    private static func slot(create: Bool) -> Slot? {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? Slot
        }
        guard create else { return nil }
        let slot = Slot()
        pthread_setspecific(key, Unmanaged<AnyObject>.passRetained(slot).toOpaque())
        return slot
    }

    static func connection(for database: Database) -> Connection? {
        slot(create: false)?.connections[database.serial]
    }

    static func attach(_ connection: Connection, for database: Database) {
        guard let slot = slot(create: true) else { return }
        slot.connections[database.serial] = connection
        slot.waiting.remove(database.serial)
    }

    static func isWaiting(for database: Database) -> Bool {
        slot(create: false)?.waiting.contains(database.serial) ?? false
    }

    static func setWaiting(_ waiting: Bool, for database: Database) {
        if waiting {
            slot(create: true)?.waiting.insert(database.serial)
        } else {
            slot(create: false)?.waiting.remove(database.serial)
        }
    }

    @discardableResult
    static func detach(for database: Database) -> Connection? {
        slot(create: false)?.connections.removeValue(forKey: database.serial)
    }
}
