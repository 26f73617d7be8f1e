// The AMQP 1.0 codec from bytes alone: types, frames, performatives, resynchronisation and the stories told from
// them. Byte sequences are written out from the specification (part 1.6 types, 2.3 frames, 2.7 performatives).
import Testing

@testable import AMQPScopeAMQP10
@testable import AMQPScopePackets

/// AMQP 1.0 encodings, by the specification's constructor codes.
enum Enc10 {
    static func str(_ s: String) -> [UInt8] { [0xa1, UInt8(s.utf8.count)] + Array(s.utf8) }
    static func sym(_ s: String) -> [UInt8] { [0xa3, UInt8(s.utf8.count)] + Array(s.utf8) }
    static func uint(_ v: UInt32) -> [UInt8] {
        v == 0 ? [0x43] : v < 256 ? [0x52, UInt8(v)] : [0x70] + withUnsafeBytes(of: v.bigEndian) { Array($0) }
    }
    static func ushort(_ v: UInt16) -> [UInt8] { [0x60, UInt8(v >> 8), UInt8(v & 0xff)] }
    static let null: [UInt8] = [0x40]
    static func bool(_ b: Bool) -> [UInt8] { [b ? 0x41 : 0x42] }
    static func bin(_ bytes: [UInt8]) -> [UInt8] { [0xa0, UInt8(bytes.count)] + bytes }
    static func list(_ items: [[UInt8]]) -> [UInt8] {
        let body = items.flatMap { $0 }
        if items.isEmpty { return [0x45] }
        if body.count + 1 < 256 { return [0xc0, UInt8(body.count + 1), UInt8(items.count)] + body }
        return [0xd0] + withUnsafeBytes(of: UInt32(body.count + 4).bigEndian) { Array($0) }
            + withUnsafeBytes(of: UInt32(items.count).bigEndian) { Array($0) } + body
    }
    static func map(_ pairs: [([UInt8], [UInt8])]) -> [UInt8] {
        let body = pairs.flatMap { $0.0 + $0.1 }
        return [0xc1, UInt8(body.count + 1), UInt8(pairs.count * 2)] + body
    }
    static func described(_ code: UInt8, _ value: [UInt8]) -> [UInt8] { [0x00, 0x53, code] + value }
    static func frame(type: UInt8 = 0, channel: UInt16 = 0, _ body: [UInt8]) -> [UInt8] {
        let size = UInt32(8 + body.count)
        return withUnsafeBytes(of: size.bigEndian) { Array($0) } + [
            2, type, UInt8(channel >> 8), UInt8(channel & 0xff),
        ]
            + body
    }
    static func header(_ id: UInt8) -> [UInt8] { Array("AMQP".utf8) + [id, 1, 0, 0] }
    static let empty: [UInt8] = [0, 0, 0, 8, 2, 0, 0, 0]

    static func open(_ container: String, idle: UInt32?) -> [UInt8] {
        frame(described(0x10, list([str(container), null, null, null, idle.map(uint) ?? null])))
    }
    static func begin(remote: UInt16?) -> [UInt8] {
        frame(described(0x11, list([remote.map(ushort) ?? null, uint(0), uint(100), uint(100)])))
    }
    static func attach(_ name: String, handle: UInt32, receiver: Bool, source: String?, target: String?) -> [UInt8] {
        let terminus: (UInt8, String?) -> [UInt8] = { code, address in
            address.map { described(code, list([str($0)])) } ?? null
        }
        return frame(
            described(
                0x12,
                list([
                    str(name), uint(handle), bool(receiver), null, null, terminus(0x28, source), terminus(0x29, target),
                ])))
    }
    static func error(_ condition: String, _ description: String) -> [UInt8] {
        described(0x1d, list([sym(condition), str(description)]))
    }
    static func end(_ error: [UInt8]?) -> [UInt8] { frame(described(0x17, error.map { list([$0]) } ?? [0x45])) }
    static func close(_ error: [UInt8]?) -> [UInt8] { frame(described(0x18, error.map { list([$0]) } ?? [0x45])) }
    static func transfer(handle: UInt32, id: UInt32?, more: Bool, payload: [UInt8]) -> [UInt8] {
        frame(
            described(
                0x14,
                list([
                    uint(handle), id.map(uint) ?? null, id.map { bin([UInt8($0)]) } ?? null, uint(0), null, bool(more),
                ]))
                + payload)
    }
}

/// What a 1.0 decoder emitted.
struct Collected10: AMQP10Sink {
    var frames: [AMQP10Frame] = []
    var headers: [AMQP10HeaderBytes] = []
    var messages: [AMQP10Message] = []
    var problems: [String] = []
    var syncs: [UInt64] = []
    mutating func consume(_ event: consuming AMQP10Event) {
        switch event.kind {
        case .frame(let f): frames.append(f)
        case .protocolHeader(let h): headers.append(h)
        case .message(let m): messages.append(m)
        case .malformed(let reason, _), .violation(let reason): problems.append(reason)
        case .synchronized(let skipped): syncs.append(skipped)
        }
    }
}

func decode10(
    client: [UInt8], server: [UInt8] = [], chunk: Int? = nil, hunting: Bool = false, keepBodies: Bool = false
) -> Collected10 {
    var configuration = AMQP10Configuration()
    configuration.keepBodies = keepBodies
    var decoder = AMQP10Decoder(configuration: configuration, hunting: hunting)
    var sink = Collected10()
    for (direction, bytes) in [(Direction.clientToServer, client), (.serverToClient, server)] {
        bytes.withUnsafeBytes { raw in
            let step = chunk ?? max(raw.count, 1)
            for start in stride(from: 0, to: raw.count, by: step) {
                decoder.data(
                    UnsafeRawBufferPointer(rebasing: raw[start..<min(start + step, raw.count)]), direction: direction,
                    time: Timestamp(nanoseconds: Int64(start)), packetNumber: start, into: &sink)
            }
        }
    }
    return sink
}

@Suite("AMQP 1.0 codec") struct AMQP10CodecTests {
    @Test func typesReadAsTheSpecificationEncodesThem() throws {
        let bytes: [UInt8] =
            Enc10.list([
                Enc10.str("héllo"), Enc10.sym("amqp:not-found"), Enc10.uint(70000), [0x44], [0x55, 0xff],
                [0x81, 0x80, 0, 0, 0, 0, 0, 0, 0], Enc10.map([(Enc10.sym("k"), Enc10.bool(true))]),
                [0xe0, 10, 2, 0xa3, 3] + Array("abc".utf8) + [3] + Array("def".utf8),
                Enc10.described(0x24, [0x45]), [0x83, 0, 0, 0, 0, 0, 0, 0x03, 0xe8],
            ])
        let value = try bytes.withUnsafeBytes { raw throws(AMQP10DecodeError) in
            var reader = AMQP10Reader(raw)
            return try reader.value()
        }
        #expect(
            value
                == .list([
                    .string("héllo"), .symbol("amqp:not-found"), .uint(70000), .ulong(0), .long(-1), .long(Int64.min),
                    .map([AMQP10MapEntry(key: .symbol("k"), value: .bool(true))]),
                    .array([.symbol("abc"), .symbol("def")]), .described(descriptor: .ulong(0x24), value: .list([])),
                    .timestamp(1000),
                ]))
    }

    @Test func badBytesAreRefusedWithTheirReason() {
        func error(_ bytes: [UInt8]) -> AMQP10DecodeError.Code? {
            bytes.withUnsafeBytes { raw in
                var reader = AMQP10Reader(raw)
                do throws(AMQP10DecodeError) {
                    _ = try reader.value()
                    return nil
                } catch {
                    return error.code
                }
            }
        }
        #expect(error([0xa1, 10, 0x41]) == .truncated)
        #expect(error([0x07]) == .badConstructor)
        #expect(error(Array(repeating: 0xc0, count: 1) + [200, 1]) == .truncated)
        #expect(error([0xc0, 2, 200, 0x40]) == .tooManyEntries)
        #expect(error([0x00, 0xa1, 1, 0x41, 0x40]) == .badDescriptor)
        // Nesting past the limit: 40 lists, each holding the next.
        var nested: [UInt8] = [0x45]
        for _ in 0..<40 {
            nested =
                [0xd0] + withUnsafeBytes(of: UInt32(nested.count + 4).bigEndian) { Array($0) } + [0, 0, 0, 1] + nested
        }
        #expect(error(nested) == .tooDeep)
        // A list nested just within the limit reads.
        var shallow: [UInt8] = [0x45]
        for _ in 0..<20 { shallow = Enc10.list([shallow]) }
        #expect(error(shallow) == nil)
    }

    static let conversation: (client: [UInt8], server: [UInt8]) = (
        Enc10.header(3)
            + Enc10.frame(
                type: 1,
                Enc10.described(0x41, Enc10.list([Enc10.sym("PLAIN"), Enc10.bin(Array("\0guest\0secret".utf8))])))
            + Enc10.header(0) + Enc10.open("client-1", idle: 1000) + Enc10.begin(remote: nil)
            + Enc10.attach("l1", handle: 0, receiver: false, source: nil, target: "/queues/q")
            + Enc10.transfer(handle: 0, id: 0, more: true, payload: Enc10.described(0x75, Enc10.bin([1, 2, 3])))
            + Enc10.transfer(handle: 0, id: nil, more: false, payload: Enc10.described(0x75, Enc10.bin([4])))
            + Enc10.empty + Enc10.close(nil),
        Enc10.header(3)
            + Enc10.frame(type: 1, Enc10.described(0x40, Enc10.list([[0xe0, 8, 1, 0xa3, 5] + Array("PLAIN".utf8)])))
            + Enc10.frame(type: 1, Enc10.described(0x44, Enc10.list([[0x50, 0]]))) + Enc10.header(0)
            + Enc10.open("broker", idle: 60000) + Enc10.begin(remote: 0)
            + Enc10.attach("l1", handle: 7, receiver: true, source: nil, target: "/queues/q")
            + Enc10.end(Enc10.error("amqp:not-found", "no queue")) + Enc10.close(nil)
    )

    @Test func aConversationDecodesTheSameInAnyChunking() {
        let whole = decode10(client: Self.conversation.client, server: Self.conversation.server, keepBodies: true)
        #expect(whole.problems.isEmpty)
        #expect(whole.headers.map(\.protocolID) == [3, 0, 3, 0])
        #expect(
            whole.frames.map(\.name) == [
                "sasl-init", "open", "begin", "attach", "transfer", "transfer", "empty", "close", "sasl-mechanisms",
                "sasl-outcome", "open", "begin", "attach", "end", "close",
            ])
        guard case .saslInit(let initial)? = whole.frames[0].performative,
            case .open(let open)? = whole.frames[1].performative,
            case .attach(let attach)? = whole.frames[12].performative,
            case .end(let error)? = whole.frames[13].performative
        else {
            Issue.record("performatives not decoded: \(whole.frames)")
            return
        }
        #expect(initial.user == "guest" && initial.initialResponse == nil && initial.initialResponseLength == 13)
        #expect(open.containerID == "client-1" && open.idleTimeOut == 1000)
        #expect(attach.role == .receiver && attach.handle == 7 && attach.target?.address == "/queues/q")
        #expect(error?.condition == "amqp:not-found" && error?.description == "no queue")
        // The two transfers are one delivery of 2 frames whose sections are two data sections.
        #expect(whole.messages.count == 1)
        #expect(whole.messages.first?.frames == 2 && whole.messages.first?.deliveryID == 0)
        #expect(whole.messages.first?.sections.map(\.name) == ["data", "data"])
        #expect(whole.messages.first?.sections.first?.value == .binary([1, 2, 3]))
        for chunk in [1, 3, 7] {
            let drip = decode10(
                client: Self.conversation.client, server: Self.conversation.server, chunk: chunk, keepBodies: true)
            #expect(drip.frames == whole.frames, "chunk \(chunk)")
            #expect(drip.messages == whole.messages, "chunk \(chunk)")
        }
    }

    /// A transfer longer than the prefix the parser buffers when bodies are not kept: the same frames and
    /// deliveries whatever the chunking, whether bodies are kept or not; a gap inside its payload leaves the
    /// performative readable and the delivery incomplete.
    @Test func largeTransfersAreReadByTheirPrefix() {
        let payload = Enc10.described(0x75, [0xb0, 0, 0, 0x13, 0x88] + (0..<5000).map { UInt8($0 & 0xff) })
        let client =
            Enc10.header(0) + Enc10.open("c", idle: nil)
            + Enc10.transfer(handle: 0, id: 0, more: true, payload: payload)
            + Enc10.transfer(handle: 0, id: nil, more: false, payload: payload) + Enc10.close(nil)
        let reference = decode10(client: client, keepBodies: true)
        #expect(reference.problems.isEmpty)
        guard case .transfer(let t)? = reference.frames[1].performative else {
            Issue.record("no transfer: \(reference.frames)")
            return
        }
        #expect(t.payloadLength == payload.count)
        #expect(reference.messages.first?.payloadBytes == UInt64(2 * payload.count))
        for keep in [false, true] {
            for chunk in [1, 97, 1448] {
                let out = decode10(client: client, chunk: chunk, keepBodies: keep)
                #expect(out.frames == reference.frames, "chunk \(chunk), bodies kept \(keep)")
                #expect(out.messages.map(\.payloadBytes) == reference.messages.map(\.payloadBytes))
                #expect(out.problems.isEmpty, "\(out.problems)")
            }
        }
        // A gap in the first transfer's payload: both transfers still read; the delivery is incomplete.
        var decoder = AMQP10Decoder(configuration: AMQP10Configuration())
        var sink = Collected10()
        let cut = 21 + 200
        let head = Array(client[..<cut])
        let tail = Array(client[(cut + 1000)...])
        head.withUnsafeBytes {
            decoder.data($0, direction: .clientToServer, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
        }
        decoder.gap(1000, direction: .clientToServer, time: Timestamp(nanoseconds: 1), packetNumber: 2, into: &sink)
        tail.withUnsafeBytes {
            decoder.data($0, direction: .clientToServer, time: Timestamp(nanoseconds: 2), packetNumber: 3, into: &sink)
        }
        #expect(sink.frames.map(\.name) == ["open", "transfer", "transfer", "close"])
        #expect(sink.messages.first?.incomplete == true && sink.messages.first?.frames == 2)
    }

    @Test func garbageIsReportedAndFramesFoundAfterIt() {
        let garbage: [UInt8] = [0, 0, 0, 3, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8]
        let client =
            Enc10.header(0) + Enc10.open("c", idle: nil) + garbage + Enc10.begin(remote: nil) + Enc10.empty
            + Enc10.close(nil)
        let out = decode10(client: client)
        #expect(out.frames.map(\.name) == ["open", "begin", "empty", "close"])
        #expect(out.problems.first?.contains("under 8") == true, "\(out.problems)")
        #expect(out.syncs.count == 1)
        // Joined mid-stream: frames are found by their shape.
        let joined = decode10(client: Array(client.dropFirst(21)), hunting: true)
        #expect(joined.frames.map(\.name).suffix(3) == ["begin", "empty", "close"])
        #expect(joined.syncs.count == 1)
    }

    /// Hunting asks only whether a header is possible; a malformed frame is reported in words. The two answers come
    /// from one check, and each defect has its own words.
    @Test func huntingsCheckAndTheReportedProblemAgree() {
        let maximum: UInt32 = 1024
        var words: [AMQP10FrameParser.Defect: Set<String>] = [:]
        for size: UInt32 in [0, 7, 8, 9, 12, 16, 100, 1024, 1025, 70_000] {
            for doff: UInt8 in [0, 1, 2, 3, 4, 255] {
                for type: UInt8 in [0, 1, 2, 255] {
                    let header = Frame10Header(size: size, doff: doff, type: type, channel: 0)
                    let defect = AMQP10FrameParser.defect(of: header, maximum: maximum)
                    let problem = AMQP10FrameParser.problem(with: header, maximum: maximum)
                    #expect((defect == nil) == (problem == nil), "\(header): \(String(describing: defect))")
                    if let defect, let problem {
                        words[defect, default: []].insert(String(problem.prefix(while: { !$0.isNumber })))
                    }
                }
            }
        }
        #expect(words[.sizeUnderMinimum] == ["frame size "])
        #expect(words[.offsetUnderTwo] == ["data offset "])
        #expect(words[.offsetPastFrame] == ["data offset "])
        #expect(words[.unknownType] == ["unknown frame type "])
        #expect(words[.sizeOverMaximum] == ["frame size "])
        #expect(
            AMQP10FrameParser.defect(of: Frame10Header(size: 8, doff: 2, type: 0, channel: 0), maximum: maximum) == nil)
    }

    @Test func aFrameOverThePeersMaxFrameSizeIsAViolation() {
        let server =
            Enc10.header(0)
            + Enc10.frame(Enc10.described(0x10, Enc10.list([Enc10.str("b"), Enc10.null, Enc10.uint(512)])))
        let big = Enc10.transfer(
            handle: 0, id: 0, more: false,
            payload: Enc10.described(0x75, [0xb0, 0, 0, 2, 0] + Array(repeating: 7, count: 512)))
        var decoder = AMQP10Decoder(configuration: AMQP10Configuration())
        var sink = Collected10()
        for (d, bytes) in [(Direction.serverToClient, server), (.clientToServer, Enc10.header(0) + big)] {
            bytes.withUnsafeBytes {
                decoder.data($0, direction: d, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
            }
        }
        #expect(sink.frames.map(\.name) == ["open", "transfer"])
        #expect(sink.problems.count == 1 && sink.problems[0].contains("max-frame-size 512"), "\(sink.problems)")
    }
}
