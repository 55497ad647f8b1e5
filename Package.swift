// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wallet",
    products: [
        .executable(name: "wallet-fcgi", targets: ["wallet-fcgi"]),
        .executable(name: "wallet-processor", targets: ["wallet-processor"]),
        .executable(name: "walletctl", targets: ["walletctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian's -dev packages, each behind a small module map.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CFastCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // glibc's malloc tuning (part of libc6-dev, nothing to link).
        .systemLibrary(name: "CMalloc"),

        // The domain, the store, the services and the HTTP layer: no sockets, no threads of its own.
        .target(name: "WalletCore", dependencies: ["CSQLite", "CCrypto"]),

        .executableTarget(name: "wallet-fcgi", dependencies: ["WalletCore", "CFastCGI"]),
        .executableTarget(name: "wallet-processor", dependencies: ["WalletCore", "CCurl", "CMalloc"]),
        .executableTarget(name: "walletctl", dependencies: [
            "WalletCore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "WalletCoreTests", dependencies: ["WalletCore"]),
    ],
    swiftLanguageModes: [.v6]
)
