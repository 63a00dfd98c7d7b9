import Foundation
import Store

/// The operational subcommands: `migrate`, `check`, `backup PATH`.
struct Maintenance {
    let configuration: Configuration

    @available(*, noasync, message: "runs the whole process")
    func migrate() -> Int32 {
        do {
            let backend = try Backends.open(configuration, forServing: false)
            defer { backend.close() }
            let applied = try blockingWait { try await backend.migrate() }
            print(
                applied.isEmpty
                    ? "up to date" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
            return 0
        } catch {
            Usersd.printError("usersd migrate: \(error)")
            return 1
        }
    }

    @available(*, noasync, message: "runs the whole process")
    func check() -> Int32 {
        var problems = 0
        print("configuration: ok (database \(Backends.describe(configuration)))")
        problems += checkTokenFile()
        if Backends.isPostgres(configuration) || FileManager.default.fileExists(atPath: configuration.databasePath) {
            do {
                let backend = try Backends.open(configuration, forServing: false)
                defer { backend.close() }
                let integrity = try blockingWait { try await backend.integrityCheck() }
                print("database integrity: \(integrity)")
                if integrity != "ok" { problems += 1 }
                let pending = try blockingWait { try await backend.pendingMigrations() }
                print(
                    pending.isEmpty
                        ? "migrations: up to date" : "migrations: \(pending.count) pending (run usersd migrate)")
            } catch {
                print("database: cannot open: \(error)")
                problems += 1
            }
        } else {
            print("database: not created yet (usersd creates it on first start)")
        }
        if let site = configuration.nginxSiteFile {
            problems += NginxSiteCheck(configuration: configuration).run(path: site)
        }
        return problems == 0 ? 0 : 1
    }

    /// Reports access control: off without `--auth-file`, else the file's tokens or
    /// why `serve` would refuse it. Returns the number of problems (0 or 1).
    private func checkTokenFile() -> Int {
        guard let path = configuration.authFile else {
            print("access control: off (no --auth-file: every route is open)")
            return 0
        }
        do {
            let file = try TokenFile.load(path: path)
            print("access control: on, \(path): \(file.entries.count) tokens (\(file.scopeCounts))")
            return 0
        } catch {
            print("access control: \(error.message)")
            return 1
        }
    }

    /// `usersd backup PATH`: copies the database (which may be serving) into a new file
    /// PATH, readable by its owner only, complete or absent. Exit statuses from
    /// sysexits.h, as 64 for a bad setting: 66 (`EX_NOINPUT`) when the database is
    /// missing, unreadable or not usersd's (nothing is created: a mistyped `--db` must
    /// not leave an empty database and an empty backup behind); 73 (`EX_CANTCREAT`)
    /// when PATH exists or cannot be created; 75 (`EX_TEMPFAIL`) when the database
    /// stayed locked beyond the busy timeout; 74 (`EX_IOERR`) when copying failed.
    @available(*, noasync, message: "runs the whole process")
    func backup(to destination: String) -> Int32 {
        do throws(BackupFailure) {
            try Backends.backup(configuration, to: destination)
            print("backup written to \(destination)")
            return 0
        } catch {
            Usersd.printError("usersd backup: \(error.message)")
            switch error.kind {
            case .source: return 66
            case .destination: return 73
            case .copy: return 74
            case .busy: return 75
            }
        }
    }
}

/// Compares an nginx site file with usersd's settings and prints what disagrees.
struct NginxSiteCheck {
    let configuration: Configuration

    /// Returns the number of problems found.
    func run(path: String) -> Int {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            print("nginx: cannot read \(path)")
            return 1
        }
        var problems = 0
        func warn(_ message: String) {
            print("nginx: warning: \(message)")
            problems += 1
        }
        if !text.contains("fastcgi_keep_conn on") {
            warn("fastcgi_keep_conn is not on: every request opens a new connection")
        }
        if let size = value(of: "client_max_body_size", in: text), let bytes = Self.bytes(size),
            bytes != configuration.maxBodyBytes
        {
            warn("client_max_body_size \(size) differs from usersd --max-body \(configuration.maxBodyBytes)")
        }
        if let timeout = value(of: "fastcgi_read_timeout", in: text), let seconds = Self.seconds(timeout),
            seconds * 1000 <= Double(configuration.busyTimeoutMilliseconds)
        {
            warn(
                "fastcgi_read_timeout \(timeout) is not longer than usersd --busy-timeout \(configuration.busyTimeoutMilliseconds) ms"
            )
        }
        if let keepalive = value(of: "keepalive", in: text), let connections = Int(keepalive),
            connections * 4 > configuration.maxConnections
        {
            warn(
                "keepalive \(keepalive) per nginx worker is large against usersd --max-connections \(configuration.maxConnections)"
            )
        }
        if let socket = configuration.socketPath, !text.contains("unix:\(socket)") {
            warn("no fastcgi_pass/upstream to unix:\(socket)")
        }
        if problems == 0 { print("nginx: \(path) agrees with usersd's settings") }
        return problems
    }

    private func value(of directive: String, in text: String) -> String? {
        for line in text.split(separator: "\n") {
            let words = line.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true)
            if words.first == Substring(directive), words.count >= 2 {
                return String(words[1].trimmingCharacters(in: CharacterSet(charactersIn: ";")))
            }
        }
        return nil
    }

    static func bytes(_ size: String) -> Int? {
        let lower = size.lowercased()
        let multiplier =
            lower.hasSuffix("k") ? 1024 : lower.hasSuffix("m") ? 1_048_576 : lower.hasSuffix("g") ? 1 << 30 : 1
        return Int(multiplier == 1 ? lower : String(lower.dropLast())).map { $0 * multiplier }
    }

    static func seconds(_ time: String) -> Double? {
        let lower = time.lowercased()
        if lower.hasSuffix("ms") { return Double(lower.dropLast(2)).map { $0 / 1000 } }
        if lower.hasSuffix("s") { return Double(lower.dropLast()) }
        if lower.hasSuffix("m") { return Double(lower.dropLast()).map { $0 * 60 } }
        return Double(lower)
    }
}
