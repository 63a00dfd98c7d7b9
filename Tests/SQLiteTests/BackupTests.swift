import Foundation
import Glibc
import Testing

@testable import SQLite

/// `Connection.backupSource(path:)` and `Connection.backup(to:)` on a temporary
/// WAL database: the copy is whole and owner-only, and a refused or failed backup
/// creates nothing, beside the destination or the source.
@Suite struct BackupTests {
    let directory: URL
    let source: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("usersd-backup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        source = directory.appendingPathComponent("users.sqlite3").path
        let connection = try Connection(path: source)
        try connection.enableWAL(synchronous: "NORMAL")
        try connection.execute(
            """
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
            INSERT INTO users (name) SELECT printf('user %d %.*c', i, 500, 'x') FROM n;
            """)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func names() throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: directory.path))
    }

    func permissions(_ path: String) -> mode_t {
        var status = stat()
        return lstat(path, &status) == 0 ? status.st_mode & 0o7777 : 0
    }

    func removeDirectory() {
        try? FileManager.default.removeItem(at: directory)
    }

    @Test func theCopyIsWholeAndReadableByItsOwnerOnly() throws {
        defer { removeDirectory() }
        let pages = try Connection.backupSource(path: source, busyTimeoutMilliseconds: 1000).backup(to: path("copy"))
        #expect(pages > 250)
        // The owner-only mode does not depend on the umask of the process.
        #expect(permissions(path("copy")) == 0o600)
        // Beside the source's own files, nothing but the copy: no journal, no temporary file.
        #expect(try names().filter { !$0.hasPrefix("users.sqlite3") } == ["copy"])
        let copy = try Connection(path: path("copy"), readOnly: true)
        #expect(try copy.prepare("PRAGMA integrity_check").firstText() == "ok")
        #expect(try copy.prepare("SELECT count(*) FROM users").firstInteger() == 2000)
    }

    @Test func anExistingDestinationIsNeverReplaced() throws {
        defer { removeDirectory() }
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: path("existing")))
        let connection = try Connection.backupSource(path: source, busyTimeoutMilliseconds: 1000)
        let before = try names()
        let error = #expect(throws: BackupError.self) { try connection.backup(to: path("existing")) }
        #expect(error?.kind == .destination)
        #expect(try String(contentsOfFile: path("existing"), encoding: .utf8) == "keep me")
        #expect(try names() == before)
    }

    @Test func aSymbolicLinkIsNotFollowed() throws {
        defer { removeDirectory() }
        try FileManager.default.createSymbolicLink(atPath: path("link"), withDestinationPath: path("target"))
        let connection = try Connection.backupSource(path: source, busyTimeoutMilliseconds: 1000)
        let before = try names()
        let error = #expect(throws: BackupError.self) { try connection.backup(to: path("link")) }
        #expect(error?.kind == .destination)
        #expect(!FileManager.default.fileExists(atPath: path("target")))
        #expect(try names() == before)
    }

    @Test func aDestinationInAMissingDirectoryFailsCleanly() throws {
        defer { removeDirectory() }
        let connection = try Connection.backupSource(path: source, busyTimeoutMilliseconds: 1000)
        let error = #expect(throws: BackupError.self) { try connection.backup(to: path("absent/copy")) }
        #expect(error?.kind == .destination)
        #expect(error?.message.hasSuffix("No such file or directory") == true)
    }

    @Test func aMissingSourceIsAnErrorAndCreatesNothing() throws {
        defer { removeDirectory() }
        let before = try names()
        let error = #expect(throws: BackupError.self) {
            try Connection.backupSource(path: path("missing.sqlite3"), busyTimeoutMilliseconds: 1000)
        }
        #expect(error?.kind == .source)
        #expect(error?.message == "cannot read database \(path("missing.sqlite3")): No such file or directory")
        #expect(try names() == before)
    }

    @Test func aFileThatIsNotADatabaseIsAnError() throws {
        defer { removeDirectory() }
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: path("text")))
        let error = #expect(throws: BackupError.self) {
            try Connection.backupSource(path: path("text"), busyTimeoutMilliseconds: 1000)
        }
        #expect(error?.kind == .source)
        #expect(error?.message.hasSuffix("file is not a database") == true)
    }
}
