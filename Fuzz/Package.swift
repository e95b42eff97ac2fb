// swift-tools-version: 6.1
// The libFuzzer target for the MQTT decoder. A separate package so that the main build never
// needs -sanitize=fuzzer; run it with scripts/fuzz.sh (or `make fuzz`).
import PackageDescription

let package = Package(
    name: "mqbridge-fuzz",
    dependencies: [
        .package(name: "mqbridge", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
    ],
    targets: [
        .executableTarget(
            name: "MQTTCodecFuzzer",
            dependencies: [
                .product(name: "MQTTCodec", package: "mqbridge"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    ]
)
