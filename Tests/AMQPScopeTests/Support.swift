// Test support: builds packets and pcap files from bytes, finds the repository's data, runs tools.
import Foundation

@testable import AMQPScopePackets

enum Paths {
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let captures = root.appendingPathComponent("captures")
    /// Captures recorded by other people, copied into the repository (see captures/external/README.md).
    static let externalCaptures = captures.appendingPathComponent("external")
    static let spec = root.appendingPathComponent("spec/amqp-rabbitmq-0.9.1.json")

    /// Every capture the differential tests run over: ours and other people's. A missing folder is a failure, not
    /// an empty list: a test without its data must fail rather than pass on nothing.
    static var allCaptures: [String] { recordedCaptures + externalCaptureFiles }

    /// The captures recorded by scripts/record-captures (each with a truth file).
    static var recordedCaptures: [String] { pcaps(in: captures) }
    static var externalCaptureFiles: [String] { pcaps(in: externalCaptures) }
    /// The AMQPS captures, each with its key log beside it.
    static var tlsCaptures: [String] { pcaps(in: captures.appendingPathComponent("tls")) }

    static func pcaps(in dir: URL) -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        } catch {
            fatalError("test data missing: \(dir.path): \(error)")
        }
        let found = names.filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted()
        precondition(!found.isEmpty, "test data missing: no captures in \(dir.path)")
        return found.map { dir.appendingPathComponent($0).path }
    }

    static func temporaryFile(_ name: String, _ bytes: [UInt8]) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("amqpscope-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        _ = FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
        return url.path
    }
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum Tools {
    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static var tshark: String? { which("tshark") }
    /// In CI the oracle must run: a missing tshark is a failure there, a skip elsewhere.
    static var requireTshark: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    /// Runs a tool to completion; its output goes through files, so large outputs never block it.
    static func run(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
        let dir = FileManager.default.temporaryDirectory
        let outURL = dir.appendingPathComponent("amqpscope-run-\(UUID().uuidString).out")
        let errURL = dir.appendingPathComponent("amqpscope-run-\(UUID().uuidString).err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
        process.waitUntilExit()
        return ProcessResult(
            status: process.terminationStatus,
            stdout: String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self),
            stderr: String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self))
    }
}

/// Builds packets byte by byte.
enum Build {
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }
    static func le32(_ v: UInt32) -> [UInt8] { be32(v).reversed() }

    static func tcp(
        sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32 = 0, flags: TCPFlags, window: UInt16 = 65535,
        options: [UInt8] = [], payload: [UInt8] = []
    ) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let offset = UInt8((20 + options.count) / 4) << 4
        var b = be16(sport) + be16(dport) + be32(seq) + be32(ack)
        b += [offset | UInt8(flags.rawValue >> 8), UInt8(flags.rawValue & 0xff)] + be16(window) + [0, 0, 0, 0]
        return b + options + payload
    }

    static func ipv4(
        src: UInt32 = 0x7f00_0001, dst: UInt32 = 0x7f00_0001, proto: UInt8 = 6, options: [UInt8] = [],
        flagsFragment: UInt16 = 0x4000, payload: [UInt8]
    ) -> [UInt8] {
        let ihl = UInt8(5 + options.count / 4)
        let total = UInt16(Int(ihl) * 4 + payload.count)
        return [0x40 | ihl, 0] + be16(total) + be16(1) + be16(flagsFragment) + [64, proto, 0, 0] + be32(src) + be32(dst)
            + options + payload
    }

    static func ipv6(
        src: [UInt8] = Array(repeating: 0, count: 15) + [1], dst: [UInt8] = Array(repeating: 0, count: 15) + [1],
        next: UInt8 = 6, extensions: [UInt8] = [], payload: [UInt8]
    ) -> [UInt8] {
        [0x60, 0, 0, 0] + be16(UInt16(extensions.count + payload.count)) + [next, 64] + src + dst + extensions + payload
    }

    static func ethernet(etherType: UInt16 = 0x0800, vlanTags: [UInt16] = [], payload: [UInt8]) -> [UInt8] {
        var b: [UInt8] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]
        for tag in vlanTags { b += be16(tag) + be16(100) }
        return b + be16(etherType) + payload
    }

    /// A client (127.0.0.1:40000) <-> server (127.0.0.1:5672) segment over Ethernet/IPv4.
    static func segment(
        fromClient: Bool, seq: UInt32, ack: UInt32 = 0, flags: TCPFlags = [.ack], payload: [UInt8] = [],
        window: UInt16 = 65535
    ) -> [UInt8] {
        let (s, d): (UInt16, UInt16) = fromClient ? (40000, 5672) : (5672, 40000)
        return ethernet(
            payload: ipv4(
                payload: tcp(sport: s, dport: d, seq: seq, ack: ack, flags: flags, window: window, payload: payload)))
    }

    /// A classic pcap file (microsecond or nanosecond magic).
    static func pcap(
        linkType: UInt32 = 1, snaplen: UInt32 = 262_144, nanoseconds: Bool = true,
        packets: [(time: Int64, bytes: [UInt8], originalLength: Int?)]
    ) -> [UInt8] {
        var b =
            le32(nanoseconds ? 0xa1b2_3c4d : 0xa1b2_c3d4) + [2, 0, 4, 0] + le32(0) + le32(0) + le32(snaplen)
            + le32(linkType)
        for p in packets {
            let seconds = UInt32(p.time / 1_000_000_000)
            let fraction = UInt32(nanoseconds ? p.time % 1_000_000_000 : p.time % 1_000_000_000 / 1000)
            b +=
                le32(seconds) + le32(fraction) + le32(UInt32(p.bytes.count))
                + le32(UInt32(p.originalLength ?? p.bytes.count))
            b += p.bytes
        }
        return b
    }
}

/// A deterministic pseudo-random generator (SplitMix64) so property tests are reproducible from their seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
