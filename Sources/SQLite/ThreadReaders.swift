import Foundation

/// Per-thread read-only connections, keyed by database.
///
/// Stored in Foundation's `Thread.current.threadDictionary`, which belongs to the
/// current thread alone, so the non-Sendable `Connection` never crosses threads.
enum ThreadReaders {
    private static let key = "usersd.readers"

    /// A box so the dictionary entry can hold a non-Sendable value.
    private final class Slot {
        var connections: [Int: Connection] = [:]
    }

    static func connection(for database: Database) -> Connection? {
        (Thread.current.threadDictionary[key] as? Slot)?.connections[database.serial]
    }

    static func attach(_ connection: Connection, for database: Database) {
        let slot: Slot
        if let existing = Thread.current.threadDictionary[key] as? Slot {
            slot = existing
        } else {
            slot = Slot()
            Thread.current.threadDictionary[key] = slot
        }
        slot.connections[database.serial] = connection
    }

    static func detach(for database: Database) {
        (Thread.current.threadDictionary[key] as? Slot)?.connections[database.serial] = nil
    }
}
