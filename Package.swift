// swift-tools-version: 6.1
import PackageDescription

// One settings array shared by every target (see STYLE.md: Layout & module boundaries).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "mqbridge",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mqbridge", targets: ["mqbridge"]),
        .executable(name: "mqbridge-bench", targets: ["MQBench"]),
        .library(name: "MQTTCodec", targets: ["MQTTCodec"]),
        .library(name: "TopicACL", targets: ["TopicACL"]),
        .library(name: "Bridge", targets: ["Bridge"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        // swift-certificates' own ASN.1 layer (PEM), named so its members are visible.
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    ],
    targets: [
        // MQTT packets <-> bytes. NIOCore only, no I/O: runs under EmbeddedChannel and libFuzzer.
        .target(
            name: "MQTTCodec",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Topic filters, acl_file parsing and decisions. No I/O, no NIO.
        .target(name: "TopicACL", swiftSettings: swiftSettings),
        .target(
            name: "Bridge",
            dependencies: [
                "MQTTCodec", "TopicACL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "mqbridge",
            dependencies: [
                "Bridge", "MQTTCodec", "TopicACL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // libmosquitto, the C client the load generator is built on (apt: libmosquitto-dev).
        .systemLibrary(
            name: "CMosquitto",
            path: "Benchmarks/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        .executableTarget(
            name: "MQBench",
            dependencies: [
                "MQTTCodec", "TopicACL", "Bridge", "CMosquitto", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/MQBench",
            swiftSettings: swiftSettings
        ),
        // Shared by test targets and benchmarks: seeded generators, real processes (mosquitto,
        // the mqbridge binary) on free loopback ports, stopped by PID.
        .target(
            name: "TestSupport",
            dependencies: [.product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MQTTCodecTests",
            dependencies: [
                "MQTTCodec", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "TopicACLTests", dependencies: ["TopicACL", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "BridgeTests",
            dependencies: [
                "Bridge", "MQTTCodec", "TopicACL", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // Real processes: mosquitto brokers, mosquitto_pub/sub, paho clients, the mqbridge binary.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "MQTTCodec", "TopicACL", "Bridge", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Scripts"],
            swiftSettings: swiftSettings
        ),
    ]
)
