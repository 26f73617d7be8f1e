// Segments in, events out (gopacket's table style), plus property and flood tests.
import Testing

@testable import AMQPScopePackets
@testable import AMQPScopeReassembly

/// Renders events as short strings; packet events are counted separately.
struct Collect: StreamSink {
    var events: [String] = []
    var packets: [PacketInfo] = []
    var streams = PerDirection<[UInt8]>(repeating: [])
    var gaps: [(direction: Direction, offset: UInt64, length: UInt64)] = []

    mutating func consume(_ e: StreamEvent) {
        let dir = e.direction == .clientToServer ? "c" : "s"
        switch e.kind {
        case .opened(let info):
            events.append("open \(info.opening.rawValue) client=\(info.client.port) id=\(e.connection.rawValue)")
        case .packet(let p): packets.append(p)
        case .data(let bytes):
            events.append("data \(dir) @\(e.offset) \(String(decoding: bytes, as: UTF8.self))")
            streams[e.direction] += Array(bytes)
        case .gap(let length, let reason):
            events.append(
                "gap \(dir) @\(e.offset) \(length) "
                    + "\(reason == .lost ? "lost" : reason == .notCaptured ? "snap" : "limit")"
            )
            gaps.append((e.direction, e.offset, length))
        case .fin: events.append("fin \(dir) @\(e.offset)")
        case .reset(let r): events.append("rst \(dir) exact=\(r.exact) receiver=\(r.receiverState.rawValue)")
        case .overlapConflict: events.append("conflict \(dir)")
        case .dataAfterFIN(let n): events.append("after-fin \(dir) \(n)")
        case .ended(let reason): events.append("end id=\(e.connection.rawValue) \(reason.rawValue)")
        }
    }
}

/// One Ethernet frame's TCP segment into the reassembler, as packet `number` at `time`.
func feed<S: StreamSink>(
    _ reassembler: inout Reassembler, _ bytes: [UInt8], number: Int, time: Timestamp, into sink: inout S
) {
    bytes.withUnsafeBytes { raw in
        guard case .tcp(let segment) = PacketDecoder.decode(raw, linkType: .ethernet) else {
            Issue.record("not TCP")
            return
        }
        reassembler.process(
            segment,
            header: PacketHeader(number: number, timestamp: time, capturedLength: raw.count, originalLength: raw.count),
            bytes: raw, into: &sink)
    }
}

struct Seg {
    var client: Bool
    var seq: UInt32
    var flags: TCPFlags = [.ack]
    var payload: String = ""
    var capture: Int? = nil  // captured bytes of the payload, when cut by a snap length
    var ack: UInt32 = 0

    static func c(_ seq: UInt32, _ payload: String = "", _ flags: TCPFlags = [.ack, .psh]) -> Seg {
        Seg(client: true, seq: seq, flags: flags, payload: payload)
    }
    static func s(_ seq: UInt32, _ payload: String = "", _ flags: TCPFlags = [.ack, .psh]) -> Seg {
        Seg(client: false, seq: seq, flags: flags, payload: payload)
    }
}

func reassemble(
    _ segments: [Seg], configuration: ReassemblyConfiguration = ReassemblyConfiguration(), finish: Bool = true
) -> Collect {
    var reassembler = Reassembler(configuration: configuration)
    var sink = Collect()
    for (i, seg) in segments.enumerated() {
        var bytes = Build.segment(
            fromClient: seg.client, seq: seg.seq, ack: seg.ack, flags: seg.flags, payload: Array(seg.payload.utf8))
        if let capture = seg.capture { bytes = Array(bytes.prefix(bytes.count - seg.payload.utf8.count + capture)) }
        let header = PacketHeader(
            number: i + 1, timestamp: Timestamp(nanoseconds: Int64(i) * 1_000_000), capturedLength: bytes.count,
            originalLength: bytes.count)
        bytes.withUnsafeBytes { raw in
            guard case .tcp(let s) = PacketDecoder.decode(raw, linkType: .ethernet) else {
                Issue.record("not TCP")
                return
            }
            reassembler.process(s, header: header, bytes: raw, into: &sink)
        }
    }
    if finish { reassembler.finish(at: Timestamp(nanoseconds: 1_000_000_000_000), into: &sink) }
    return sink
}

@Suite("TCP reassembly") struct ReassemblyTests {
    static let handshake: [Seg] = [
        Seg(client: true, seq: 100, flags: [.syn]),
        Seg(client: false, seq: 300, flags: [.syn, .ack], ack: 101),
        Seg(client: true, seq: 101, flags: [.ack], ack: 301),
    ]

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var segments: [Seg]
        var expected: [String]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "in order, FIN each way",
            segments: handshake + [
                .c(101, "hello"), .s(301, "world"), .c(106, "", [.fin, .ack]), .s(306, "", [.fin, .ack]),
            ],
            expected: [
                "open handshake client=40000 id=1", "data c @0 hello", "data s @0 world", "fin c @5", "fin s @5",
                "end id=1 both sides sent FIN",
            ]),
        Case(
            name: "sequence numbers wrap past 2^32",
            segments: [Seg(client: true, seq: 0xFFFF_FFFC, flags: [.syn]), .c(0xFFFF_FFFD, "abcdef"), .c(3, "gh")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abcdef", "data c @6 gh",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "reordered", segments: handshake + [.c(101, "abc"), .c(107, "ghi"), .c(104, "def")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abc", "data c @3 def", "data c @6 ghi",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "duplicate", segments: handshake + [.c(101, "abc"), .c(101, "abc"), .c(104, "d")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abc", "data c @3 d",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "partial retransmission overlaps delivered bytes",
            segments: handshake + [.c(101, "abcdef"), .c(104, "defgh")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abcdef", "data c @6 gh",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "overlap that disagrees: first copy wins",
            segments: handshake + [.c(101, "ab"), .c(106, "xyz"), .c(105, "qXYZ"), .c(103, "cd")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 ab", "conflict c", "data c @2 cd", "data c @4 q",
                "data c @5 xyz",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "gap: bytes that never arrived", segments: handshake + [.c(101, "abc"), .c(107, "ghi")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abc", "gap c @3 3 lost", "data c @6 ghi",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "RST from the server lands on an established client",
            segments: handshake + [.c(101, "abc"), .s(301, "", [.rst])],
            expected: [
                "open handshake client=40000 id=1", "data c @0 abc", "rst s exact=true receiver=ESTABLISHED",
                "end id=1 reset",
            ]),
        Case(
            name: "FIN, a late write, then RST: the writer is in CLOSE_WAIT",
            segments: handshake + [.s(301, "", [.fin, .ack]), .c(101, "late"), .s(302, "", [.rst])],
            expected: [
                "open handshake client=40000 id=1", "fin s @0", "data c @0 late",
                "rst s exact=true receiver=CLOSE_WAIT", "end id=1 reset",
            ]),
        Case(
            name: "RST from the client", segments: handshake + [.c(101, "", [.rst, .ack])],
            expected: ["open handshake client=40000 id=1", "rst c exact=true receiver=ESTABLISHED", "end id=1 reset"]),
        Case(
            name: "RST answering a SYN: connection refused",
            segments: [
                Seg(client: true, seq: 100, flags: [.syn]), Seg(client: false, seq: 0, flags: [.rst, .ack], ack: 101),
            ],
            expected: ["open handshake client=40000 id=1", "rst s exact=true receiver=SYN_SENT", "end id=1 reset"]),
        Case(
            name: "picked up mid-stream: the AMQP port is the server", segments: [.s(9000, "tick"), .c(5000, "tock")],
            expected: [
                "open midstream client=40000 id=1", "data s @0 tick", "data c @0 tock",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "SYN retransmitted",
            segments: [Seg(client: true, seq: 100, flags: [.syn]), Seg(client: true, seq: 100, flags: [.syn])]
                + Array(handshake.dropFirst()),
            expected: ["open handshake client=40000 id=1", "end id=1 still open when the capture ended"]),
        Case(
            name: "port reuse: a new SYN on a closed 4-tuple starts a new connection",
            segments: handshake + [
                .c(101, "", [.fin, .ack]), .s(301, "", [.fin, .ack]), Seg(client: true, seq: 7000, flags: [.syn]),
                .c(7001, "again"),
            ],
            expected: [
                "open handshake client=40000 id=1", "fin c @0", "fin s @0", "end id=1 both sides sent FIN",
                "open handshake client=40000 id=2", "data c @0 again", "end id=2 still open when the capture ended",
            ]),
        Case(
            name: "data after FIN is recorded, not delivered",
            segments: handshake + [.c(101, "ab", [.fin, .ack, .psh]), .c(104, "zz")],
            expected: [
                "open handshake client=40000 id=1", "data c @0 ab", "fin c @2", "after-fin c 2",
                "end id=1 still open when the capture ended",
            ]),
        Case(
            name: "packet cut by the snap length",
            segments: handshake + [
                Seg(client: true, seq: 101, flags: [.ack], payload: "abcdef", capture: 2), .c(107, "g"),
            ],
            expected: [
                "open handshake client=40000 id=1", "data c @0 ab", "gap c @2 4 snap", "data c @6 g",
                "end id=1 still open when the capture ended",
            ]),
    ]

    @Test(arguments: cases)
    func table(_ c: Case) {
        #expect(reassemble(c.segments).events == c.expected)
    }

    @Test func everyPacketIsOnTheTimeline() {
        let sink = reassemble(
            Self.handshake + [.c(101, "abc"), .c(101, "abc"), .s(301, "", [.ack]), .c(103, "c", [.ack])])
        #expect(sink.packets.count == 7)
        #expect(sink.packets[4].isRetransmission)
        #expect(sink.packets[5].payloadLength == 0)
        #expect(sink.packets[6].isKeepalive)  // one byte one below the next expected sequence number
    }

    @Test func connectionsThatNeverCloseAndIdleEviction() {
        var configuration = ReassemblyConfiguration()
        configuration.idleTimeout = 10_000_000  // 10 ms of capture time
        var reassembler = Reassembler(configuration: configuration)
        var sink = Collect()
        for (i, seg) in (Self.handshake + [.c(101, "x")]).enumerated() {
            let bytes = Build.segment(
                fromClient: seg.client, seq: seg.seq, flags: seg.flags, payload: Array(seg.payload.utf8))
            bytes.withUnsafeBytes { raw in
                guard case .tcp(let s) = PacketDecoder.decode(raw, linkType: .ethernet) else { return }
                reassembler.process(
                    s,
                    header: PacketHeader(
                        number: i + 1, timestamp: Timestamp(nanoseconds: Int64(i)), capturedLength: raw.count,
                        originalLength: raw.count), bytes: raw, into: &sink)
            }
        }
        #expect(reassembler.trackedConnections == 1)
        reassembler.evictIdle(now: Timestamp(nanoseconds: 5_000_000), into: &sink)
        #expect(reassembler.trackedConnections == 1)
        reassembler.evictIdle(now: Timestamp(nanoseconds: 20_000_000), into: &sink)
        #expect(reassembler.trackedConnections == 0)
        #expect(sink.events.last == "end id=1 idle timeout")
    }

    /// Many short connections, each SYN, SYN-ACK, ACK, RST, one new every 2 ms: closed ones linger a minute while
    /// few linger; past `maximumClosedLingering` the oldest go, but none before `minimumClosedLinger`.
    @Test(arguments: [(Int.max, 30_000), (200, 1_000), (100_000, 30_000)])
    func closedConnectionsLingerWithinTheBudget(budget: Int, expectedMostTracked: Int) {
        var configuration = ReassemblyConfiguration()
        configuration.maximumClosedLingering = budget
        var reassembler = Reassembler(configuration: configuration)
        var sink = Collect()
        var number = 0
        var most = 0
        let step: Int64 = 2_000_000
        for i in 0..<35_000 {  // 70 s
            let port = UInt16(1024 + i % 60_000)
            let time = Timestamp(nanoseconds: Int64(i) * step)
            let seq = UInt32(i) &* 7919
            let packets = [
                (true, seq, TCPFlags.syn), (false, 5000, [.syn, .ack]), (true, seq &+ 1, [.ack]),
                (false, 5001, [.rst]),
            ]
            for (fromClient, sequence, flags) in packets {
                let (s, d) = fromClient ? (port, UInt16(5672)) : (5672, port)
                let bytes = Build.ethernet(
                    payload: Build.ipv4(payload: Build.tcp(sport: s, dport: d, seq: sequence, flags: flags)))
                number += 1
                feed(&reassembler, bytes, number: number, time: time, into: &sink)
            }
            most = max(most, reassembler.trackedConnections)
            if i % 1000 == 0 {
                sink.events.removeAll()
                sink.packets.removeAll()
            }
        }
        // Each linger is counted from the RST: a minute of connections (500 a second); or, over the budget, a second
        // of them (the minimum linger) plus what comes between two sweeps.
        #expect(most <= expectedMostTracked + 500, "most tracked \(most)")
        #expect(most >= expectedMostTracked - 500, "most tracked \(most)")
    }

    /// A random stream cut into random segments, shuffled, duplicated and re-cut with overlaps, comes out whole.
    @Test(arguments: 0..<20)
    func randomSegmentationReassemblesExactly(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) &* 7919 &+ 1)
        let length = Int.random(in: 1...4000, using: &rng)
        let stream = (0..<length).map { _ in UInt8.random(in: 97...122, using: &rng) }
        let isn = UInt32.random(in: 0...UInt32.max, using: &rng)  // any start, so some runs wrap
        var pieces: [(Int, Int)] = []
        var at = 0
        while at < length {
            let n = min(length - at, Int.random(in: 1...300, using: &rng))
            pieces.append((at, n))
            at += n
        }
        // Extra copies: duplicates and overlapping re-cuts of random ranges.
        for _ in 0..<pieces.count / 2 {
            let start = Int.random(in: 0..<length, using: &rng)
            pieces.append((start, min(length - start, Int.random(in: 1...400, using: &rng))))
        }
        pieces.shuffle(using: &rng)
        let segments =
            [Seg(client: true, seq: isn, flags: [.syn])]
            + pieces.map { (start, n) in
                Seg.c(isn &+ 1 &+ UInt32(start), String(decoding: stream[start..<start + n], as: UTF8.self))
            }
        let sink = reassemble(segments)
        #expect(sink.streams.clientToServer == stream)
        #expect(sink.gaps.isEmpty)
    }

    /// With segments dropped, the output is the original with gaps of exactly the dropped lengths at their offsets.
    @Test(arguments: 0..<20)
    func droppedSegmentsBecomeExactGaps(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) &+ 1000)
        let length = Int.random(in: 100...4000, using: &rng)
        let stream = (0..<length).map { _ in UInt8.random(in: 97...122, using: &rng) }
        let isn = UInt32.random(in: 0...UInt32.max, using: &rng)
        var pieces: [(start: Int, count: Int, dropped: Bool)] = []
        var at = 0
        while at < length {
            let n = min(length - at, Int.random(in: 1...200, using: &rng))
            pieces.append((at, n, Bool.random(using: &rng) && Bool.random(using: &rng)))
            at += n
        }
        pieces[pieces.count - 1].dropped = false  // bytes after the last one seen cannot be known to be missing
        var sent = pieces.filter { !$0.dropped }.flatMap { p in [p] + (Bool.random(using: &rng) ? [p] : []) }
        sent.shuffle(using: &rng)
        let segments =
            [Seg(client: true, seq: isn, flags: [.syn])]
            + sent.map { p in
                Seg.c(isn &+ 1 &+ UInt32(p.start), String(decoding: stream[p.start..<p.start + p.count], as: UTF8.self))
            }
        let sink = reassemble(segments)
        // Expected: every non-dropped byte, in order; and one gap per run of dropped pieces.
        var expectedBytes: [UInt8] = []
        var expectedGaps: [(UInt64, UInt64)] = []
        for p in pieces {
            if p.dropped {
                if let last = expectedGaps.last, last.0 + last.1 == UInt64(p.start) {
                    expectedGaps[expectedGaps.count - 1].1 += UInt64(p.count)
                } else {
                    expectedGaps.append((UInt64(p.start), UInt64(p.count)))
                }
            } else {
                expectedBytes += stream[p.start..<p.start + p.count]
            }
        }
        #expect(sink.streams.clientToServer == expectedBytes)
        #expect(sink.gaps.map { "\($0.offset)+\($0.length)" } == expectedGaps.map { "\($0.0)+\($0.1)" })
    }

    /// Each packet reaches its own connection when more connections are open than the reassembler's cache of recent
    /// 4-tuples has entries (so entries collide and are replaced), across two client addresses and with ports that
    /// share low bits, and when a 4-tuple is reused by a new connection after an RST. Every stream must come out as
    /// its own client sent it.
    @Test func everyPacketFindsItsConnectionAmongMany() {
        var reassembler = Reassembler()
        struct Streams: StreamSink {
            var opened: [ConnectionID: Endpoint] = [:]
            var bytes: [ConnectionID: [UInt8]] = [:]
            var ended: [ConnectionID] = []
            mutating func consume(_ e: StreamEvent) {
                switch e.kind {
                case .opened(let info): opened[e.connection] = info.client
                case .data(let b): bytes[e.connection, default: []] += Array(b)
                case .ended: ended.append(e.connection)
                default: break
                }
            }
        }
        var sink = Streams()
        var number = 0
        func send(client: UInt32, port: UInt16, seq: UInt32, flags: TCPFlags, payload: [UInt8] = []) {
            let bytes = Build.ethernet(
                payload: Build.ipv4(
                    src: client, dst: 0x0a00_0001,
                    payload: Build.tcp(sport: port, dport: 5672, seq: seq, flags: flags, payload: payload)))
            number += 1
            feed(&reassembler, bytes, number: number, time: Timestamp(nanoseconds: Int64(number) * 1000), into: &sink)
        }
        // 10,000 connections: ports 1024 up, and the same ports again from a second address; then ports 8192 apart.
        var clients: [(address: UInt32, port: UInt16)] = []
        for i in 0..<4_000 { clients.append((0x0a00_0002, UInt16(1024 + i))) }
        for i in 0..<4_000 { clients.append((0x0a00_0003, UInt16(1024 + i))) }
        for i in 0..<2_000 { clients.append((0x0a00_0004, UInt16(1024 + (i * 8192) % 64_000 + i / 8))) }
        var rng = SeededGenerator(seed: 42)
        var sent = [Int](repeating: 0, count: clients.count)
        for (i, c) in clients.enumerated() {
            send(client: c.address, port: c.port, seq: UInt32(i) &* 7919, flags: .syn)
        }
        // Interleaved: each packet carries one byte naming its connection (its index modulo 251) in order.
        for _ in 0..<60_000 {
            let i = Int.random(in: 0..<clients.count, using: &rng)
            let seq = UInt32(i) &* 7919 &+ 1 &+ UInt32(sent[i])
            send(
                client: clients[i].address, port: clients[i].port, seq: seq, flags: [.ack, .psh],
                payload: [UInt8(i % 251)])
            sent[i] += 1
        }
        // The first hundred are reset and opened again on the same 4-tuples, with new sequence numbers.
        for i in 0..<100 {
            let seq = UInt32(i) &* 7919 &+ 1 &+ UInt32(sent[i])
            send(client: clients[i].address, port: clients[i].port, seq: seq, flags: [.rst])
            send(client: clients[i].address, port: clients[i].port, seq: 99_000 + UInt32(i), flags: .syn)
            send(
                client: clients[i].address, port: clients[i].port, seq: 99_001 + UInt32(i), flags: [.ack],
                payload: [7, 7])
        }
        reassembler.finish(at: Timestamp(nanoseconds: Int64(number + 1) * 1000), into: &sink)

        #expect(sink.opened.count == clients.count + 100)
        // Ids are given in order of opening: the first 10,000 are the clients in order, then the hundred reopened.
        for (i, c) in clients.enumerated() {
            let first = ConnectionID(rawValue: i + 1)
            #expect(sink.opened[first]?.port == c.port && sink.opened[first]?.address.low == UInt64(c.address))
            let expected = [UInt8](repeating: UInt8(i % 251), count: sent[i])
            if sink.bytes[first, default: []] != expected {
                Issue.record("connection \(i + 1) got \(sink.bytes[first, default: []].count) bytes, sent \(sent[i])")
                return
            }
        }
        for i in 0..<100 {
            let reopened = ConnectionID(rawValue: clients.count + i + 1)
            #expect(sink.opened[reopened]?.port == clients[i].port)
            #expect(sink.bytes[reopened] == [7, 7])
        }
        #expect(sink.ended.count == clients.count + 100)
    }

    /// A million out-of-order segments that never fill their hole keep the buffer under its cap.
    @Test func floodStaysUnderTheCap() {
        var configuration = ReassemblyConfiguration()
        configuration.maximumBufferedBytesPerDirection = 64 * 1024
        configuration.maximumBufferedBytesTotal = 96 * 1024
        var reassembler = Reassembler(configuration: configuration)
        struct Count: StreamSink {
            var gaps = 0, dataBytes = 0
            mutating func consume(_ e: StreamEvent) {
                if case .gap = e.kind { gaps += 1 }
                if case .data(let b) = e.kind { dataBytes += b.count }
            }
        }
        var sink = Count()
        var bytes = Build.segment(fromClient: true, seq: 0, payload: Array(repeating: 0x41, count: 100))
        let seqOffset = 14 + 20 + 4
        var peak = 0
        for i in 0..<1_000_000 {
            // Every segment starts 100 bytes past the previous one's end: a hole before each.
            let seq = UInt32(truncatingIfNeeded: 1000 + i * 200)
            bytes[seqOffset] = UInt8(seq >> 24)
            bytes[seqOffset + 1] = UInt8((seq >> 16) & 0xff)
            bytes[seqOffset + 2] = UInt8((seq >> 8) & 0xff)
            bytes[seqOffset + 3] = UInt8(seq & 0xff)
            bytes.withUnsafeBytes { raw in
                guard case .tcp(let s) = PacketDecoder.decode(raw, linkType: .ethernet) else { return }
                reassembler.process(
                    s,
                    header: PacketHeader(
                        number: i + 1, timestamp: Timestamp(nanoseconds: Int64(i)), capturedLength: raw.count,
                        originalLength: raw.count), bytes: raw, into: &sink)
            }
            peak = max(peak, reassembler.bufferedBytes)
        }
        #expect(peak <= 64 * 1024)
        #expect(sink.gaps > 900_000)
        #expect(sink.dataBytes > 0)
    }
}
