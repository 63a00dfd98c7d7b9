import Glibc
import Synchronization

/// Request counters and latencies.
///
/// Each thread records into its own shard (found through a pthread key), so the
/// per-request path takes only an uncontended lock; a scrape sums the shards. When a
/// thread exits, its shard's counts are merged into the retired totals and the shard
/// is released (the key's destructor), so threads that come and go (workers follow
/// the web server's connections; the watchdog probes on a thread of its own) cost no
/// memory once they are gone.
public final class RequestMetrics: MetricsSource {
    struct Key: Hashable, Sendable {
        let route: String
        let method: String
        let status: Int
    }

    /// One thread's counts. Lists, not dictionaries: a thread sees a few dozen
    /// (route, method, status) keys, and nearly always the one it saw last, which is
    /// checked first, without hashing the key on every request.
    final class Shard: Sendable {
        struct Data {
            var requests: [(key: Key, count: Int)] = []
            var latency: [(route: String, histogram: Histogram)] = []
            var inFlight = 0
            /// Where the last request's entries are.
            var lastRequest = 0
            var lastLatency = 0

            mutating func record(_ key: Key, seconds: Double) {
                lastRequest = Self.position(
                    in: &requests, tryingFirst: lastRequest, where: { $0.key == key }, orAppend: { (key, 0) })
                requests[lastRequest].count += 1
                lastLatency = Self.position(
                    in: &latency, tryingFirst: lastLatency, where: { $0.route == key.route },
                    orAppend: { (key.route, Histogram()) })
                latency[lastLatency].histogram.observe(seconds)
            }

            /// Where the entry `matches` picks is, checking `last` first; a new entry made
            /// by `make` is appended when there is none.
            private static func position<Entry>(
                in entries: inout [Entry], tryingFirst last: Int, where matches: (Entry) -> Bool,
                orAppend make: () -> Entry
            ) -> Int {
                if last < entries.count && matches(entries[last]) { return last }
                if let index = entries.firstIndex(where: matches) { return index }
                entries.append(make())
                return entries.count - 1
            }
        }
        let data = Mutex(Data())
        /// The shards this one is listed in, to leave them when its thread exits.
        let registry: Registry

        init(registry: Registry) {
            self.registry = registry
        }
    }

    /// All shards summed.
    struct Totals {
        var requests: [Key: Int] = [:]
        var latency: [String: Histogram] = [:]
        var inFlight = 0

        mutating func add(_ data: Shard.Data) {
            inFlight += data.inFlight
            for (key, count) in data.requests { requests[key, default: 0] += count }
            for (route, histogram) in data.latency { latency[route, default: Histogram()].merge(histogram) }
        }
    }

    /// The live shards and the totals of the threads that have exited.
    final class Registry: Sendable {
        let state = Mutex<(shards: [ObjectIdentifier: Shard], retired: Totals)>(([:], Totals()))

        /// The thread of `shard` exits: its counts move to the retired totals.
        func retire(_ shard: Shard) {
            let data = shard.data.withLock { $0 }
            state.withLock { state in
                state.shards[ObjectIdentifier(shard)] = nil
                state.retired.add(data)
            }
        }
    }

    private let registry = Registry()
    private let key: pthread_key_t

    public init() {
        var key = pthread_key_t()
        // Runs on an exiting thread that recorded a request, with its shard (retained
        // by `setspecific`): fold the shard into the totals and release it.
        pthread_key_create(&key) { pointer in
            guard let pointer else { return }
            let shard = Unmanaged<Shard>.fromOpaque(pointer).takeRetainedValue()
            shard.registry.retire(shard)
        }
        self.key = key
    }

    /// This thread's shard (created on first use, retired when the thread exits).
    private func shard() -> Shard {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<Shard>.fromOpaque(pointer).takeUnretainedValue()
        }
        let shard = Shard(registry: registry)
        registry.state.withLock { $0.shards[ObjectIdentifier(shard)] = shard }
        pthread_setspecific(key, Unmanaged.passRetained(shard).toOpaque())
        return shard
    }

    /// Shards of live threads (one per thread that has recorded a request).
    public var shardCount: Int { registry.state.withLock { $0.shards.count } }

    public func requestStarted() {
        shard().data.withLock { $0.inFlight += 1 }
    }

    /// Records a finished request. `route` is the matched pattern (`/users/{id}`),
    /// never the raw path, so label cardinality stays bounded.
    public func requestFinished(route: String, method: String, status: Int, seconds: Double) {
        let method = Self.isKnownMethod(method) ? method : "OTHER"
        shard().data.withLock { data in
            data.inFlight -= 1
            data.record(Key(route: route, method: method, status: status), seconds: seconds)
        }
    }

    /// Methods that get their own label; anything else is `OTHER` (bounded cardinality).
    static func isKnownMethod(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS": true
        default: false
        }
    }

    /// Sums every shard and the retired totals.
    func snapshot() -> Totals {
        let (shards, retired) = registry.state.withLock { (Array($0.shards.values), $0.retired) }
        var total = retired
        for shard in shards { total.add(shard.data.withLock { $0 }) }
        return total
    }

    /// The request metrics in Prometheus text format.
    public func render(into text: inout PrometheusText) async {
        renderNow(into: &text)
    }

    func renderNow(into text: inout PrometheusText) {
        let data = snapshot()
        text.help("usersd_requests_total", "Requests answered, by route pattern, method and status.", type: "counter")
        for (key, count) in data.requests.sorted(by: {
            ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status)
        }) {
            text.sample(
                "usersd_requests_total", ["route": key.route, "method": key.method, "status": String(key.status)],
                Double(count))
        }
        text.help("usersd_request_duration_seconds", "Time to produce a response, by route pattern.", type: "histogram")
        for (route, histogram) in data.latency.sorted(by: { $0.key < $1.key }) {
            text.histogram("usersd_request_duration_seconds", ["route": route], histogram)
        }
        text.help("usersd_requests_in_flight", "Requests being handled now.", type: "gauge")
        text.sample("usersd_requests_in_flight", [:], Double(data.inFlight))
        text.help(
            "usersd_request_metric_shards",
            "Per-thread request counters held (one per live thread that served a request).", type: "gauge")
        text.sample("usersd_request_metric_shards", [:], Double(shardCount))
    }

    /// Total requests answered so far (for `STATUS=`).
    public var totalRequests: Int { snapshot().requests.values.reduce(0, +) }
    public var inFlight: Int { snapshot().inFlight }
}
