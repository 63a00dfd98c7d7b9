import Glibc

/// Signal handling without handlers: the signals usersd acts on are blocked in every
/// thread (blocked before any thread starts, so all threads inherit the mask) and the
/// main thread takes them one at a time with `sigwait`.
///
/// This is deliberate: libfcgi's `FCGX_Init` installs its own SIGTERM handler that
/// only sets a flag, and a top-level `await` would leave the main thread without the
/// mask. `SIGPIPE` is ignored so a client that goes away yields `EPIPE`, not death.
public enum Signals {
    public enum Event: Sendable, Equatable {
        case terminate(Int32)
        case reload
    }

    static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks TERM/INT/HUP in the calling thread (and every thread it creates later)
    /// and ignores SIGPIPE. Call first thing in `main`.
    public static func blockForSigwait() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in handled { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        Glibc.signal(SIGPIPE, SIG_IGN)
    }

    /// Waits for the next TERM/INT/HUP. Blocks: only for the main thread.
    @available(*, noasync, message: "blocks the calling thread")
    public static func wait() -> Event {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in handled { sigaddset(&set, signal) }
        var received: Int32 = 0
        while true {
            if sigwait(&set, &received) == 0 {
                return received == SIGHUP ? .reload : .terminate(received)
            }
        }
    }
}
