import AMQPScopeCapture
// Bad files: each gets a clear message naming the file (and packet when known), and a report of what was read.
import Foundation
import Testing

@testable import AMQPScope

@Suite("Capture files") struct CaptureFileTests {
    let packet = Build.segment(fromClient: true, seq: 1, flags: [.syn])

    private func analyze(_ name: String, _ bytes: [UInt8]) -> CaptureResult {
        Analysis.analyzeFile(Paths.temporaryFile(name, bytes))
    }

    @Test func missingFile() {
        let r = Analysis.analyzeFile("/nonexistent/amqpscope/capture.pcap")
        #expect(r.unreadable)
        #expect(r.error == "/nonexistent/amqpscope/capture.pcap: No such file or directory")
    }

    @Test func emptyAndTextFiles() {
        for (name, bytes) in [
            ("empty.pcap", [UInt8]()), ("text.pcap", Array(String(repeating: "not a capture\n", count: 20).utf8)),
        ] {
            let r = analyze(name, bytes)
            #expect(r.unreadable, "\(name)")
            #expect(
                r.error?.contains(name) == true && r.error?.contains("not a readable pcap or pcapng file") == true,
                "\(r.error ?? "")")
        }
    }

    @Test func cutInARecordHeader() {
        let whole = Build.pcap(packets: [(1_000_000_000, packet, nil), (2_000_000_000, packet, nil)])
        let r = analyze("cut-header.pcap", Array(whole.prefix(whole.count - packet.count - 9)))
        #expect(!r.unreadable)
        #expect(r.counts.packets == 1)
        #expect(r.error?.contains("packet 2:") == true, "\(r.error ?? "")")
        #expect(r.records.count == 1, "what was read is still reported")
    }

    @Test func cutInARecordBody() {
        let whole = Build.pcap(packets: [(1_000_000_000, packet, nil), (2_000_000_000, packet, nil)])
        let r = analyze("cut-body.pcap", Array(whole.prefix(whole.count - 10)))
        #expect(!r.unreadable && r.counts.packets == 1)
        #expect(r.error?.contains("cut-body.pcap: packet 2:") == true, "\(r.error ?? "")")
    }

    @Test func recordLongerThanSnapLength() {
        // A record claiming more than the file's snaplen and than any link type allows (libpcap's 262144 limit).
        let long = Build.segment(fromClient: true, seq: 1, payload: Array(repeating: 7, count: 100))
        var bytes = Build.pcap(snaplen: 64, packets: [(1_000_000_000, Array(long.prefix(64)), long.count)])
        bytes +=
            Build.le32(2) + Build.le32(0) + Build.le32(300_000) + Build.le32(300_000) + Array(repeating: 0, count: 1000)
        let r = analyze("oversized.pcap", bytes)
        #expect(!r.unreadable && r.counts.packets == 1)
        #expect(r.error?.contains("packet 2: invalid packet capture length 300000") == true, "\(r.error ?? "")")
        #expect(r.counts.truncated == 1, "the first record was cut by the snap length")
    }

    @Test func randomBytesAfterAValidHeader() {
        var rng = SeededGenerator(seed: 42)
        let garbage = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let r = analyze("garbage.pcap", Build.pcap(packets: [(1_000_000_000, packet, nil)]) + garbage)
        #expect(!r.unreadable)
        #expect(r.error != nil)
        #expect(r.counts.packets >= 1)
    }

    @Test func nanosecondTimestampsAndMicrosecondFiles() {
        let nano = analyze(
            "nano.pcap", Build.pcap(nanoseconds: true, packets: [(1_700_000_000_123_456_789, packet, nil)]))
        #expect(nano.counts.firstTime?.nanoseconds == 1_700_000_000_123_456_789)
        let micro = analyze(
            "micro.pcap", Build.pcap(nanoseconds: false, packets: [(1_700_000_000_123_456_789, packet, nil)]))
        #expect(micro.counts.firstTime?.nanoseconds == 1_700_000_000_123_456_000)
        #expect(Format.time(nano.counts.firstTime!) == "2023-11-14 22:13:20.123456")
    }

    /// Found by fuzzing: a file header claiming a 1.5 GB snap length made the reader allocate that much up front
    /// (when it copied packets into a buffer of its own, sized by the snap length). Packets are now read in
    /// libpcap's buffer, which libpcap sizes by its own largest record; the file must still read.
    @Test func hostileSnapLength() throws {
        let path = Paths.temporaryFile(
            "huge-snaplen.pcap", Build.pcap(snaplen: 1_582_128_286, packets: [(1, packet, nil)]))
        let source = try PcapSource.openFile(path)
        guard case .packet = try source.next() else {
            Issue.record("the packet was not read")
            return
        }
        #expect(Array(source.packetBytes) == packet)
    }

    @Test func unsupportedLinkType() {
        let r = analyze("usb.pcap", Build.pcap(linkType: 189, packets: [(1, [1, 2, 3], nil)]))
        #expect(r.unreadable)
        #expect(r.error?.contains("link-layer type 189") == true)
    }
}

@Suite("Writing captures") struct PcapWriterTests {
    /// -w with -C and -W: files rotate at the size, named as tcpdump names them, and the ring keeps N files.
    @Test func rotatesIntoARingOfFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("amqpscope-writer-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let base = directory.appendingPathComponent("ring.pcap").path
        let writer = try PcapWriter(
            path: base, linkType: .ethernet, snapshotLength: 262_144, rotateBytes: 20_000, fileCount: 3)
        let packet = Build.segment(fromClient: true, seq: 1, payload: Array(repeating: 9, count: 946))  // 1000 bytes
        for i in 0..<100 {
            try packet.withUnsafeBytes { raw in
                try writer.write(
                    PacketHeader(
                        number: i + 1,
                        timestamp: Timestamp(nanoseconds: 1_700_000_000_000_000_000 + Int64(i) * 1_234_567),
                        capturedLength: raw.count, originalLength: raw.count), raw)
            }
        }
        writer.close()
        #expect(writer.filesOpened >= 5, "100 KB in 20 KB files")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == ["ring.pcap0", "ring.pcap1", "ring.pcap2"])
        var total = 0
        for name in names {
            let path = directory.appendingPathComponent(name).path
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            #expect(size <= 20_000)
            let read = Analysis.analyzeFile(path)
            #expect(read.error == nil && read.linkType == .ethernet)
            total += read.counts.packets
        }
        // The ring kept the newest files; their packets keep nanosecond timestamps.
        #expect(total > 0 && total < 100)
        let newest = Analysis.analyzeFile(writer.currentPath)
        let expected: Int64 = 1_700_000_000_000_000_000 + 99 * 1_234_567
        #expect(newest.counts.lastTime?.nanoseconds == expected)
    }

    @Test func withoutRotationOneFile() throws {
        let path = Paths.temporaryFile("single.pcap", [])
        let writer = try PcapWriter(path: path, linkType: .ethernet, snapshotLength: 65_535)
        let packet = Build.segment(fromClient: false, seq: 5)
        try packet.withUnsafeBytes { raw in
            try writer.write(
                PacketHeader(
                    number: 1, timestamp: Timestamp(nanoseconds: 5), capturedLength: raw.count,
                    originalLength: raw.count), raw)
        }
        writer.close()
        #expect(writer.name(0) == path && writer.name(2) == path + "2")
        #expect(Analysis.analyzeFile(path).counts.packets == 1)
    }
}

@Suite("Repository data") struct RepositoryDataTests {
    /// Every capture the captures' READMEs name is in the repository, each recorded one with its truth file, and
    /// the specifications the generators read are there: a clone stands alone.
    @Test func everyNamedCaptureIsPresent() throws {
        let fm = FileManager.default
        let external = try String(
            contentsOf: Paths.externalCaptures.appendingPathComponent("README.md"), encoding: .utf8)
        let externalNames = external.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("| "),
                let name = line.split(separator: "|").first?.trimmingCharacters(in: .whitespaces),
                name.hasSuffix(".pcap")
            else { return nil }
            return name
        }
        #expect(externalNames.count == 3, "\(externalNames)")
        for name in externalNames {
            #expect(fm.fileExists(atPath: Paths.externalCaptures.appendingPathComponent(name).path), "\(name)")
        }
        for path in Paths.recordedCaptures {
            // An uncut twin (NAME.full.pcap, recorded beside a snap-length-cut NAME.pcap) shares NAME's truth.
            let base = path.hasSuffix(".full.pcap") ? String(path.dropLast(".full.pcap".count)) + ".pcap" : path
            let truth = String(base.dropLast(".pcap".count)) + ".truth.json"
            #expect(fm.fileExists(atPath: truth), "\(truth)")
        }
        #expect(fm.fileExists(atPath: Paths.spec.path))
        for part in ["types", "transport", "messaging", "security", "transactions"] {
            #expect(
                fm.fileExists(atPath: Paths.root.appendingPathComponent("spec/amqp-1.0/\(part).xml").path), "\(part)")
        }
    }
}
