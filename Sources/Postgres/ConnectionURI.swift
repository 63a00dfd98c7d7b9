/// What usersd needs to know about a PostgreSQL connection URI: whether a `--db`
/// value is one, and how to show it without its password.
public enum ConnectionURI {
    /// `postgresql://` and `postgres://` are libpq's two URI schemes; anything else is
    /// not a PostgreSQL URI (usersd takes it for an SQLite path).
    public static func isPostgres(_ text: String) -> Bool {
        text.hasPrefix("postgresql://") || text.hasPrefix("postgres://")
    }

    /// The URI with any password replaced by `***`: the `user:password@` of the
    /// authority and a `password=` query parameter (libpq accepts both). Logs and
    /// error messages show this form only.
    public static func redacted(_ uri: String) -> String {
        guard let colon = uri.firstIndex(of: ":"), uri[colon...].hasPrefix("://") else { return uri }
        var text = uri
        let authorityStart = uri.index(colon, offsetBy: 3)
        let rest = text[authorityStart...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? text.endIndex
        if let at = text[authorityStart..<authorityEnd].lastIndex(of: "@"),
            let colon = text[authorityStart..<at].firstIndex(of: ":")
        {
            text.replaceSubrange(text.index(after: colon)..<at, with: "***")
        }
        guard let query = text.firstIndex(of: "?") else { return text }
        let parameters = text[text.index(after: query)...].split(separator: "&", omittingEmptySubsequences: false)
        let cleaned = parameters.map { parameter -> String in
            parameter.lowercased().hasPrefix("password=") ? "password=***" : String(parameter)
        }
        return String(text[...query]) + cleaned.joined(separator: "&")
    }
}
