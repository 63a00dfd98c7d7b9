import Basics
import Foundation
import Glibc
import Testing

@testable import UsersApp

/// The token file of `--auth-file`: what it accepts, what it refuses and why.
@Suite struct TokenFileTests {
    static let hashA = SHA256.hash(utf8: "token-a").hex
    static let hashB = SHA256.hash(utf8: "token-b").hex
    static let hashC = SHA256.hash(utf8: "token-c").hex

    @Test func commentsBlankLinesTabsAndTrailingCommentsAreAllowed() throws {
        let text = """
            # who        scope  sha256

            ci-reader\tread\t\(Self.hashA)
               backoffice   write  \(Self.hashB)   # the back office
              # indented comment
            ops.admin_1 admin \(Self.hashC.uppercased())\r

            """
        let file = try TokenFile.parse(text)
        #expect(file.entries.map(\.name) == ["ci-reader", "backoffice", "ops.admin_1"])
        #expect(file.entries.map(\.scope) == [.read, .write, .admin])
        #expect(file.entries.map(\.line) == [3, 4, 6])
        #expect(file.entries[2].digest == SHA256.hash(utf8: "token-c"))
        #expect(file.scopeCounts == "1 read, 1 write, 1 admin")
    }

    @Test func anEmptyFileHasNoTokens() throws {
        #expect(try TokenFile.parse("").entries.isEmpty)
        #expect(try TokenFile.parse("# none yet\n\n").entries.isEmpty)
    }

    @Test(arguments: [
        ("ci read \(hashA)\nci write \(hashB)\n", "line 2: the name 'ci' is already used on line 1"),
        ("a read \(hashA)\n\nb admin \(hashA)\n", "line 3: 'b' has the same token hash as 'a' on line 1"),
        ("a reader \(hashA)\n", "line 1: the scope of 'a' is not read, write or admin"),
        ("a Read \(hashA)\n", "line 1: the scope of 'a' is not read, write or admin"),
        ("a read\n", "line 1: expected NAME SCOPE SHA256HEX, found 2 fields"),
        ("a read \(hashA) extra\n", "line 1: expected NAME SCOPE SHA256HEX, found 4 fields"),
        ("a/b read \(hashA)\n", "line 1: a token name is 1-64 letters, digits, '.', '_' or '-'"),
        (
            "\(String(repeating: "n", count: 65)) read \(hashA)\n",
            "line 1: a token name is 1-64 letters, digits, '.', '_' or '-'"
        ),
    ])
    func malformedLinesAreRefusedNamingTheLine(text: String, message: String) {
        #expect(throws: TokenFileError(.malformed, message)) { try TokenFile.parse(text) }
    }

    /// A hash field that is not 64 hex digits is refused, and the error does not
    /// quote it: it may be a token pasted in the wrong place.
    @Test(arguments: [
        String(hashA.dropLast()), hashA + "0", String(hashA.dropLast()) + "g",
        "Jb4si3aJJjzUewqwVr615L_XmBQ6ypCIu5VRoiqdDHg",
    ])
    func aBadHashIsRefusedWithoutQuotingIt(field: String) throws {
        let error = try #require(throws: TokenFileError.self) { try TokenFile.parse("a read \(field)\n") }
        #expect(error.kind == .malformed)
        #expect(error.message.hasPrefix("line 1: the hash of 'a' is not 64 hex digits"))
        #expect(!error.message.contains(field))
    }

    // MARK: - Files

    func withDirectory(_ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try body(directory.path)
    }

    func write(_ text: String, to path: String, mode: mode_t) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        #expect(chmod(path, mode) == 0)
    }

    @Test(arguments: [0o600, 0o400, 0o640, 0o660] as [mode_t])
    func aFileForItsOwnerOrGroupLoads(mode: mode_t) throws {
        try withDirectory { directory in
            let path = directory + "/tokens"
            try write("a read \(Self.hashA)\n", to: path, mode: mode)
            #expect(try TokenFile.load(path: path).entries.map(\.name) == ["a"])
        }
    }

    /// A file every user may read (or write: then anyone could add a token) is refused.
    @Test(arguments: [0o644, 0o604, 0o602, 0o666] as [mode_t])
    func aFileOpenToEveryUserIsRefused(mode: mode_t) throws {
        try withDirectory { directory in
            let path = directory + "/tokens"
            try write("a read \(Self.hashA)\n", to: path, mode: mode)
            let error = try #require(throws: TokenFileError.self) { try TokenFile.load(path: path) }
            #expect(error.kind == .permissions)
            #expect(error.message.contains("mode 0\(String(mode, radix: 8))"))
        }
    }

    @Test func aMissingFileADirectoryAndMalformedTextAreEachTheirKind() throws {
        try withDirectory { directory in
            #expect(throws: TokenFileError(.missing, "\(directory)/none: no such file")) {
                try TokenFile.load(path: directory + "/none")
            }
            #expect(chmod(directory, 0o700) == 0)
            let notRegular = try #require(throws: TokenFileError.self) { try TokenFile.load(path: directory) }
            #expect(notRegular.kind == .unreadable)
            let path = directory + "/tokens"
            try write("a read\n", to: path, mode: 0o600)
            #expect(
                throws: TokenFileError(.malformed, "\(path): line 1: expected NAME SCOPE SHA256HEX, found 2 fields")
            ) {
                try TokenFile.load(path: path)
            }
            try Data([0x61, 0x20, 0xFF, 0x0A]).write(to: URL(fileURLWithPath: path))
            #expect(throws: TokenFileError(.malformed, "\(path): not UTF-8 text")) { try TokenFile.load(path: path) }
        }
    }

    // MARK: - The token command's pieces

    /// RFC 4648 section 10's vectors, in the URL-safe alphabet without padding.
    @Test func base64URLFollowsRFC4648WithoutPadding() {
        let vectors = [
            ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ]
        for (input, output) in vectors {
            #expect(TokenCommand.base64URL(Array(input.utf8)) == output)
        }
        #expect(TokenCommand.base64URL([0xFB, 0xFF, 0xBF]) == "-_-_")
    }

    @Test func newTokensAre256RandomBitsInURLSafeText() {
        let tokens = (0..<64).map { _ in TokenCommand.newToken() }
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for token in tokens {
            #expect(token.count == 43)  // 256 bits / 6 bits per character, rounded up
            #expect(token.allSatisfy { alphabet.contains($0) })
        }
        #expect(Set(tokens).count == tokens.count)
    }

    @Test func revokingRemovesOneLineAndKeepsEveryOtherByte() {
        let text = "# tokens\na read x\r\nb write y # note\n\nc admin z\n"
        #expect(TokenCommand.removingLine(3, from: text) == "# tokens\na read x\r\n\nc admin z\n")
        #expect(TokenCommand.removingLine(5, from: text) == "# tokens\na read x\r\nb write y # note\n\n")
        #expect(LockedFile.directory(of: "tokens") == ".")
        #expect(LockedFile.directory(of: "/tokens") == "/")
        #expect(LockedFile.directory(of: "/etc/usersd/tokens") == "/etc/usersd")
    }
}
