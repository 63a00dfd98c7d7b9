public import Store

/// Cancelling a task, whether queued or running, and answering its state once the
/// cancel has settled.
extension TaskScheduler {
    /// Cancels a task and answers its state once the cancel has settled: a queued task
    /// is cancelled at once; a running one by cancelling its Swift task and waiting
    /// until that attempt finished. The answer is read from the database afterwards, so
    /// an attempt that ended meanwhile is `alreadyFinished` with its real state.
    ///
    /// The actor is reentrant: every `await` here lets attempts finish and claims launch,
    /// so the state is read again after each one. A task the database shows `running`
    /// with no Swift task here is either just claimed (the claim in flight launches it
    /// soon: wait for that, `launch` cancels it at once) or already finished (read the
    /// row again). A finished attempt that was retried is queued again: cancel that.
    /// This loops at most once per attempt of the task. `running` comes back only when
    /// no Swift task here runs the row (its outcome could not be stored; the next start
    /// recovers it). Nothing is kept for the task once this returns, except while the
    /// attempt it stopped is still storing its end.
    public func cancel(id: Int64) async throws -> CancelOutcome {
        while true {
            let outcome = try await store.cancel(id: id)
            guard case .running = outcome else {
                if case .cancelled = outcome {
                    emit(.finished(id, .cancelled))
                    wake.signal()
                }
                return outcome
            }
            if running[id] == nil, claimWaiters != nil {
                awaitingLaunch[id, default: 0] += 1
                await withCheckedContinuation { continuation in
                    if claimWaiters == nil { continuation.resume() } else { claimWaiters?.append(continuation) }
                }
                let waiting = awaitingLaunch[id, default: 1] - 1
                awaitingLaunch[id] = waiting > 0 ? waiting : nil
            }
            if let handle = running[id] {
                cancelRequested.insert(id)
                handle.cancel()
                await handle.value
            }
            guard let after = try await store.task(id: id) else { return .notFound }
            switch after.state {
            case .cancelled: return .cancelled(after)
            case .succeeded, .failed: return .alreadyFinished(after)
            case .running: return .running(after)
            case .queued: continue
            }
        }
    }
}
