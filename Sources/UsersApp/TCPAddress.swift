import Basics

/// A TCP listening address: an IPv4 or IPv6 literal and a port.
public struct TCPAddress: Sendable, Equatable {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:9000`, `0.0.0.0:9000` or `[::1]:9000`; `nil` for anything else (a
    /// host name included: the address must not depend on name resolution).
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { return nil }
        }
        guard let port = UInt16(portText), port > 0, AddressRange.bytes(of: String(host)) != nil else { return nil }
        self.init(host: String(host), port: port)
    }
}
