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
    // its continuation and result types): 5 % fewer instructions per POST /add-user
    // under bench/callgrind.py, nothing lost elsewhere.
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
]

let package = Package(
    name: "usersd",
    products: [
        .executable(name: "usersd", targets: ["usersd"])
    ],
    targets: [
        .systemLibrary(name: "CFastCGI", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "HTTP", swiftSettings: swiftSettings),
        .target(name: "FastCGI", dependencies: ["CFastCGI", "HTTP", "Lifecycle"], swiftSettings: swiftSettings),
        .target(name: "SQLite", dependencies: ["CSQLite", "Lifecycle"], swiftSettings: swiftSettings),
        .target(name: "Lifecycle", swiftSettings: swiftSettings),
        .target(name: "Store", dependencies: ["SQLite", "HTTP", "Lifecycle"], swiftSettings: swiftSettings),
        .target(name: "Scheduler", dependencies: ["Store", "Lifecycle", "HTTP"], swiftSettings: swiftSettings),
        .target(
            name: "UsersApp",
            dependencies: ["HTTP", "FastCGI", "Store", "Scheduler", "Lifecycle"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "usersd", dependencies: ["UsersApp", "Lifecycle"], swiftSettings: swiftSettings),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP"], swiftSettings: swiftSettings),
        .testTarget(name: "StoreTests", dependencies: ["Store", "SQLite", "HTTP"], swiftSettings: swiftSettings),
        .testTarget(name: "FastCGITests", dependencies: ["FastCGI", "HTTP"], swiftSettings: swiftSettings),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "Store", "SQLite", "HTTP"], swiftSettings: swiftSettings),
        .testTarget(name: "UsersAppTests", dependencies: ["UsersApp", "HTTP", "Store"], swiftSettings: swiftSettings),
        .testTarget(name: "LifecycleTests", dependencies: ["Lifecycle"], swiftSettings: swiftSettings),
    ]
)
