import AMQPScopeCapture
import AMQPScopeFuzzing
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

/// amqpscope reads classic pcap records itself (`RecordReader`); libpcap is the oracle. Random files, in either
/// byte order and either time unit, with records longer than the snap length, lengths past libpcap's largest, times
/// past what 32 signed bits hold, and cut at random points, must give the same packets (times, lengths, bytes) and
/// the same end: the same error at the same packet with the same words, or none.
@Suite("Reading pcap records") struct RecordReaderTests {
    /// A classic pcap file, little- or big-endian, with raw record fields (nothing is checked or fixed).
    static func file(
        swapped: Bool, nanoseconds: Bool, snaplen: UInt32, linkType: UInt32 = 1, minor: UInt16 = 4,
        records: [(seconds: UInt32, fraction: UInt32, captured: UInt32, original: UInt32, data: [UInt8])]
    ) -> [UInt8] {
        func u32(_ v: UInt32) -> [UInt8] {
            let b = [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)]
            return swapped ? b.reversed() : b
        }
        func u16(_ v: UInt16) -> [UInt8] {
            let b = [UInt8(v & 0xff), UInt8(v >> 8)]
            return swapped ? b.reversed() : b
        }
        var out = u32(nanoseconds ? 0xa1b2_3c4d : 0xa1b2_c3d4) + u16(2) + u16(minor) + u32(0) + u32(0) + u32(snaplen)
        out += u32(linkType)
        for r in records { out += u32(r.seconds) + u32(r.fraction) + u32(r.captured) + u32(r.original) + r.data }
        return out
    }

    @Test(arguments: 0..<300)
    func sameAsLibpcap(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) &* 104_729 &+ 7)
        let swapped = Bool.random(using: &rng)
        let nanoseconds = Bool.random(using: &rng)
        let snaplen: UInt32 = [65_535, 262_144, 0, 100, 1_582_128_286, 3_000_000_000, 40].randomElement(using: &rng)!
        var records: [(UInt32, UInt32, UInt32, UInt32, [UInt8])] = []
        for _ in 0..<Int.random(in: 0...12, using: &rng) {
            let length = [0, 1, 54, 300, 1500, 9000].randomElement(using: &rng)!
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var captured = UInt32(length)
            var original = UInt32(length) + UInt32.random(in: 0...3, using: &rng) * 100
            var seconds = UInt32.random(in: 1_600_000_000...1_700_000_000, using: &rng)
            var fraction = UInt32.random(in: 0..<(nanoseconds ? 1_000_000_000 : 1_000_000), using: &rng)
            switch Int.random(in: 0..<12, using: &rng) {
            case 0: captured = UInt32.random(in: 262_145...UInt32.max, using: &rng)  // past libpcap's largest
            case 1: captured = 262_144  // the largest: reads the next bytes (and, cut short, says so)
            case 2: fraction = UInt32.random(in: 1_000_000_000...UInt32.max, using: &rng)
            case 3: seconds = UInt32.random(in: 0x8000_0000...UInt32.max, using: &rng)
            case 4: original = 0
            default: break
            }
            records.append((seconds, fraction, captured, original, data))
        }
        var bytes = Self.file(
            swapped: swapped, nanoseconds: nanoseconds, snaplen: snaplen,
            records: records.map { (seconds: $0.0, fraction: $0.1, captured: $0.2, original: $0.3, data: $0.4) })
        if Bool.random(using: &rng), bytes.count > 24 {
            bytes = Array(bytes.prefix(Int.random(in: 24..<bytes.count, using: &rng)))
        }
        let path = Paths.temporaryFile("records-\(seed).pcap", bytes)
        #expect(try PcapSource.openFile(path).readsOwnRecords, "the reader under test must be the one reading")
        #expect(try !PcapSource.openFile(path, ownRecords: false).readsOwnRecords)
        // The fuzz target's comparison: every packet, then the same end (the same error at the same packet, or none).
        #expect(FuzzEntry.packets(path, ownRecords: true) == FuzzEntry.packets(path, ownRecords: false))
    }

    /// Formats the reader leaves to libpcap: pcapng, version 2.3 (lengths in another order), and the link types
    /// whose records may be longer than the usual largest.
    @Test func leavesOtherFormatsToLibpcap() throws {
        let packet = Build.segment(fromClient: true, seq: 1, flags: [.syn])
        let record = (
            seconds: UInt32(1), fraction: UInt32(2), captured: UInt32(packet.count), original: UInt32(packet.count),
            data: packet
        )
        let older = Paths.temporaryFile(
            "minor3.pcap", Self.file(swapped: false, nanoseconds: false, snaplen: 65_535, minor: 3, records: [record]))
        let dbus = Paths.temporaryFile(
            "dbus.pcap",
            Self.file(swapped: false, nanoseconds: false, snaplen: 65_535, linkType: 231, records: [record]))
        let common = Paths.temporaryFile(
            "common.pcap", Self.file(swapped: true, nanoseconds: true, snaplen: 65_535, records: [record]))
        #expect(try !PcapSource.openFile(older).readsOwnRecords)
        #expect(try !PcapSource.openFile(dbus).readsOwnRecords)
        #expect(try PcapSource.openFile(common).readsOwnRecords)
        let pcapng = Paths.captures.appendingPathComponent("missed-heartbeats-104.pcap").path
        let first = try Array(Data(contentsOf: URL(fileURLWithPath: pcapng)).prefix(4))
        #expect(try PcapSource.openFile(pcapng).readsOwnRecords == (first != [0x0a, 0x0d, 0x0d, 0x0a]))
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
