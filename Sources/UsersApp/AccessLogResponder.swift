import Glibc
import HTTP
import Lifecycle

/// Wraps the router: adds `X-Request-Id` and writes one access-log line per request
/// (level info; warning when slower than the threshold).
struct AccessLogResponder: Responder {
    let inner: RouterResponder
    let slowRequestMilliseconds: Int
    let metrics: RequestMetrics

    func respond(to request: Request) async -> Response {
        let start = Self.now()
        metrics.requestStarted()
        var response = await inner.respond(to: request)
        response.headers.append(("X-Request-Id", request.requestID))
        let milliseconds = Double(Self.now() - start) / 1_000_000
        metrics.requestFinished(
            route: response.route ?? "unmatched", method: request.method, status: response.status.code,
            seconds: milliseconds / 1000
        )
        let level: LogLevel = milliseconds >= Double(slowRequestMilliseconds) ? .warning : .info
        Log.request(
            level, requestID: request.requestID, method: request.method, path: request.path,
            status: response.status.code, milliseconds: milliseconds
        )
        return response
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
