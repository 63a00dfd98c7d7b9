// swift-tools-version: 6.2
import PackageDescription

/// Settings shared by every Swift target: Swift 6 strict concurrency, no warnings,
/// and `InternalImportsByDefault` so C types cannot leak out of the thin wrapper modules.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
    .treatAllWarnings(as: .error),
    // Release builds specialise generics across modules (the database's `write<T>`,
    // its continuation and result types), measured in bench/results.
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
]

/// A library target with the shared settings.
func library(_ name: String, _ dependencies: [Target.Dependency] = []) -> Target {
    .target(name: name, dependencies: dependencies, swiftSettings: swiftSettings)
}

/// A test target with the shared settings.
func tests(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .testTarget(name: name, dependencies: dependencies, swiftSettings: swiftSettings)
}

let package = Package(
    name: "usersd",
    products: [
        .executable(name: "usersd", targets: ["usersd"])
    ],
    targets: [
        // C libraries from Debian, each wrapped by exactly one Swift module.
        .systemLibrary(name: "CFastCGI", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Small pieces every module may use: clocks, decimal and timestamp text, address ranges.
        library("Basics"),
        library("JSON", ["Basics"]),
        library("Logging", ["Basics"]),
        library("Metrics", ["Basics"]),
        // The process: services started in order and stopped in reverse, signals, sd_notify, threads.
        library("Lifecycle", ["Logging"]),
        // HTTP values and the router (no I/O), and the FastCGI server that feeds it.
        library("HTTP", ["JSON", "Basics"]),
        library("FastCGI", ["CFastCGI", "HTTP", "Lifecycle", "Logging", "Metrics", "Basics"]),
        // SQLite: connections, threads, group commit, checkpoints.
        library("SQLite", ["CSQLite", "Lifecycle", "Logging", "Metrics", "Basics"]),
        // The store seam (protocols, models) and its SQLite backend.
        library("Store", ["JSON", "Metrics", "Basics"]),
        library("StoreSQLite", ["Store", "SQLite", "JSON", "Logging", "Metrics", "Basics"]),
        // PostgreSQL: connections owned by threads, pipelines; and the backend several hosts share.
        library("Postgres", ["CPostgres", "Lifecycle", "Logging", "Metrics", "Basics"]),
        library("StorePostgres", ["Store", "Postgres", "JSON", "Logging", "Metrics", "Basics"]),
        library("Scheduler", ["Store", "JSON", "Logging", "Metrics", "Basics"]),
        // The application: routes, settings, the process's wiring.
        library(
            "UsersApp",
            [
                "HTTP", "FastCGI", "Store", "StoreSQLite", "StorePostgres", "Scheduler", "Lifecycle", "Logging",
                "Metrics", "JSON", "Basics",
            ]
        ),
        .executableTarget(name: "usersd", dependencies: ["UsersApp"], swiftSettings: swiftSettings),

        // Shared fixtures for the unit tests: temporary databases, stores, schedulers.
        library("TestSupport", ["SQLite", "Store", "StoreSQLite", "Postgres", "Scheduler", "JSON", "Basics"]),
        tests("BasicsTests", ["Basics", "SQLite"]),
        tests("JSONTests", ["JSON"]),
        tests("HTTPTests", ["HTTP", "JSON"]),
        tests("FastCGITests", ["FastCGI", "HTTP", "JSON"]),
        tests("LoggingTests", ["Logging"]),
        tests("MetricsTests", ["Metrics"]),
        tests("LifecycleTests", ["Lifecycle"]),
        tests("SQLiteTests", ["SQLite", "Metrics", "TestSupport"]),
        tests("StoreTests", ["Store", "StoreSQLite", "SQLite", "JSON", "Basics", "TestSupport"]),
        tests("PostgresTests", ["Postgres", "TestSupport"]),
        tests("StorePostgresTests", ["StorePostgres", "Postgres", "Store", "Scheduler", "JSON", "TestSupport"]),
        tests("SchedulerTests", ["Scheduler", "Store", "StoreSQLite", "SQLite", "JSON", "TestSupport"]),
        tests(
            "UsersAppTests",
            [
                "UsersApp", "HTTP", "Store", "StoreSQLite", "SQLite", "Scheduler", "JSON", "Basics",
                "TestSupport",
            ]),
    ]
)
