/// Sums that the jobs of one group-committed transaction add to and that are written
/// once, just before it commits: one write for a whole batch instead of one per job.
/// (usersd keeps the number of tasks in each state this way.)
///
/// In a batch of `Database.write` jobs, a job's additions are kept when the job
/// succeeds and dropped when it fails (its changes are undone); all are dropped when
/// the transaction rolls back, including to run the batch again (see `runBatch`). On a connection that is not running such a batch, `add` writes
/// at once, so a sum is never left unwritten.
public struct CommitTally: Sendable {
    /// Tells tallies apart on a connection.
    public let name: String
    /// How many sums (`slot`s) it has.
    public let slots: Int
    /// Writes the sums (never all zero) inside the open transaction.
    public let write: @Sendable (Connection, _ sums: [Int]) throws -> Void

    public init(name: String, slots: Int, write: @escaping @Sendable (Connection, _ sums: [Int]) throws -> Void) {
        self.name = name
        self.slots = slots
        self.write = write
    }
}

/// A tally's sums on one connection during one batch.
final class PendingTally {
    let tally: CommitTally
    /// The sums of the jobs that succeeded so far.
    var kept: [Int]
    /// The sums of the job running now.
    var job: [Int]
    var jobTouched = false
    var keptTouched = false

    init(_ tally: CommitTally) {
        self.tally = tally
        kept = Array(repeating: 0, count: tally.slots)
        job = kept
    }

    func keepJob() {
        guard jobTouched else { return }
        for slot in job.indices {
            kept[slot] += job[slot]
            job[slot] = 0
        }
        jobTouched = false
        keptTouched = true
    }

    func dropJob() {
        guard jobTouched else { return }
        for slot in job.indices { job[slot] = 0 }
        jobTouched = false
    }

    /// Writes the kept sums unless they are all zero, and clears them.
    func write(on connection: Connection) throws {
        defer { clear() }
        guard keptTouched, kept.contains(where: { $0 != 0 }) else { return }
        try tally.write(connection, kept)
    }

    func clear() {
        dropJob()
        for slot in kept.indices { kept[slot] = 0 }
        keptTouched = false
    }
}

extension Connection {
    /// Adds `delta` to `slot` of `tally`: deferred to the end of the batch inside a
    /// `Database.write` batch, written at once anywhere else.
    public func add(_ delta: Int, to slot: Int, of tally: CommitTally) throws {
        precondition(slot >= 0 && slot < tally.slots, "tally \(tally.name) has no slot \(slot)")
        guard delta != 0 else { return }
        guard isRunningBatch else {
            var sums = Array(repeating: 0, count: tally.slots)
            sums[slot] = delta
            try tally.write(self, sums)
            return
        }
        let pending: PendingTally
        if let found = pendingTallies.first(where: { $0.tally.name == tally.name }) {
            pending = found
        } else {
            pending = PendingTally(tally)
            pendingTallies.append(pending)
        }
        pending.job[slot] += delta
        pending.jobTouched = true
    }

    /// What the open transaction has added to `slot` of `tally` and not written yet
    /// (the jobs kept so far and the running one): to read a sum as it will commit,
    /// add this to the written value.
    public func unwritten(_ slot: Int, of tally: CommitTally) -> Int {
        guard let pending = pendingTallies.first(where: { $0.tally.name == tally.name }) else { return 0 }
        return pending.kept[slot] + pending.job[slot]
    }

    /// The batch's jobs run from here until `endBatch()`: additions are deferred.
    func beginBatch() {
        isRunningBatch = true
    }

    /// The job that just ran succeeded (true) or was rolled back (false).
    func endJob(succeeded: Bool) {
        for pending in pendingTallies {
            if succeeded { pending.keepJob() } else { pending.dropJob() }
        }
    }

    /// Writes the kept sums of every tally; call just before COMMIT.
    func writeTallies() throws {
        for pending in pendingTallies { try pending.write(on: self) }
    }

    /// The batch is over (committed or rolled back): nothing of it stays pending.
    func endBatch() {
        for pending in pendingTallies { pending.clear() }
        isRunningBatch = false
    }
}
