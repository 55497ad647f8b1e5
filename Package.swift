// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wallet",
    products: [
        .executable(name: "wallet-fcgi", targets: ["wallet-fcgi"]),
        .executable(name: "wallet-processor", targets: ["wallet-processor"]),
        .executable(name: "wallet-notifier", targets: ["wallet-notifier"]),
        .executable(name: "walletctl", targets: ["walletctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        // C libraries from Debian's -dev packages, each behind a small module map.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CFastCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // glibc's malloc tuning (part of libc6-dev, nothing to link).
        .systemLibrary(name: "CMalloc"),

        // The core, in layers; each module may import only those below it, and the compiler
        // holds every arrow (README, "Architecture").
        //
        // The strict JSON codec: values, parser, writer. Imports nothing.
        .target(name: "WalletJSON"),
        // Money, ids, time, statuses and their transitions, the payout rules. No I/O.
        .target(name: "WalletDomain", dependencies: ["WalletJSON"]),
        // What every program needs of the system: settings, logs, locks, threads, pipes,
        // SHA-256 and HMAC (libcrypto).
        .target(name: "WalletPlatform", dependencies: ["WalletDomain", "WalletJSON", "CCrypto"]),
        // The only door to the database, and the only code that imports a database library
        // (SQLite, and libpq for PostgreSQL).
        .target(name: "WalletStore", dependencies: ["WalletDomain", "WalletPlatform", "CSQLite", "CPostgres"]),
        // Requests, responses, routes, validation, errors, metrics: no database, no socket.
        .target(name: "WalletHTTP", dependencies: ["WalletDomain", "WalletJSON", "WalletPlatform"]),
        // What composes them: the API over the store, group commit, the processor's pass,
        // the audit and the reconciliation.
        .target(name: "WalletServices", dependencies: ["WalletDomain", "WalletJSON", "WalletPlatform", "WalletStore", "WalletHTTP"]),

        .executableTarget(
            name: "wallet-fcgi",
            dependencies: [
                "WalletServices", "WalletHTTP", "WalletStore", "WalletPlatform", "WalletDomain", "WalletJSON", "CFastCGI",
            ]),
        .executableTarget(
            name: "wallet-processor",
            dependencies: [
                "WalletServices", "WalletStore", "WalletPlatform", "WalletDomain", "CCurl", "CMalloc",
            ]),
        .executableTarget(
            name: "wallet-notifier",
            dependencies: ["WalletStore", "WalletPlatform", "WalletDomain", "CCurl"]),
        .executableTarget(
            name: "walletctl",
            dependencies: [
                "WalletServices", "WalletHTTP", "WalletStore", "WalletPlatform", "WalletDomain", "WalletJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .testTarget(
            name: "WalletCoreTests",
            dependencies: [
                "WalletJSON", "WalletDomain", "WalletPlatform", "WalletStore", "WalletHTTP", "WalletServices",
            ]),
    ],
    swiftLanguageModes: [.v6]
)
