import Basics
public import Store
import Synchronization

/// Recently read users by id, so `GET /user/<id>` and `GET /users/<id>` skip SQLite.
///
/// Correctness (no stale read after a write is acknowledged):
/// - A writer marks the id *pending* before its transaction starts and unmarks it
///   after the commit (or failure), before the write is acknowledged. While an id is
///   pending, lookups miss (they read SQLite, which is consistent by itself) and
///   nothing is stored for it; the entry itself is dropped when the mark is set.
/// - A reader that misses takes a *token* (the shard's write counter) before it reads
///   SQLite, and its row is stored only if no write to that shard began since. So a row
///   read before a write can never be stored after it.
/// - Entries expire after `lifetimeNanoseconds`, so a change made by another program
///   (usersd is meant to be the only writer of its database) shows up within that time.
///
/// Sharded by id, each shard behind its own lock: the request path never waits on a
/// lock shared by all worker threads.
public final class UserCache: Sendable {
    /// A miss: the token to pass to `store`, or `nil` when the id is being written.
    public enum Lookup: Sendable, Equatable {
        case hit(User)
        case miss(token: UInt64?)
    }

    private struct Entry {
        let user: User
        let expires: UInt64
    }

    private struct Shard {
        var entries: [Int64: Entry] = [:]
        var pending: [Int64: Int] = [:]
        /// Grows whenever a write to an id of this shard begins.
        var writes: UInt64 = 0
    }

    private final class ShardBox: Sendable {
        let state = Mutex(Shard())
    }

    private static let shardCount = 64
    private let shards: [ShardBox]
    private let entriesPerShard: Int
    let lifetimeNanoseconds: UInt64

    /// `capacity` 0 disables the cache (every lookup misses, nothing is stored).
    public init(capacity: Int = 10_000, lifetimeNanoseconds: UInt64 = 2_000_000_000) {
        shards = (0..<Self.shardCount).map { _ in ShardBox() }
        entriesPerShard = capacity <= 0 ? 0 : max(1, capacity / Self.shardCount)
        self.lifetimeNanoseconds = lifetimeNanoseconds
    }

    private func shard(_ id: Int64) -> ShardBox {
        shards[Int(UInt64(bitPattern: id) % UInt64(Self.shardCount))]
    }

    public func lookup(_ id: Int64) -> Lookup {
        let now = MonotonicClock.coarseNanoseconds()
        return shard(id).state.withLock { shard in
            if !shard.pending.isEmpty, shard.pending[id] != nil { return .miss(token: nil) }
            if let entry = shard.entries[id] {
                if entry.expires > now { return .hit(entry.user) }
                shard.entries[id] = nil
            }
            return .miss(token: shard.writes)
        }
    }

    /// Stores a row read from SQLite after `lookup` returned `token`; ignored when a
    /// write to the shard began since.
    public func store(_ user: User, token: UInt64) {
        guard entriesPerShard > 0 else { return }
        let expires = MonotonicClock.coarseNanoseconds() &+ lifetimeNanoseconds
        shard(user.id).state.withLock { shard in
            guard shard.writes == token, shard.pending[user.id] == nil else { return }
            if shard.entries.count >= entriesPerShard, shard.entries[user.id] == nil {
                shard.entries.remove(at: shard.entries.startIndex)
            }
            shard.entries[user.id] = Entry(user: user, expires: expires)
        }
    }

    /// Call before the transaction that changes (or deletes) user `id` begins.
    public func beginWrite(_ id: Int64) {
        shard(id).state.withLock { shard in
            shard.writes &+= 1
            shard.pending[id, default: 0] += 1
            shard.entries[id] = nil
        }
    }

    /// Drops whatever is cached for `id` (after a write whose id was unknown before it
    /// committed: an insert).
    public func invalidate(_ id: Int64) {
        beginWrite(id)
        endWrite(id)
    }

    /// Call after that transaction committed or failed, before the write is acknowledged.
    public func endWrite(_ id: Int64) {
        shard(id).state.withLock { shard in
            shard.writes &+= 1
            if let count = shard.pending[id], count > 1 {
                shard.pending[id] = count - 1
            } else {
                shard.pending[id] = nil
            }
        }
    }

    /// Entries held now (for tests and metrics).
    public var count: Int {
        shards.reduce(0) { total, shard in total + shard.state.withLock { $0.entries.count } }
    }

}
