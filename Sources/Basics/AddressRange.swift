import Glibc

/// An IPv4 or IPv6 network in CIDR notation (`127.0.0.0/8`, `::1`, `fd00::/8`), for
/// allow-lists of client addresses.
///
/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`, what a dual-stack socket
/// reports for an IPv4 peer) is matched as the IPv4 address it carries.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The network's address bytes: 4 for IPv4, 16 for IPv6.
    let network: [UInt8]
    let prefixLength: Int

    /// Parses `ADDRESS` or `ADDRESS/PREFIX`; `nil` when either part is invalid.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = Self.bytes(of: String(parts[0])) else { return nil }
        var length = address.count * 8
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...length).contains(given) else {
                return nil
            }
            length = given
        }
        network = Self.masked(address, to: length)
        prefixLength = length
    }

    /// The default of `--metrics-allow` and `--allow-from`: the loopback networks.
    public static let loopback: [AddressRange] = [AddressRange("127.0.0.0/8")!, AddressRange("::1")!]

    /// A comma-separated list (`127.0.0.0/8,::1`); `nil` when any entry is invalid or
    /// the list is empty.
    public static func list(_ text: String) -> [AddressRange]? {
        let entries = text.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
        guard !entries.isEmpty else { return nil }
        var ranges: [AddressRange] = []
        for entry in entries {
            guard let range = AddressRange(entry) else { return nil }
            ranges.append(range)
        }
        return ranges
    }

    /// Whether `address` (textual, as in `REMOTE_ADDR`) lies in this network. Anything
    /// that is not an IP address (`unix:`, empty) is in no network.
    public func contains(_ address: String) -> Bool {
        guard let bytes = Self.bytes(of: address) else { return false }
        return contains(bytes: bytes)
    }

    func contains(bytes: [UInt8]) -> Bool {
        var bytes = bytes
        if bytes.count == 16, network.count == 4, Self.isIPv4Mapped(bytes) { bytes = Array(bytes[12...]) }
        guard bytes.count == network.count else { return false }
        return Self.masked(bytes, to: prefixLength) == network
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = network.count == 4 ? AF_INET : AF_INET6
        let text = network.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
                ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        return "\(text)/\(prefixLength)"
    }

    /// The address bytes of an IPv4 or IPv6 literal (`inet_pton`), or `nil`.
    public static func bytes(of text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count < Int(INET6_ADDRSTRLEN) else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// `::ffff:a.b.c.d`.
    static func isIPv4Mapped(_ bytes: [UInt8]) -> Bool {
        bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
    }

    static func masked(_ bytes: [UInt8], to length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = min(8, max(0, length - index * 8))
            return bits == 8 ? byte : byte & UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
        }
    }
}

extension [AddressRange] {
    /// Whether any network of the list contains `address` (`nil`: not an IP peer).
    public func allows(_ address: String?) -> Bool {
        guard let address, let bytes = AddressRange.bytes(of: address) else { return false }
        return contains { $0.contains(bytes: bytes) }
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
