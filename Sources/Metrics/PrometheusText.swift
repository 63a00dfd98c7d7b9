import Foundation

/// Builds a Prometheus text exposition (version 0.0.4).
public struct PrometheusText: Sendable {
    public private(set) var text = ""

    public init() {}

    public mutating func help(_ name: String, _ help: String, type: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text +=
                "{"
                + labels.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\"\(Self.escape($0.value))\"" }.joined(
                    separator: ",") + "}"
        }
        text += " \(Self.format(value))\n"
    }

    public mutating func histogram(_ name: String, _ labels: [String: String], _ histogram: Histogram) {
        var cumulative = 0
        for (index, bound) in histogram.bounds.enumerated() {
            cumulative += histogram.counts[index]
            sample(name + "_bucket", labels.merging(["le": Self.format(bound)]) { $1 }, Double(cumulative))
        }
        sample(name + "_bucket", labels.merging(["le": "+Inf"]) { $1 }, Double(histogram.count))
        sample(name + "_sum", labels, histogram.sum)
        sample(name + "_count", labels, Double(histogram.count))
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
