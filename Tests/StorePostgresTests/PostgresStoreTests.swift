import Foundation
import Postgres
import Store
import StorePostgres
import Synchronization
import TestSupport
import Testing

/// The PostgreSQL backend against a private cluster, with two or three stores on one
/// database standing for hosts: users and the outbox as on SQLite, claims that never
/// overlap, fenced moves, leases kept by heartbeats and rescued when they expire,
/// cancels that reach the host running the task, and a bound and keys exact across hosts.
@Suite struct PostgresStoreTests {
    let uri: String

    init() throws {
        uri = try PostgresCluster.shared().makeDatabase("store")
    }

    func host(_ configure: (inout PostgresStore.Settings) -> Void = { _ in }) -> PostgresStore {
        var settings = PostgresStore.Settings(uri: uri)
        settings.poolSize = 4
        settings.hostID = "test-host-\(UUID().uuidString.prefix(8))"
        configure(&settings)
        return PostgresStore(settings: settings)
    }

    func migrated(_ configure: (inout PostgresStore.Settings) -> Void = { _ in }) async throws -> PostgresStore {
        let store = host(configure)
        _ = try await store.migrate()
        return store
    }

    func sql<T>(_ text: String, _ decode: (PostgresRows) throws -> T) throws -> T {
        try PostgresConnection(uri: uri).query(sql: text, [], decode)
    }

    @Test func hostsStartingTogetherApplyTheMigrationsOnce() async throws {
        let stores = (0..<3).map { _ in host() }
        defer { for store in stores { store.close() } }
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for store in stores { group.addTask { try await store.migrate() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(applied.filter { !$0.isEmpty } == [[1]])
        #expect(try sql("SELECT count(*) FROM schema_migrations") { $0.integer(0, 0) } == 1)
        #expect(try await stores[0].pendingMigrations().isEmpty)
        #expect(try await stores[0].integrityCheck() == "ok")
    }

    @Test func caselessDuplicatesAreRefusedWithoutFailingOtherCreates() async throws {
        let store = try await migrated()
        defer { store.close() }
        let outcomes = try await withThrowingTaskGroup(of: String.self) { group in
            for (index, email) in ["STRASSE@x.io", "straße@x.io", "other@x.io", "Strasse@X.io", "more@x.io"]
                .enumerated()
            {
                group.addTask {
                    do {
                        _ = try await store.createUser(name: "n\(index)", email: email)
                        return "created"
                    } catch StoreError.duplicateEmail {
                        return "duplicate"
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }.sorted()
        }
        #expect(outcomes == ["created", "created", "created", "duplicate", "duplicate"])
        let created = try await store.createUser(name: "Ann", email: "ann@example.com")
        #expect(try await store.user(id: created.user.id) == created.user)
        await #expect(throws: StoreError.duplicateEmail) {
            _ = try await store.updateUser(id: created.user.id, name: nil, email: "OTHER@x.io")
        }
        let page = try await store.userSummaryPage(afterID: 0, limit: 2)
        #expect(page.count == 2)
        let text = String(decoding: page.json, as: UTF8.self)
        #expect(text.hasPrefix("{\"id\":") && text.contains("},{\"id\":"))
    }

    @Test func aWelcomeRunsOnceWithItsOutboxRowWhicheverPathTakesIt() async throws {
        let a = try await migrated()
        let b = host()
        defer {
            a.close()
            b.close()
        }
        let first = try await a.createUser(name: "Una", email: "una@example.com")
        let second = try await a.createUser(name: "Dos", email: "dos@example.com")
        // Host b claims the second welcome first; host a then runs both by id: only the
        // first is still queued, so only it runs there.
        let claimed = try await b.claimDue(now: Int64.max / 2, limit: 1, skipping: { [first.welcomeTaskID] })
        #expect(claimed.map(\.id) == [second.welcomeTaskID])
        let ran = try await a.runQueuedWelcomes(
            ids: [first.welcomeTaskID, second.welcomeTaskID], now: Int64.max / 2)
        #expect(ran == [first.welcomeTaskID])
        await #expect(throws: TaskStoreError.notRunning) {
            _ = try await a.completeWelcome(taskID: second.welcomeTaskID, userID: second.user.id)
        }
        #expect(
            try await b.completeWelcome(taskID: second.welcomeTaskID, userID: second.user.id)
                == WelcomeTask.result(written: true))
        #expect(
            try sql("SELECT count(*), count(DISTINCT user_id) FROM outbox") { [$0.integer(0, 0), $0.integer(0, 1)] }
                == [2, 2])
        let counts = try await a.taskCounts()
        #expect(counts[.succeeded] == 2 && counts[.queued] == 0 && counts[.running] == 0)
    }

    @Test func hostsClaimingAtOnceNeverTakeTheSameTask() async throws {
        let hosts = [try await migrated(), host(), host()]
        defer { for store in hosts { store.close() } }
        for index in 0..<300 {
            _ = try await hosts[index % 3].enqueue(
                NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: 0), queueLimit: 1000)
        }
        let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for store in hosts {
                group.addTask {
                    var mine: [Int64] = []
                    while true {
                        // Late enough that every host may take every task (past the enqueuing
                        // host's first claim).
                        let batch = try await store.claimDue(now: 5000, limit: 7)
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(claimed.count == 300)
        #expect(Set(claimed).count == 300)
    }

    @Test func aLateMoveByAHostThatLostTheLeaseChangesNothing() async throws {
        let zombie = try await migrated()
        let rescuer = host()
        defer {
            zombie.close()
            rescuer.close()
        }
        let (task, _) = try await zombie.enqueue(
            NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: 0), queueLimit: 100)
        #expect(try await zombie.claimDue(now: 1, limit: 1).map(\.id) == [task.id])
        // Live lease: a reaper takes nothing.
        #expect(try await rescuer.recoverInterrupted(now: 1).isEmpty)
        // The zombie's heartbeats stop; its lease runs out on the database's clock.
        _ = try sql("UPDATE tasks SET lease_until = now() - interval '1 second'") { $0.affectedRows }
        #expect(try await rescuer.recoverInterrupted(now: 1) == [task.id])
        let retaken = try await rescuer.claimDue(now: 2, limit: 1)
        #expect(retaken.map(\.attempts) == [2])
        #expect(try await zombie.markSucceeded(id: task.id, result: "{\"late\":true}") == false)
        #expect(try await zombie.markFailed(id: task.id, error: "late") == false)
        #expect(try await rescuer.markSucceeded(id: task.id, result: "{}") == true)
        let final = try await rescuer.task(id: task.id)
        #expect(final?.state == .succeeded && final?.attempts == 2 && final?.result == "{}")
    }

    @Test func heartbeatsKeepALeaseAliveAndCancelsReachTheRunningHost() async throws {
        let runner = try await migrated {
            $0.leaseSeconds = 1
            $0.heartbeatSeconds = 0.2
            $0.pollMilliseconds = 50
        }
        let other = host()
        defer {
            runner.close()
            other.close()
        }
        let relayed = AsyncStream<Int64>.makeStream()
        runner.startLeases(wake: {}, cancel: { relayed.continuation.yield($0) })
        let (task, _) = try await runner.enqueue(
            NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: 0), queueLimit: 100)
        _ = try await runner.claimDue(now: 1, limit: 1)
        // Three seconds of a one-second lease: only heartbeats keep it.
        let started = Date()
        while Date().timeIntervalSince(started) < 3 {
            #expect(try await other.recoverInterrupted(now: 1).isEmpty)
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await other.task(id: task.id)?.state == .running)
        // A cancel through the other host reaches the runner, which stops the task.
        async let answer = other.cancel(id: task.id)
        var iterator = relayed.stream.makeAsyncIterator()
        #expect(await iterator.next() == task.id)
        #expect(try await runner.markCancelled(id: task.id))
        guard case .cancelled(let record) = try await answer else {
            Issue.record("the cancel did not settle as cancelled")
            return
        }
        #expect(record.state == .cancelled)
        #expect(try await other.taskCounts()[.cancelled] == 1)
    }

    @Test func theQueueBoundAndIdempotencyKeysHoldAcrossHosts() async throws {
        let hosts = [try await migrated(), host()]
        defer { for store in hosts { store.close() } }
        let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<40 {
                group.addTask {
                    do {
                        _ = try await hosts[index % 2].enqueue(
                            NewTask(kind: "sleep", payload: "{}", maxAttempts: 1, runAt: 0), queueLimit: 10)
                        return true
                    } catch TaskStoreError.queueFull {
                        return false
                    }
                }
            }
            return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
        }
        #expect(accepted == 10)
        let keyed = try await withThrowingTaskGroup(of: (Int64, Bool).self) { group in
            for index in 0..<10 {
                group.addTask {
                    let (task, created) = try await hosts[index % 2].enqueue(
                        NewTask(kind: "sleep", payload: "{}", maxAttempts: 1, runAt: 0, idempotencyKey: "k-1"),
                        queueLimit: 1000)
                    return (task.id, created)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(keyed.map(\.0)).count == 1)
        #expect(keyed.filter(\.1).count == 1)
    }

    @Test func aShutdownRequeueIsFencedAndDoesNotCountTheAttempt() async throws {
        let a = try await migrated()
        let b = host()
        defer {
            a.close()
            b.close()
        }
        let (task, _) = try await a.enqueue(
            NewTask(kind: "sleep", payload: "{}", maxAttempts: 3, runAt: 0), queueLimit: 100)
        _ = try await a.claimDue(now: 1, limit: 1)
        #expect(try await b.requeue(id: task.id, now: 5) == false)  // not b's task
        #expect(try await a.requeue(id: task.id, now: 5) == true)
        let queued = try await a.task(id: task.id)
        #expect(queued?.state == .queued && queued?.attempts == 0 && queued?.runAt == 5)
    }
}
