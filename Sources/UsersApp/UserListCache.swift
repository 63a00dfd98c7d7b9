import Basics
import Synchronization

/// The complete `GET /users` answer for small tables, kept until the next user write.
///
/// Correctness: the store's `changeVersion` grows after every user write commits and
/// before it is acknowledged. An entry is tagged with the version read *before* its
/// rows were read, and used only while the version is unchanged; so a request that
/// starts after a write was acknowledged can never get an answer from before it.
/// An entry also expires after `lifetimeNanoseconds`, so changes made by another
/// program (usersd is meant to be the only writer) show within that time.
final class UserListCache: Sendable {
    /// Tables up to this many rows are cached (~64 bytes each); bigger ones stream.
    static let maximumRows = 5000

    private struct Entry {
        let version: UInt64
        let body: [UInt8]
        let expires: UInt64
    }

    private let entry = Mutex<Entry?>(nil)
    let lifetimeNanoseconds: UInt64

    init(lifetimeNanoseconds: UInt64 = 2_000_000_000) {
        self.lifetimeNanoseconds = lifetimeNanoseconds
    }

    func body(at version: UInt64) -> [UInt8]? {
        let now = MonotonicClock.coarseNanoseconds()
        return entry.withLock { entry in
            guard let current = entry, current.version == version, current.expires > now else { return nil }
            return current.body
        }
    }

    func store(_ body: [UInt8], at version: UInt64) {
        let expires = MonotonicClock.coarseNanoseconds() &+ lifetimeNanoseconds
        entry.withLock { entry in
            if (entry?.version ?? 0) <= version { entry = Entry(version: version, body: body, expires: expires) }
        }
    }
}
