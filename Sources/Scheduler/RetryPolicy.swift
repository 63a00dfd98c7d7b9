/// Exponential back-off with jitter: attempt n waits `base * 2^(n-1)`, capped, then
/// scaled by a random factor in `1 ± jitter` so retries of many tasks spread out.
public struct RetryPolicy: Sendable {
    public var baseMilliseconds: Int64 = 1000
    public var capMilliseconds: Int64 = 300_000
    public var jitter: Double = 0.2

    public init(baseMilliseconds: Int64 = 1000, capMilliseconds: Int64 = 300_000, jitter: Double = 0.2) {
        self.baseMilliseconds = baseMilliseconds
        self.capMilliseconds = capMilliseconds
        self.jitter = jitter
    }

    /// Whether a task whose attempt `attempts` (1-based) failed is tried again: while
    /// it has attempts left.
    public static func retries(afterAttempt attempts: Int, of maxAttempts: Int) -> Bool {
        attempts < maxAttempts
    }

    /// The delay after failed attempt `attempt` (1-based); `random` is in 0..<1.
    public func delay(afterAttempt attempt: Int, random: Double) -> Int64 {
        let exponent = min(max(attempt - 1, 0), 30)
        let raw = min(capMilliseconds, baseMilliseconds << Int64(exponent))
        let factor = 1 + jitter * (2 * random - 1)
        return max(0, Int64((Double(raw) * factor).rounded()))
    }
}
