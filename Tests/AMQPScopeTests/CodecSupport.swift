import AMQPScopePackets

// A test-only AMQP encoder (the codec itself only decodes), and a sink that collects codec events.
@testable import AMQPScopeCodec

enum Encode {
    static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func u32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }
    static func u64(_ v: UInt64) -> [UInt8] { u32(UInt32(v >> 32)) + u32(UInt32(v & 0xffff_ffff)) }
    static func shortString(_ s: String) -> [UInt8] { [UInt8(s.utf8.count)] + Array(s.utf8) }
    static func longString(_ b: [UInt8]) -> [UInt8] { u32(UInt32(b.count)) + b }

    static func table(_ t: FieldTable) -> [UInt8] {
        let body = t.entries.flatMap { shortString($0.key) + fieldValue($0.value) }
        return u32(UInt32(body.count)) + body
    }

    static func fieldValue(_ v: FieldValue) -> [UInt8] {
        let letter = [UInt8(String(v.typeLetter).utf8.first!)]
        switch v {
        case .boolean(let b): return letter + [b ? 1 : 0]
        case .int8(let x): return letter + [UInt8(bitPattern: x)]
        case .uint8(let x): return letter + [x]
        case .int16(let x): return letter + u16(UInt16(bitPattern: x))
        case .uint16(let x): return letter + u16(x)
        case .int32(let x): return letter + u32(UInt32(bitPattern: x))
        case .uint32(let x): return letter + u32(x)
        case .int64(let x): return letter + u64(UInt64(bitPattern: x))
        case .float(let x): return letter + u32(x.bitPattern)
        case .double(let x): return letter + u64(x.bitPattern)
        case .decimal(let scale, let value): return letter + [scale] + u32(value)
        case .longString(let s): return letter + longString(s.bytes)
        case .array(let items):
            let body = items.flatMap(fieldValue)
            return letter + u32(UInt32(body.count)) + body
        case .timestamp(let t): return letter + u64(t)
        case .table(let t): return letter + table(t)
        case .void: return letter
        case .byteArray(let b): return letter + longString(b)
        }
    }

    /// A method payload from argument values, packing consecutive bits into octets (least significant first).
    static func method(_ classID: UInt16, _ methodID: UInt16, _ arguments: [ArgumentValue]) -> [UInt8] {
        var out = u16(classID) + u16(methodID)
        var bits: [Bool] = []
        func flush() {
            guard !bits.isEmpty else { return }
            var octet: UInt8 = 0
            for (i, b) in bits.enumerated() where b { octet |= 1 << UInt8(i) }
            out.append(octet)
            bits = []
        }
        for a in arguments {
            if case .bit(let b) = a {
                if bits.count == 8 { flush() }
                bits.append(b)
                continue
            }
            flush()
            switch a {
            case .octet(let v): out.append(v)
            case .short(let v): out += u16(v)
            case .long(let v): out += u32(v)
            case .longlong(let v), .timestamp(let v): out += u64(v)
            case .shortString(let s): out += shortString(s)
            case .longString(let s): out += longString(s.bytes)
            case .table(let t): out += table(t)
            case .bit: break
            }
        }
        flush()
        return out
    }

    static func frame(_ type: UInt8, _ channel: UInt16, _ payload: [UInt8], end: UInt8 = 0xCE) -> [UInt8] {
        [type] + u16(channel) + u32(UInt32(payload.count)) + payload + [end]
    }

    static func methodFrame(_ channel: UInt16, _ classID: UInt16, _ methodID: UInt16, _ arguments: [ArgumentValue])
        -> [UInt8]
    {
        frame(1, channel, method(classID, methodID, arguments))
    }

    static let header091: [UInt8] = Array("AMQP".utf8) + [0, 0, 9, 1]
    static let heartbeat: [UInt8] = frame(8, 0, [])

    /// A content header frame for the basic class with the given property flags and raw property bytes.
    static func contentHeader(_ channel: UInt16, bodySize: UInt64, flags: UInt16 = 0, properties: [UInt8] = [])
        -> [UInt8]
    {
        frame(2, channel, u16(60) + u16(0) + u64(bodySize) + u16(flags) + properties)
    }
}

/// Collects codec events as values and short strings.
struct CodecCollect: CodecSink {
    var frames: [Frame] = []
    var messages: [Message] = []
    /// Only for a sink that takes them (this one does not, unless told).
    var flowMessages: [FlowMessage] = []
    var takesFlowMessages = false
    /// Count routine frames (no event for them), as the timeline's sink does unless frames are recorded.
    var counts = false
    var counted = 0

    mutating func count(_ frame: CountedFrame, direction: Direction, time: Timestamp, packetNumber: Int) -> Bool {
        if counts { counted += 1 }
        return counts
    }
    var malformed: [String] = []
    var violations: [String] = []
    var headers: [ProtocolHeader] = []
    var syncs: [UInt64] = []
    var verdicts: [Verdict] = []

    mutating func consume(_ event: consuming CodecEvent) {
        switch event.kind {
        case .frame(let f): frames.append(f)
        case .message(let m): messages.append(m)
        case .flowMessage(let m): flowMessages.append(m)
        case .malformed(let reason, _): malformed.append(reason)
        case .violation(let reason): violations.append(reason)
        case .protocolHeader(let h): headers.append(h)
        case .synchronized(let skipped): syncs.append(skipped)
        case .verdict(let v): verdicts.append(v)
        }
    }

    var methods: [Method] {
        frames.compactMap { if case .method(let m) = $0.content { return m } else { return nil } }
    }
}

/// Feeds client->server bytes (and optionally server->client) through a fresh decoder, in chunks of `chunk` bytes.
func decodeStream(
    client: [UInt8], server: [UInt8] = [], chunk: Int = .max, fromStart: Bool = true, onAMQPPort: Bool = true,
    configuration: CodecConfiguration = CodecConfiguration(), sink: CodecCollect = CodecCollect()
) -> CodecCollect {
    var decoder = ConnectionDecoder(fromStart: fromStart, onAMQPPort: onAMQPPort, configuration: configuration)
    var sink = sink
    for (bytes, direction) in [(client, Direction.clientToServer), (server, .serverToClient)] {
        var at = 0
        while at < bytes.count {
            let n = min(chunk, bytes.count - at)
            bytes[at..<at + n].withUnsafeBytes {
                decoder.data($0, direction: direction, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
            }
            at += n
        }
    }
    return sink
}
