import Foundation
import Synchronization
import TestSupport
import Testing

@testable import SQLite
@testable import Store
@testable import StoreSQLite

/// The cache's protocol, step by step, without a database.
@Suite struct UserCacheTests {
    static func user(_ id: Int64, _ name: String) -> User {
        User(id: id, name: name, email: "u\(id)@x.io", createdAt: "t", updatedAt: "t")
    }

    static func token(_ lookup: UserCache.Lookup) -> UInt64? {
        if case .miss(let token) = lookup { return token }
        Issue.record("expected a miss, got \(lookup)")
        return nil
    }

    @Test func storesAReadAndServesItUntilAWriteBegins() throws {
        let cache = UserCache()
        let token = try #require(Self.token(cache.lookup(7)))
        cache.store(Self.user(7, "a"), token: token)
        #expect(cache.lookup(7) == .hit(Self.user(7, "a")))
        cache.beginWrite(7)
        #expect(cache.lookup(7) == .miss(token: nil))
        cache.endWrite(7)
        guard case .miss(.some) = cache.lookup(7) else {
            Issue.record("the entry must be gone after the write")
            return
        }
    }

    @Test func aRowReadBeforeAWriteIsNeverStoredAfterIt() throws {
        let cache = UserCache()
        // Reader misses and reads the old row; the write begins and commits meanwhile.
        let token = try #require(Self.token(cache.lookup(3)))
        cache.beginWrite(3)
        cache.endWrite(3)
        cache.store(Self.user(3, "old"), token: token)
        guard case .miss = cache.lookup(3) else {
            Issue.record("a row read before the write was stored after it")
            return
        }
        // Same while the write is still running.
        let second = try #require(Self.token(cache.lookup(3)))
        cache.beginWrite(3)
        cache.store(Self.user(3, "old"), token: second)
        #expect(cache.lookup(3) == .miss(token: nil))
        cache.endWrite(3)
        #expect(cache.count == 0)
    }

    @Test func overlappingWritesKeepTheIdPendingUntilTheLastEnds() throws {
        let cache = UserCache()
        cache.beginWrite(5)
        cache.beginWrite(5)
        cache.endWrite(5)
        #expect(cache.lookup(5) == .miss(token: nil))
        cache.endWrite(5)
        let token = try #require(Self.token(cache.lookup(5)))
        cache.store(Self.user(5, "new"), token: token)
        #expect(cache.lookup(5) == .hit(Self.user(5, "new")))
    }

    @Test func entriesExpire() throws {
        let cache = UserCache(lifetimeNanoseconds: 0)
        let token = try #require(Self.token(cache.lookup(9)))
        cache.store(Self.user(9, "a"), token: token)
        guard case .miss = cache.lookup(9) else {
            Issue.record("an expired entry was served")
            return
        }
    }

    @Test func staysWithinItsCapacityAndCanBeDisabled() throws {
        let cache = UserCache(capacity: 128)
        for id in Int64(1)...5_000 {
            let token = try #require(Self.token(cache.lookup(id)))
            cache.store(Self.user(id, "n"), token: token)
        }
        #expect(cache.count <= 128)
        #expect(cache.count >= 64)
        let disabled = UserCache(capacity: 0)
        let token = try #require(Self.token(disabled.lookup(1)))
        disabled.store(Self.user(1, "n"), token: token)
        #expect(disabled.count == 0)
    }
}

/// The cache inside the store, against a real database: no read that starts after a
/// write was acknowledged returns the row from before it.
extension SQLiteStoreTests {
    @Test func readsAreServedFromTheCacheAndWritesReplaceThem() async throws {
        let user = try await store.createUser(name: "v0", email: "c@x.io").user
        #expect(try await store.user(id: user.id)?.name == "v0")
        #expect(store.userCache.lookup(user.id) == .hit(user))
        _ = try await store.updateUser(id: user.id, name: "v1", email: nil)
        #expect(try await store.user(id: user.id)?.name == "v1")
        #expect(try await store.deleteUser(id: user.id))
        #expect(try await store.user(id: user.id) == nil)
        // A failed write (duplicate email) leaves the id readable and correct.
        let other = try await store.createUser(name: "o", email: "o@x.io").user
        _ = try await store.user(id: other.id)
        await #expect(throws: StoreError.duplicateEmail) {
            try await store.updateUser(id: other.id, name: nil, email: "c2@x.io").map { _ in () }
            _ = try await store.createUser(name: "p", email: "p@x.io")
            try await store.updateUser(id: other.id, name: nil, email: "P@x.io").map { _ in () }
        }
        #expect(try await store.user(id: other.id)?.email == "c2@x.io")
    }

    @Test func noStaleReadUnderConcurrentWrites() async throws {
        let user = try await store.createUser(name: "0", email: "race@x.io").user
        let id = user.id
        let store = self.store
        let rounds = 300
        let race = RaceState()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var lastSeen = 0
                    while !race.stop.load(ordering: .acquiring) {
                        let floor = race.acknowledged.load(ordering: .acquiring)
                        guard let name = try await store.user(id: id)?.name, let seen = Int(name) else {
                            race.violations.add(1, ordering: .relaxed)
                            continue
                        }
                        // Never older than what was acknowledged before the read began,
                        // and never going back in time for one reader.
                        if seen < floor || seen < lastSeen { race.violations.add(1, ordering: .relaxed) }
                        lastSeen = seen
                    }
                }
            }
            group.addTask {
                defer { race.stop.store(true, ordering: .releasing) }
                for version in 1...rounds {
                    _ = try await store.updateUser(id: id, name: String(version), email: nil)
                    race.acknowledged.store(version, ordering: .releasing)
                    // A read right after the acknowledgement sees it.
                    let name = try await store.user(id: id)?.name
                    if name != String(version) { race.violations.add(1, ordering: .relaxed) }
                }
            }
            try await group.waitForAll()
        }
        #expect(race.violations.load(ordering: .relaxed) == 0)
        #expect(try await store.user(id: id)?.name == String(rounds))
    }
}

/// What the readers and the writer of the race test share.
final class RaceState: Sendable {
    /// The version every reader must at least see: set only after a write returned.
    let acknowledged = Atomic<Int>(0)
    let violations = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}
