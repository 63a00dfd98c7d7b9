public import Glibc

/// Time since an arbitrary start that never jumps (`CLOCK_MONOTONIC`): for durations,
/// deadlines and expiries. Never for timestamps people read.
public enum MonotonicClock {
    /// Nanoseconds, with the clock's full resolution.
    @inlinable
    public static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Nanoseconds at the resolution of a scheduler tick (a few milliseconds), from
    /// `CLOCK_MONOTONIC_COARSE`, which is read without a system call: for expiries that
    /// are checked on every request.
    @inlinable
    public static func coarseNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Seconds, as a `Double`.
    @inlinable
    public static func seconds() -> Double {
        Double(nanoseconds()) / 1e9
    }
}

/// The calendar time (`CLOCK_REALTIME`): what timestamps and task due times are
/// made of. It may jump when the system clock is set.
public enum WallClock {
    /// Milliseconds since the Unix epoch.
    @inlinable
    public static func milliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}
