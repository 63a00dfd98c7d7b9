import Foundation
import UsersApp

// No top-level await: the main thread stays a plain thread that takes signals with
// sigwait (see Signals). Everything lives in UsersApp.
let status = Usersd.main(
    arguments: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
exit(status)
