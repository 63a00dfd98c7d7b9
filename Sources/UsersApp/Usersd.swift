import Foundation
import Lifecycle
import Logging
import Metrics

/// The `usersd` command: parses settings and runs a subcommand.
public enum Usersd {
    public static let version = "0.1.0"

    /// Runs the command line and returns the exit status (64 for a bad setting).
    @available(*, noasync, message: "runs the whole process")
    public static func main(arguments: [String], environment: [String: String]) -> Int32 {
        ProcessFigures.markStart()
        let configuration: Configuration
        do {
            configuration = try Configuration.parse(arguments, environment: environment)
        } catch {
            printError("usersd: \(error.message)")
            return 64
        }
        Log.level = configuration.logLevel
        switch configuration.command {
        case .help:
            print(Configuration.helpText, terminator: "")
            return 0
        case .version:
            print("usersd \(version)")
            return 0
        case .serve:
            // Before any thread starts, whichever way serving was spelt (`usersd`,
            // `usersd serve`, `usersd --db X serve`): re-executes itself once with
            // glibc's malloc settings (see MallocTuning).
            MallocTuning.reexecIfNeeded(arguments: CommandLine.arguments)
            return Server(configuration: configuration, environment: environment).run()
        case .migrate:
            return Maintenance(configuration: configuration).migrate()
        case .check:
            return Maintenance(configuration: configuration).check()
        case .backup(let destination):
            return Maintenance(configuration: configuration).backup(to: destination)
        case .token(let command):
            return command.run(authFile: configuration.authFile)
        }
    }

    static func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
