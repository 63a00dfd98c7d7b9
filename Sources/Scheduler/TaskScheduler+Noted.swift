import Logging
import Metrics
import Store
import Synchronization

/// The fast path for tasks whose whole work is a database write (`TaskKind.runQueued`:
/// the welcome task every new user gets). Such a task, handed over once its insert
/// committed, is run by id, many per transaction, without a claim transaction or a
/// slot: a claim per new user would cost more than the task itself.
///
/// Never twice: the claim path skips the ids noted here, and `runQueued` runs only the
/// tasks still queued and due, so a task the claim path took first is not run again
/// here. A task not noted (the list is full) or whose batch failed stays queued and is
/// claimed and run as usual.
extension TaskScheduler {
    /// At most this many noted ids wait; more are left to the claim path.
    static let notedLimit = 10_000
    /// Noted tasks run per store transaction.
    static let runQueuedBatch = 256

    /// Hands over a task that committed outside the scheduler (a new user's welcome,
    /// inserted in the user's transaction) or through `enqueue`: a kind with
    /// `runQueued` is noted and run by id; any other wakes the claim loop.
    public nonisolated func committed(taskID: Int64, kind: String) {
        if note(taskID: taskID, kind: kind) {
            wake.signal()
        } else {
            wakeUp()
        }
    }

    /// Notes a task of a kind with `runQueued`; false for other kinds or a full list.
    nonisolated func note(taskID: Int64, kind: String) -> Bool {
        guard registry.kinds[kind]?.runQueued != nil else { return false }
        return noted.withLock { noted in
            guard noted.all.count < Self.notedLimit, noted.all.insert(taskID).inserted else { return false }
            noted.byKind[kind, default: []].append(taskID)
            return true
        }
    }

    /// Runs the noted tasks of kinds with `runQueued`, a batch per transaction. They take
    /// no slot. When a batch fails its tasks stay queued and the claim path runs them.
    func runNoted() async {
        let batches = noted.withLock { noted in
            defer { noted = ([], [:]) }
            return noted.byKind
        }
        for (kind, ids) in batches {
            guard let runQueued = registry.kinds[kind]?.runQueued else { continue }
            var start = 0
            while start < ids.count, phase == .running {
                let chunk = Array(ids[start..<min(start + Self.runQueuedBatch, ids.count)])
                start += chunk.count
                let began = clock.now()
                do {
                    let ran = try await runQueued(chunk, began)
                    for id in ran {
                        emit(.started(id))
                        emit(.finished(id, .succeeded))
                    }
                    if !ran.isEmpty {
                        // Each task is counted with its share of the batch's time.
                        let seconds = Double(clock.now() - began) / 1000 / Double(ran.count)
                        durations.withLock { histograms in
                            for _ in ran { histograms[kind, default: Self.durationHistogram()].observe(seconds) }
                        }
                    }
                } catch {
                    Log.warning(
                        "running noted tasks failed; the queue will run them", ["kind": kind, "error": "\(error)"])
                }
            }
        }
    }

}
