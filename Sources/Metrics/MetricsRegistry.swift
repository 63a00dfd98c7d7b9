import Synchronization

/// A part of usersd that shows its own figures in `GET /metrics`.
public protocol MetricsSource: Sendable {
    /// Appends this part's metrics (with their `# HELP`/`# TYPE` lines).
    func render(into text: inout PrometheusText) async
}

/// Everything `GET /metrics` shows: each source renders itself at scrape time, in the
/// order it was added. Parts created after the routes (the FastCGI server) add
/// themselves once they exist.
public final class MetricsRegistry: Sendable {
    private let sources = Mutex<[any MetricsSource]>([])

    public init() {}

    public func add(_ source: any MetricsSource) {
        sources.withLock { $0.append(source) }
    }

    /// The whole exposition.
    public func render() async -> String {
        var text = PrometheusText()
        for source in sources.withLock({ $0 }) { await source.render(into: &text) }
        return text.text
    }
}
