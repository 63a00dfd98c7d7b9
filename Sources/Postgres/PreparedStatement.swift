/// A statement each connection prepares once (on first use, and again after a
/// reconnect), then runs by name: the server parses and plans it once per
/// connection instead of once per call.
///
/// Declare them as `static let`s: the name identifies the SQL on every connection.
public struct PreparedStatement: Sendable, Hashable {
    public let name: String
    public let sql: String

    public init(_ name: String, _ sql: String) {
        self.name = name
        self.sql = sql
    }
}
