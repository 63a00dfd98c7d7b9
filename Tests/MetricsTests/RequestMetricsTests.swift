import Foundation
import Testing

@testable import Metrics

@Suite struct RequestMetricsTests {
    @Test func countsEveryKeyAndLatencyPerRouteWhateverTheOrder() {
        let metrics = RequestMetrics()
        // Repeats (the last key again), switches back and forth, and new keys late.
        let sequence: [(String, String, Int)] = [
            ("/user/{id}", "GET", 200), ("/user/{id}", "GET", 200), ("/add-user", "POST", 201),
            ("/user/{id}", "GET", 200), ("/user/{id}", "GET", 404), ("/add-user", "POST", 201),
            ("/add-user", "POST", 409), ("/user/{id}", "GET", 200), ("/users", "GET", 200),
        ]
        for (route, method, status) in sequence {
            metrics.requestStarted()
            metrics.requestFinished(route: route, method: method, status: status, seconds: 0.001)
        }
        let totals = metrics.snapshot()
        #expect(totals.requests[.init(route: "/user/{id}", method: "GET", status: 200)] == 4)
        #expect(totals.requests[.init(route: "/user/{id}", method: "GET", status: 404)] == 1)
        #expect(totals.requests[.init(route: "/add-user", method: "POST", status: 201)] == 2)
        #expect(totals.requests[.init(route: "/add-user", method: "POST", status: 409)] == 1)
        #expect(totals.requests[.init(route: "/users", method: "GET", status: 200)] == 1)
        #expect(totals.requests.count == 5)
        #expect(totals.latency["/user/{id}"]?.count == 5)
        #expect(totals.latency["/add-user"]?.count == 3)
        #expect(totals.latency["/users"]?.count == 1)
        #expect(totals.inFlight == 0)
        #expect(metrics.totalRequests == sequence.count)
    }

    @Test func shardsOfManyThreadsAddUp() {
        let metrics = RequestMetrics()
        let threads = 8
        let each = 500
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for n in 0..<each {
                metrics.requestStarted()
                let status = (n + thread) % 3 == 0 ? 404 : 200
                metrics.requestFinished(
                    route: "/user/{id}", method: n % 2 == 0 ? "GET" : "HEAD", status: status, seconds: 0)
            }
        }
        let totals = metrics.snapshot()
        #expect(totals.requests.values.reduce(0, +) == threads * each)
        #expect(totals.latency["/user/{id}"]?.count == threads * each)
        #expect(totals.inFlight == 0)
    }

    @Test func unknownMethodsShareOneLabel() {
        let metrics = RequestMetrics()
        metrics.requestStarted()
        metrics.requestFinished(route: "unmatched", method: "BREW", status: 405, seconds: 0)
        #expect(metrics.snapshot().requests[.init(route: "unmatched", method: "OTHER", status: 405)] == 1)
    }
}

/// Threads that exit leave their counts and free their shard.
@Suite struct RequestMetricsRetirementTests {
    /// Runs `body` on a new pthread and waits until the thread has terminated (its key
    /// destructors run before `pthread_join` returns).
    func onThreadThatExits(_ body: @escaping @Sendable () -> Void) {
        final class Work: @unchecked Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let work = Unmanaged.passRetained(Work(body)).toOpaque()
        let created = pthread_create(
            &thread, nil,
            { pointer in
                Unmanaged<Work>.fromOpaque(pointer!).takeRetainedValue().body()
                return nil
            }, work)
        #expect(created == 0)
        pthread_join(thread, nil)
    }

    @Test func aThreadsCountsSurviveItAndItsShardIsReleased() {
        let metrics = RequestMetrics()
        for round in 0..<50 {
            onThreadThatExits {
                for _ in 0..<3 {
                    metrics.requestStarted()
                    metrics.requestFinished(route: "/user/{id}", method: "GET", status: 200, seconds: 0.002)
                }
                metrics.requestStarted()
                metrics.requestFinished(
                    route: "/users", method: "GET", status: round % 2 == 0 ? 200 : 500, seconds: 0.5)
            }
            #expect(metrics.shardCount == 0)
        }
        let totals = metrics.snapshot()
        #expect(totals.requests[.init(route: "/user/{id}", method: "GET", status: 200)] == 150)
        #expect(totals.requests[.init(route: "/users", method: "GET", status: 200)] == 25)
        #expect(totals.requests[.init(route: "/users", method: "GET", status: 500)] == 25)
        #expect(totals.latency["/user/{id}"]?.count == 150)
        #expect(totals.inFlight == 0)
        // A live thread keeps its shard.
        metrics.requestStarted()
        #expect(metrics.shardCount == 1)
        #expect(metrics.snapshot().inFlight == 1)
        metrics.requestFinished(route: "/users", method: "GET", status: 200, seconds: 0.1)
    }
}
