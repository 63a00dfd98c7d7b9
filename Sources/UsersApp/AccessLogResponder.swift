import Basics
import HTTP
import Logging
import Metrics

/// Wraps the router: adds `X-Request-Id` and writes one access-log line per request
/// (level info; warning when slower than the threshold or cut short), with its
/// request metrics. Requests the FastCGI layer refused are logged and counted too.
///
/// A streamed answer is logged when its last byte was handed to the connection, not
/// when the handler returned its head: the line's duration and the latency histogram
/// cover the whole stream.
///
/// With access control on (`--auth-file`), `admit` asks it before the body is read;
/// a refused request is answered and logged through `respond(rejected:with:)`. The
/// line names the request's token (`token_name`), never the token.
struct AccessLogResponder: Responder {
    let inner: RouterResponder
    let slowRequestMilliseconds: Int
    let metrics: RequestMetrics
    let accessControl: AccessControl?

    func admit(_ request: inout Request) -> HTTPError? {
        guard let accessControl else { return nil }
        return accessControl.admit(&request)
    }

    var checksAdmission: Bool { accessControl != nil }

    func respond(to request: Request) async -> Response {
        let start = MonotonicClock.nanoseconds()
        metrics.requestStarted()
        var response = await inner.respond(to: request)
        finish(&response, of: request, startedAt: start)
        return response
    }

    func respond(rejected request: Request, with error: HTTPError) async -> Response {
        let start = MonotonicClock.nanoseconds()
        metrics.requestStarted()
        var response = error.response
        response.route = "rejected"
        finish(&response, of: request, startedAt: start)
        return response
    }

    /// Adds the request id; records the answer now, or when its stream ends.
    private func finish(_ response: inout Response, of request: Request, startedAt start: UInt64) {
        response.headers.append(("X-Request-Id", request.requestID))
        guard case .stream(let produce) = response.body else {
            record(response, of: request, startedAt: start, aborted: false)
            return
        }
        let logged = response
        response.body = .stream { [self] writer in
            do {
                try await produce(writer)
            } catch {
                record(logged, of: request, startedAt: start, aborted: true)
                throw error
            }
            record(logged, of: request, startedAt: start, aborted: false)
        }
    }

    private func record(_ response: Response, of request: Request, startedAt start: UInt64, aborted: Bool) {
        let milliseconds = Double(MonotonicClock.nanoseconds() - start) / 1_000_000
        metrics.requestFinished(
            route: response.route ?? "unmatched", method: request.method, status: response.status.code,
            seconds: milliseconds / 1000
        )
        let level: LogLevel = aborted || milliseconds >= Double(slowRequestMilliseconds) ? .warning : .info
        Log.request(
            level, requestID: request.requestID, method: request.method, path: request.path,
            status: response.status.code, milliseconds: milliseconds, tokenName: request.principal, aborted: aborted
        )
    }
}
