import Synchronization

/// Everything `GET /metrics` shows: collectors add their lines at scrape time.
/// Parts created later (the FastCGI server) register themselves after start-up.
public final class MetricsCollectors: Sendable {
    public typealias Collector = @Sendable (inout PrometheusText) async -> Void
    private let collectors = Mutex<[Collector]>([])

    public init() {}

    public func add(_ collector: @escaping Collector) {
        collectors.withLock { $0.append(collector) }
    }

    public func render() async -> String {
        var text = PrometheusText()
        for collector in collectors.withLock({ $0 }) { await collector(&text) }
        return text.text
    }
}
