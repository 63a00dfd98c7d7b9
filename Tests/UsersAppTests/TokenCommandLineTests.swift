import Testing

@testable import UsersApp

/// `--auth-file` and `usersd token ...` on the command line.
@Suite struct TokenCommandLineTests {
    @Test func authFileIsOffByDefaultAndHasAnEnvironmentTwin() throws {
        #expect(try Configuration.parse(["serve"], environment: [:]).authFile == nil)
        #expect(try Configuration.parse(["serve", "--auth-file", "/etc/t"], environment: [:]).authFile == "/etc/t")
        #expect(try Configuration.parse([], environment: ["USERSD_AUTH_FILE": "/e/t"]).authFile == "/e/t")
        #expect(try Configuration.parse([], environment: ["USERSD_AUTH_FILE": ""]).authFile == nil)
        #expect(throws: ConfigurationError("--auth-file must not be empty")) {
            try Configuration.parse(["--auth-file", ""], environment: [:])
        }
    }

    @Test(arguments: [
        (["token", "add", "ci", "--scope", "read"], TokenCommand.add(name: "ci", scope: .read)),
        (["token", "add", "--scope=write", "ci.bot-1"], .add(name: "ci.bot-1", scope: .write)),
        (["--auth-file", "f", "token", "add", "--scope", "admin", "ops"], .add(name: "ops", scope: .admin)),
        (["token", "list"], .list),
        (["token", "revoke", "ci"], .revoke(name: "ci")),
    ])
    func tokenCommandsParse(arguments: [String], command: TokenCommand) throws {
        #expect(try Configuration.parse(arguments, environment: [:]).command == .token(command))
    }

    @Test(arguments: [
        (["token"], "usage: usersd token add NAME --scope SCOPE | token list | token revoke NAME"),
        (["token", "remove", "ci"], "usage: usersd token add NAME --scope SCOPE | token list | token revoke NAME"),
        (["token", "add", "ci"], "usersd token add needs --scope read, write or admin"),
        (["token", "add", "--scope", "read"], "usersd token add needs a NAME"),
        (["token", "add", "ci", "--scope", "root"], "--scope: 'root' is not read, write or admin"),
        (["token", "add", "c i", "--scope", "read"], "token name 'c i': use 1-64 letters, digits, '.', '_' or '-'"),
        (["token", "add", "a", "b", "--scope", "read"], "unexpected argument 'b'"),
        (["token", "list", "extra"], "unexpected argument 'extra'"),
        (["token", "list", "--scope", "read"], "--scope belongs to usersd token add"),
        (["token", "revoke"], "usersd token revoke needs a NAME"),
        (["serve", "--scope", "read"], "--scope belongs to usersd token add NAME --scope SCOPE"),
        (["token", "add", "ci", "--scope"], "--scope needs a value (read, write or admin)"),
    ])
    func badTokenCommandLinesAreOneClearError(arguments: [String], message: String) {
        #expect(throws: ConfigurationError(message)) { try Configuration.parse(arguments, environment: [:]) }
    }
}
