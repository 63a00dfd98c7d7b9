import Glibc

/// glibc malloc settings for a server with one thread per FastCGI connection.
///
/// glibc reads them only from `GLIBC_TUNABLES` when the process starts, so
/// `usersd serve` re-executes its own binary once with the variable set (same PID,
/// same arguments, descriptors and environment: systemd's socket and notify settings
/// carry over). What the settings save is in bench/results.
/// - `tcache_count=32`: each thread keeps up to 32 freed chunks per size instead of
///   7, so a request's allocations are served from its thread's cache instead of
///   the arena's bins.
/// - `mxfast=0`: no fast bins, so libfcgi's 8 KiB stream buffers (two per request)
///   do not make malloc consolidate them first.
///
/// A `GLIBC_TUNABLES` already in the environment (even empty) is left as it is:
/// that is how an operator chooses other settings, or none.
public enum MallocTuning {
    public static let tunables = "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=32"

    /// Call when the command line says to serve, before any thread exists. Returns
    /// without doing anything when the variable is set, or when the re-exec fails (the
    /// process then runs with glibc's defaults).
    @available(*, noasync, message: "replaces the process image")
    public static func reexecIfNeeded(arguments: [String]) {
        guard !arguments.isEmpty, getenv("GLIBC_TUNABLES") == nil else { return }
        guard setenv("GLIBC_TUNABLES", tunables, 1) == 0 else { return }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv(executablePath(), argv)
        // Still here: the exec failed. Run on without the settings.
        for pointer in argv { free(pointer) }
        unsetenv("GLIBC_TUNABLES")
    }

    /// The running binary's path, so the kernel names the process after it again
    /// (`/proc/self/exe` would name it `exe`, and `pgrep usersd` would miss it).
    /// Falls back to `/proc/self/exe` when the file was replaced or removed since.
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return "/proc/self/exe" }
        let path = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard !path.hasSuffix(" (deleted)"), access(path, X_OK) == 0 else { return "/proc/self/exe" }
        return path
    }
}
