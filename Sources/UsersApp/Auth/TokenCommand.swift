import Basics
import Glibc

/// `usersd token add NAME --scope SCOPE`, `usersd token list`, `usersd token revoke NAME`:
/// managing the token file of `--auth-file`.
///
/// Every change happens under an exclusive `flock` of the file, re-checked against
/// the path after it is taken (a `revoke` replaces the file by renaming a new one
/// over it; whoever waited on the old file then retries on the new one), so two
/// commands run at once never lose each other's change.
public enum TokenCommand: Sendable, Equatable {
    case add(name: String, scope: TokenScope)
    case list
    case revoke(name: String)

    /// What the command line said after `token`, before `--scope` is known.
    struct Arguments {
        var action: String
        var name: String?

        var takesName: Bool { action != "list" }

        static func parse(_ remaining: inout ArraySlice<String>) throws(ConfigurationError) -> Arguments {
            guard let action = remaining.first, ["add", "list", "revoke"].contains(action) else {
                throw ConfigurationError("usage: usersd token add NAME --scope SCOPE | token list | token revoke NAME")
            }
            remaining.removeFirst()
            return Arguments(action: action)
        }

        func command(scope: String?) throws(ConfigurationError) -> TokenCommand {
            if action == "list" {
                guard scope == nil else { throw ConfigurationError("--scope belongs to usersd token add") }
                return .list
            }
            guard let name else { throw ConfigurationError("usersd token \(action) needs a NAME") }
            guard TokenFile.isValidName(name) else {
                throw ConfigurationError("token name '\(name)': use 1-64 letters, digits, '.', '_' or '-'")
            }
            if action == "revoke" {
                guard scope == nil else { throw ConfigurationError("--scope belongs to usersd token add") }
                return .revoke(name: name)
            }
            guard let scope else { throw ConfigurationError("usersd token add needs --scope read, write or admin") }
            guard let parsed = TokenScope(name: scope) else {
                throw ConfigurationError("--scope: '\(scope)' is not read, write or admin")
            }
            return .add(name: name, scope: parsed)
        }
    }

    /// Runs the command on the file; returns the exit status (sysexits.h): 0, 64 with
    /// no `--auth-file`, 65 (`EX_DATAERR`) for a malformed file, a name that is taken
    /// (add) or absent (revoke), 66 (`EX_NOINPUT`) for a file that is missing (list,
    /// revoke) or unreadable, 73 (`EX_CANTCREAT`) when it cannot be created or
    /// replaced, 74 (`EX_IOERR`) when writing fails, 77 (`EX_NOPERM`) for a file
    /// every user may read or write.
    @available(*, noasync, message: "blocks on file locks and writes")
    func run(authFile: String?) -> Int32 {
        guard let path = authFile else {
            Usersd.printError("usersd token: no token file: pass --auth-file FILE (or USERSD_AUTH_FILE)")
            return 64
        }
        do throws(TokenCommandFailure) {
            switch self {
            case .add(let name, let scope): try Self.add(name: name, scope: scope, path: path)
            case .list: try Self.list(path: path)
            case .revoke(let name): try Self.revoke(name: name, path: path)
            }
            return 0
        } catch {
            Usersd.printError("usersd token: \(error.message)")
            return error.status
        }
    }

    // MARK: - The commands

    private static func add(name: String, scope: TokenScope, path: String) throws(TokenCommandFailure) {
        var file = try LockedFile.open(path, create: true)
        defer { file.close() }
        let tokens = try file.tokens()
        if let taken = tokens.entries.first(where: { $0.name == name }) {
            throw TokenCommandFailure(
                65,
                "\(path): a token named '\(name)' exists already (line \(taken.line)); revoke it or pick another name")
        }
        let token = newToken()
        let digest = SHA256.hash(utf8: token)
        let separator = file.endsWithNewline ? "" : "\n"
        try file.append(Array("\(separator)\(name) \(scope) \(digest.hex)\n".utf8))
        print(token)
        Usersd.printError(
            "usersd token: added '\(name)' (scope \(scope)) to \(path); the token (on standard output) is shown this once. "
                + "A serving usersd takes it on SIGHUP (systemctl reload usersd).")
    }

    private static func list(path: String) throws(TokenCommandFailure) {
        let tokens: TokenFile
        do {
            tokens = try TokenFile.load(path: path)
        } catch {
            throw TokenCommandFailure(error)
        }
        let width = tokens.entries.map(\.name.count).max() ?? 0
        for entry in tokens.entries {
            print(entry.name + String(repeating: " ", count: width - entry.name.count + 2) + entry.scope.name)
        }
        if tokens.entries.isEmpty { Usersd.printError("usersd token: no tokens in \(path)") }
    }

    private static func revoke(name: String, path: String) throws(TokenCommandFailure) {
        var file = try LockedFile.open(path, create: false)
        defer { file.close() }
        let tokens = try file.tokens()
        guard let entry = tokens.entries.first(where: { $0.name == name }) else {
            throw TokenCommandFailure(65, "\(path): no token named '\(name)'")
        }
        try file.replace(with: removingLine(entry.line, from: file.contents))
        Usersd.printError(
            "usersd token: revoked '\(name)' (scope \(entry.scope)) from \(path). "
                + "A serving usersd drops it on SIGHUP (systemctl reload usersd).")
    }

    // MARK: - Pieces

    /// A new token: 256 bits from the system's random source (`getrandom(2)`, through
    /// `SystemRandomNumberGenerator`), as 43 characters of URL-safe base64.
    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for _ in 0..<4 {
            withUnsafeBytes(of: generator.next() as UInt64) { bytes.append(contentsOf: $0) }
        }
        return base64URL(bytes)
    }

    /// Base64 with the URL and file name safe alphabet, without padding (RFC 4648
    /// section 5): the token goes into a header and shell variables as it is.
    static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value = UInt32(0)
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << UInt32(16 - 8 * offset) }
            for position in 0...chunk.count {
                output.append(alphabet[Int((value >> UInt32(18 - 6 * position)) & 0x3F)])
            }
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// The text without its line number `line` (1-based); every other byte stays.
    static func removingLine(_ line: Int, from text: String) -> String {
        // Lines as `TokenFile.parse` numbers them: split at each LF byte.
        var lines = Array(text.utf8).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        lines.remove(at: line - 1)
        return String(decoding: Array(lines.joined(separator: [UInt8(ascii: "\n")])), as: UTF8.self)
    }
}

/// A failed token command: the message and the exit status.
struct TokenCommandFailure: Error {
    var status: Int32
    var message: String

    init(_ status: Int32, _ message: String) {
        self.status = status
        self.message = message
    }

    init(_ error: TokenFileError) {
        switch error.kind {
        case .missing, .unreadable: status = 66
        case .permissions: status = 77
        case .malformed: status = 65
        }
        message = error.message
    }
}

/// The token file, open and exclusively locked (`flock`) for one change.
struct LockedFile {
    let path: String
    let fd: Int32
    /// The file's text as read under the lock.
    private(set) var contents = ""

    var endsWithNewline: Bool { contents.isEmpty || contents.hasSuffix("\n") }

    /// Opens (with `create`: creating it `0600` when missing) and locks the file.
    /// A file created by root takes the owner and group of its directory, so a file
    /// made with `sudo usersd token add` in the service's state directory is the
    /// service's to read (systemd's `DynamicUser=` owns that directory).
    static func open(_ path: String, create: Bool) throws(TokenCommandFailure) -> LockedFile {
        while true {
            var created = false
            var fd: Int32 = -1
            if create {
                fd = Glibc.open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                created = fd >= 0
            }
            if fd < 0 {
                if create && errno != EEXIST {
                    throw TokenCommandFailure(73, "\(path): cannot create: \(String(cString: strerror(errno)))")
                }
                fd = Glibc.open(path, O_RDWR | O_APPEND | O_CLOEXEC)
                guard fd >= 0 else {
                    let code = errno
                    if code == ENOENT && create { continue }  // removed meanwhile: create it
                    throw TokenCommandFailure(TokenFile.openError(path, errno: code))
                }
            }
            if created { giveToDirectoryOwner(fd, path) }
            while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
            // Still the file at `path`? (A revoke may have renamed a new one over it.)
            var opened = stat()
            var current = stat()
            if fstat(fd, &opened) == 0, stat(path, &current) == 0, opened.st_dev == current.st_dev,
                opened.st_ino == current.st_ino
            {
                return LockedFile(path: path, fd: fd)
            }
            Glibc.close(fd)
        }
    }

    private static func giveToDirectoryOwner(_ fd: Int32, _ path: String) {
        guard geteuid() == 0 else { return }
        var status = stat()
        guard stat(directory(of: path), &status) == 0 else { return }
        if status.st_uid != 0 || status.st_gid != 0 { _ = fchown(fd, status.st_uid, status.st_gid) }
    }

    /// Reads and parses the file (refusing one every user may read or write).
    mutating func tokens() throws(TokenCommandFailure) -> TokenFile {
        do throws(TokenFileError) {
            contents = try TokenFile.readText(fd: fd, path: path)
            do {
                return try TokenFile.parse(contents)
            } catch {
                throw TokenFileError(error.kind, "\(path): \(error.message)")
            }
        } catch {
            throw TokenCommandFailure(error)
        }
    }

    /// Appends the bytes (the file is open `O_APPEND`) and syncs them to disk.
    func append(_ bytes: [UInt8]) throws(TokenCommandFailure) {
        guard Self.writeAll(fd, bytes), fsync(fd) == 0 else {
            throw TokenCommandFailure(74, "\(path): cannot write: \(String(cString: strerror(errno)))")
        }
    }

    /// Replaces the file with `text`: a new file beside it with the same owner, group
    /// and mode, synced, renamed over it; the directory synced too. Readers see the
    /// old file or the new one, never a part.
    func replace(with text: String) throws(TokenCommandFailure) {
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw TokenCommandFailure(74, "\(path): \(String(cString: strerror(errno)))")
        }
        // Beside it (rename stays within the file system); a name no one else uses,
        // created owner-only and never over an existing file.
        let temporaryPath = path + ".new-\(getpid())-\(UInt32.random(in: .min ... .max))"
        let temporary = Glibc.open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard temporary >= 0 else {
            throw TokenCommandFailure(
                73, "\(path): cannot create a new file beside it: \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(temporary) }
        // Owner first (fchown clears set-id bits), then the old file's mode; until then
        // the new file is 0600, readable by its owner only.
        if geteuid() == 0 { _ = fchown(temporary, status.st_uid, status.st_gid) }
        guard fchmod(temporary, status.st_mode & 0o7777) == 0, Self.writeAll(temporary, Array(text.utf8)),
            fsync(temporary) == 0, rename(temporaryPath, path) == 0
        else {
            let message = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw TokenCommandFailure(74, "\(path): cannot replace it: \(message)")
        }
        let directoryFD = Glibc.open(Self.directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            Glibc.close(directoryFD)
        }
    }

    /// The directory a path names its file in: `.` for a bare name, `/` for `/name`.
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
        }
    }

    func close() {
        Glibc.close(fd)
    }
}
