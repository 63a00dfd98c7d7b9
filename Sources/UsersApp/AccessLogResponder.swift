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
        Log.emit(level, { "request" }) {
            [
                "request_id": request.requestID,
                "method": request.method,
                "path": request.path,
                "status": String(response.status.code),
                "duration_ms": String(format3(milliseconds)),
            ]
        }
        return response
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// A number with three decimals, without Foundation's formatter on the hot path.
func format3(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = thousandths % 1000
    var text = String(thousandths / 1000)
    text.append(fraction < 10 ? ".00" : fraction < 100 ? ".0" : ".")
    text.append(String(fraction))
    return text
}
