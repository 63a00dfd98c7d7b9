public import Basics
public import HTTP
import JSON
import Logging
public import Metrics
public import Scheduler
public import Store

/// The HTTP side of usersd: routes, error mapping, access log, metrics.
public struct Application: Sendable {
    public let store: any UserStore
    public let scheduler: TaskScheduler?
    /// Requests by route, method and status, and their latencies.
    public let requestMetrics = RequestMetrics()
    /// Everything `GET /metrics` shows: the request metrics first, then what the
    /// process adds (the backend, the scheduler, the FastCGI server, the process).
    public let metrics = MetricsRegistry()
    /// The client addresses `GET /metrics` answers (`--metrics-allow`).
    public let metricsAllow: [AddressRange]

    public init(
        store: any UserStore, scheduler: TaskScheduler? = nil, metricsAllow: [AddressRange] = AddressRange.loopback
    ) {
        self.store = store
        self.scheduler = scheduler
        self.metricsAllow = metricsAllow
        metrics.add(requestMetrics)
    }

    /// The router with every route of the API.
    public func makeRouter(mountPrefix: String = "") -> Router {
        var router = Router(mountPrefix: mountPrefix)
        let scheduler = self.scheduler
        // A new user's welcome task committed with the user; the scheduler runs it.
        UserRoutes(
            store: store, userCreated: { scheduler?.committed(taskID: $0.welcomeTaskID, kind: WelcomeTask.kind) }
        )
        .register(on: &router)
        if let scheduler { TaskRoutes(scheduler: scheduler).register(on: &router) }
        let store = self.store
        router.get("/healthz") { _, _ in
            do {
                try await store.ping()
            } catch {
                throw HTTPError(.serviceUnavailable, "database unavailable", headers: [.init("Retry-After", "1")])
            }
            return Response.json(.ok) { json in json.object { $0.field("status", "ok") } }
        }
        let metrics = self.metrics
        let metricsAllow = self.metricsAllow
        // usersd enforces the allow-list itself: the check sits on the route, so every
        // spelling of the path that reaches it (`/metrics/`, `//metrics`, a mount
        // prefix) meets it, whatever the web server's site says.
        router.get("/metrics") { request, _ in
            guard metricsAllow.allows(request.remoteAddress) else { throw Self.metricsForbidden }
            return Response(
                status: .ok,
                headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                body: .bytes(Array(await metrics.render().utf8))
            )
        }
        return router
    }

    static let metricsForbidden = HTTPError(
        .forbidden, "Metrics are served to allowed addresses only (--metrics-allow)")

    /// The complete responder: access control (when `accessControl` is given), routes,
    /// errors as JSON, one access-log line per request.
    public func makeResponder(
        mountPrefix: String = "", slowRequestMilliseconds: Int = 1000, accessControl: AccessControl? = nil
    ) -> any Responder {
        let router = makeRouter(mountPrefix: mountPrefix).buildResponder(onError: Self.errorResponse)
        return AccessLogResponder(
            inner: router, slowRequestMilliseconds: slowRequestMilliseconds, metrics: requestMetrics,
            accessControl: accessControl)
    }

    /// Store errors become their statuses; anything unexpected is a logged 500 that
    /// reveals nothing internal.
    @Sendable static func errorResponse(_ error: any Error, _ request: Request) -> Response {
        switch error {
        case StoreError.duplicateEmail:
            return HTTPError(.conflict, "A user with this email already exists", field: "email").response
        case TaskStoreError.queueFull:
            return HTTPError(
                .serviceUnavailable, "Task queue is full, try again later", headers: [.init("Retry-After", "5")]
            ).response
        case StoreError.unstorable(let field, let message):
            return HTTPError.invalid(field, message).response
        case StoreError.unavailable(let message):
            Log.warning("database unavailable", ["request_id": request.requestID, "error": message])
            return HTTPError(.serviceUnavailable, message, headers: [.init("Retry-After", "1")]).response
        default:
            Log.error("unhandled error", ["request_id": request.requestID, "error": "\(error)"])
            return HTTPError(.internalServerError, "Internal server error").response
        }
    }
}
