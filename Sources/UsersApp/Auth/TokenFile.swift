public import Basics
import Glibc

/// What an API token may do. Each scope includes the ones below it:
/// `read` ⊂ `write` ⊂ `admin`.
public enum TokenScope: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// `GET`/`HEAD` of users and tasks.
    case read
    /// Creating, changing and deleting users and tasks (the seed's `GET /start-task` too).
    case write
    /// `GET /metrics` (from an address `--metrics-allow` admits).
    case admin

    public init?(name: some StringProtocol) {
        switch name {
        case "read": self = .read
        case "write": self = .write
        case "admin": self = .admin
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .admin: "admin"
        }
    }

    public var description: String { name }

    public static func < (lhs: TokenScope, rhs: TokenScope) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One token of the token file: its name (for the access log), its scope, and the
/// SHA-256 of the token (the file never holds the token itself).
public struct TokenEntry: Sendable, Equatable {
    public var name: String
    public var scope: TokenScope
    public var digest: SHA256.Digest
    /// The line of the file it came from (1-based).
    public var line: Int
}

/// Why a token file cannot be used: one line, for stderr or the log.
public struct TokenFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The file does not exist.
        case missing
        /// It cannot be opened or read, or is not a regular file.
        case unreadable
        /// Every user may read or write it.
        case permissions
        /// A line is not `NAME SCOPE SHA256HEX`, or names or hashes repeat.
        case malformed
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// The token file of `--auth-file`: one token per line, `NAME SCOPE SHA256HEX`.
///
/// ```
/// # who     scope  sha256 of the token (printf %s "$TOKEN" | sha256sum)
/// ci-reader read   4f0b...e1
/// backoffice write 9a3c...07   # a trailing comment
/// ```
///
/// Fields are separated by spaces or tabs. Blank lines and lines whose first
/// non-blank character is `#` are ignored, as is anything after the hash that starts
/// with `#`. A name is 1-64 letters, digits, `.`, `_` or `-` (it is written to the
/// access log, so it may hold nothing that needs escaping); a scope is `read`,
/// `write` or `admin`; the hash is 64 hex digits. Names and hashes are unique.
///
/// Errors name the line but never quote its hash field: a token pasted there by
/// mistake must not end up in the journal.
public struct TokenFile: Sendable, Equatable {
    public var entries: [TokenEntry]

    public init(entries: [TokenEntry] = []) {
        self.entries = entries
    }

    /// Parses the file's text.
    public static func parse(_ text: String) throws(TokenFileError) -> TokenFile {
        var entries: [TokenEntry] = []
        var lineNumber = 0
        // Lines end at each LF byte (a CR before it is white space): not at Characters,
        // which take CR LF as one.
        for rawLine in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let fields = Substring(rawLine).unicodeScalars.split(whereSeparator: {
                $0 == " " || $0 == "\t" || $0 == "\r"
            })
            .map { Substring($0) }
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            let significant = fields.prefix { !$0.hasPrefix("#") }
            guard significant.count == 3 else {
                throw TokenFileError(
                    .malformed,
                    "line \(lineNumber): expected NAME SCOPE SHA256HEX, found \(significant.count) fields")
            }
            let name = String(significant[significant.startIndex])
            guard isValidName(name) else {
                throw TokenFileError(
                    .malformed,
                    "line \(lineNumber): a token name is 1-64 letters, digits, '.', '_' or '-'")
            }
            guard let scope = TokenScope(name: significant[significant.startIndex + 1]) else {
                throw TokenFileError(
                    .malformed, "line \(lineNumber): the scope of '\(name)' is not read, write or admin")
            }
            guard let digest = SHA256.Digest(hex: significant[significant.startIndex + 2]) else {
                throw TokenFileError(
                    .malformed,
                    "line \(lineNumber): the hash of '\(name)' is not 64 hex digits (the file holds the SHA-256 "
                        + "of each token, never a token: printf %s \"$TOKEN\" | sha256sum)")
            }
            if let earlier = entries.first(where: { $0.name == name }) {
                throw TokenFileError(
                    .malformed, "line \(lineNumber): the name '\(name)' is already used on line \(earlier.line)")
            }
            if let earlier = entries.first(where: { $0.digest == digest }) {
                throw TokenFileError(
                    .malformed,
                    "line \(lineNumber): '\(name)' has the same token hash as '\(earlier.name)' on line \(earlier.line)"
                )
            }
            entries.append(TokenEntry(name: name, scope: scope, digest: digest, line: lineNumber))
        }
        return TokenFile(entries: entries)
    }

    /// Reads and parses the file at `path`, refusing one that every user may read
    /// or write (mode bits `o+r`, `o+w`): the hashes and names are for the service
    /// and its operators, and a file anyone can write lets anyone add a token.
    public static func load(path: String) throws(TokenFileError) -> TokenFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw openError(path, errno: errno) }
        defer { close(fd) }
        return try read(fd: fd, path: path)
    }

    /// Checks and parses the file open on `fd` (read from its start).
    static func read(fd: Int32, path: String) throws(TokenFileError) -> TokenFile {
        let text = try readText(fd: fd, path: path)
        do {
            return try parse(text)
        } catch {
            throw TokenFileError(error.kind, "\(path): \(error.message)")
        }
    }

    /// The text of the file open on `fd`, once it is known to be a regular file that
    /// not every user may read or write.
    static func readText(fd: Int32, path: String) throws(TokenFileError) -> String {
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw TokenFileError(.unreadable, "\(path): \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw TokenFileError(.unreadable, "\(path): not a regular file")
        }
        if status.st_mode & (S_IROTH | S_IWOTH) != 0 {
            let mode = String(status.st_mode & 0o7777, radix: 8)
            throw TokenFileError(
                .permissions,
                "\(path): every user may read or write it (mode 0\(mode)); allow its owner only: chmod 600 \(path)")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        var offset: off_t = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TokenFileError(.unreadable, "\(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            offset += off_t(count)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TokenFileError(.malformed, "\(path): not UTF-8 text")
        }
        return text
    }

    static func openError(_ path: String, errno code: Int32) -> TokenFileError {
        if code == ENOENT { return TokenFileError(.missing, "\(path): no such file") }
        return TokenFileError(.unreadable, "\(path): \(String(cString: strerror(code)))")
    }

    /// 1-64 ASCII letters, digits, `.`, `_` or `-`.
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                    true
                default: false
                }
            }
    }

    /// How many tokens have each scope, as `2 read, 0 write, 1 admin`.
    public var scopeCounts: String {
        TokenScope.allCases.map { scope in "\(entries.count { $0.scope == scope }) \(scope)" }.joined(separator: ", ")
    }
}
