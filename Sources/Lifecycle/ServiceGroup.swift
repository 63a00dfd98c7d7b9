import Logging

/// A long-lived part of the process (the database, the scheduler, the FastCGI server,
/// the watchdog) that starts and stops as a whole.
///
/// Both calls are made from the main thread, one service at a time, and may block
/// it: starting and stopping are where a process may wait.
public protocol Service: Sendable {
    /// For log lines.
    var name: String { get }
    /// Starts the service; returns once it runs, or throws why it cannot.
    @available(*, noasync, message: "called from the main thread; may block")
    func start() throws
    /// Stops the service, waiting for its work to end (within the service's own
    /// grace period); called once, only after a successful `start`.
    @available(*, noasync, message: "called from the main thread; may block")
    func stop()
}

/// Services started in order and stopped in reverse order, the shape of
/// swift-service-lifecycle's `ServiceGroup`: each service may rely on the ones before
/// it while it starts, runs and stops. If one fails to start, the ones already
/// started are stopped (in reverse) before the error is passed on, so a failed start
/// leaves nothing running.
public final class ServiceGroup: Sendable {
    private let services: [any Service]

    public init(_ services: [any Service]) {
        self.services = services
    }

    /// Starts every service in order.
    @available(*, noasync, message: "called from the main thread; may block")
    public func start() throws {
        for (index, service) in services.enumerated() {
            do {
                try service.start()
            } catch {
                Log.error("cannot start \(service.name)", ["error": "\(error)"])
                for started in services[..<index].reversed() { started.stop() }
                throw error
            }
        }
    }

    /// Stops every service in reverse order.
    @available(*, noasync, message: "called from the main thread; may block")
    public func stop() {
        for service in services.reversed() { service.stop() }
    }
}
