import Foundation

/// The name this process claims tasks under: host name, process id and a random part,
/// so a restarted process (same host, maybe the same pid in a new container) is never
/// taken for its predecessor, whose leases must expire rather than be adopted.
public enum HostIdentity {
    public static let current: String = {
        let host = ProcessInfo.processInfo.hostName.prefix(40)
        let random = UInt32.random(in: 0...UInt32.max)
        return "\(host)/\(getpid())/\(String(random, radix: 16))"
    }()
}

/// The counts of finished tasks are kept in `count` rows per state, and each
/// transaction adds to one chosen at random: transactions on different rows never
/// wait for each other, where one row per state would serialise every task that
/// finishes. Queued and running tasks are counted with `count(*)` over their partial
/// indexes instead (both are bounded: the queue limit, the hosts' concurrency).
enum TaskCountSlots {
    static let count = 64

    static func random() -> String {
        String(Int.random(in: 0..<count))
    }
}
