// swift-tools-version:6.0
// amqpscope: explains AMQP incidents from packets.
// Flow, one direction only:
//   capture (libpcap) -> packet layers -> TCP reassembly -> TLS -> AMQP codec -> timeline + diagnosis -> reports
//   -> CLI
import PackageDescription

let package = Package(
    name: "AMQPScope",
    products: [
        .executable(name: "amqpscope", targets: ["amqpscope"]),
        .library(name: "AMQPScope", targets: ["AMQPScope"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // The only code that touches libpcap.
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        .target(
            name: "AMQPScopeCapture",
            dependencies: [
                "CPcap", "AMQPScopePackets",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Pure from here down: bytes in, values out; no I/O, no clock, no globals.
        .target(name: "AMQPScopePackets"),
        .target(name: "AMQPScopeReassembly", dependencies: ["AMQPScopePackets"]),
        // OpenSSL's libcrypto for TLS decryption: AEAD ciphers and HMAC (measured against swift-crypto: see README).
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "AMQPScopeTLS", dependencies: ["AMQPScopePackets", "CCrypto"]),
        .target(name: "AMQPScopeCodec", dependencies: ["AMQPScopePackets"]),
        .target(
            name: "AMQPScopeTimeline",
            dependencies: ["AMQPScopePackets", "AMQPScopeReassembly", "AMQPScopeTLS", "AMQPScopeCodec"]
        ),
        .target(name: "AMQPScopeReports", dependencies: ["AMQPScopeTimeline", "AMQPScopeTLS"]),
        // The embeddable library: the pipeline that joins the layers, and file analysis.
        .target(
            name: "AMQPScope",
            dependencies: [
                "AMQPScopeCapture", "AMQPScopePackets", "AMQPScopeReassembly", "AMQPScopeTLS",
                "AMQPScopeCodec", "AMQPScopeTimeline", "AMQPScopeReports",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The fuzz targets' bodies: driven by libFuzzer (Fuzz/) and replayed by the tests.
        .target(
            name: "AMQPScopeFuzzing",
            dependencies: ["AMQPScope", "AMQPScopePackets", "AMQPScopeReassembly", "AMQPScopeTLS", "AMQPScopeCodec"]
        ),
        .executableTarget(
            name: "amqpscope",
            dependencies: [
                "AMQPScope",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AMQPScopeTests",
            dependencies: [
                "AMQPScope", "AMQPScopeCapture", "AMQPScopePackets", "AMQPScopeReassembly", "AMQPScopeTLS",
                "AMQPScopeCodec", "AMQPScopeTimeline", "AMQPScopeReports", "AMQPScopeFuzzing",
            ],
            exclude: ["Golden"]  // read from the source tree by path (and re-recorded there), not as resources
        ),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzz targets (libFuzzer), built only when asked: `AMQPSCOPE_FUZZ=1 swift build --sanitize=fuzzer ...`
// (see scripts/fuzz). Kept out of ordinary builds so that nothing else links libFuzzer's main.
if Context.environment["AMQPSCOPE_FUZZ"] == "1" {
    for name in [
        "FuzzPacketLayers", "FuzzReassembly", "FuzzFrameParser", "FuzzFieldTable", "FuzzPcapFile", "FuzzTLSRecords",
    ] {
        package.targets.append(
            .executableTarget(
                name: name,
                dependencies: ["AMQPScopeFuzzing"],
                path: "Fuzz/\(name)"
            ))
    }
}
