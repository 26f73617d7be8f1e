// One AMQP 0-9-1 frame parser per direction of a connection. It owns the bytes of an incomplete frame,
// returns frames as they complete, streams body payloads without buffering them, and when it meets bytes
// that are not a frame (or joins mid-stream, or after a gap) it hunts for the next plausible frame boundary.
//
// Frame layout (AMQP 0-9-1 section 4.2.3): type (1) channel (2) size (4) payload (size) frame-end 0xCE (1).
import AMQPScopePackets

public struct FrameHeader: Hashable, Sendable {
    public var type: UInt8
    public var channel: UInt16
    public var size: UInt32
}

public enum FrameType: UInt8, Sendable {
    case method = 1, header = 2, body = 3, heartbeat = 8
}

/// The eight bytes a peer sends first: "AMQP" and four version bytes.
public struct ProtocolHeader: Hashable, Sendable, CustomStringConvertible {
    public var protocolID: UInt8
    public var major: UInt8
    public var minor: UInt8
    public var revision: UInt8

    public enum Version: String, Hashable, Sendable {
        case amqp091 = "AMQP 0-9-1"
        case amqp09 = "AMQP 0-9"
        case amqp08 = "AMQP 0-8"
        case amqp10 = "AMQP 1.0"
        case amqp10TLS = "AMQP 1.0 (TLS negotiation)"
        case amqp10SASL = "AMQP 1.0 (SASL layer)"
        case unknown = "AMQP (unknown version)"
    }

    public var version: Version {
        switch (protocolID, major, minor, revision) {
        case (0, 0, 9, 1): .amqp091
        case (1, 1, 0, 9): .amqp09
        case (1, 1, 8, 0), (1, 1, 9, 1): .amqp08   // RabbitMQ treats 1-1-9-1 as its 0-8 dialect too
        case (0, 1, 0, _): .amqp10
        case (2, 1, 0, _): .amqp10TLS
        case (3, 1, 0, _): .amqp10SASL
        default: .unknown
        }
    }

    /// Frames in the 0-8/0-9/0-9-1 layout follow this header.
    public var usesFrames091: Bool { version == .amqp091 || version == .amqp09 || version == .amqp08 }
    public var isAMQP10: Bool { version == .amqp10 || version == .amqp10TLS || version == .amqp10SASL }

    public var description: String { "\(version.rawValue) (AMQP \(protocolID) \(major) \(minor) \(revision))" }
}

/// What the parser hands up, with the stream offset where it starts.
enum ParserOutput {
    case protocolHeader(ProtocolHeader)
    /// A whole frame. For method, header and heartbeat frames `payload` holds the payload; for body frames it is
    /// empty (bodies stream through `.bodyPiece`). `damaged` says capture gaps removed bytes from inside it.
    case frame(FrameHeader, payload: UnsafeRawBufferPointer, damaged: Bool)
    case bodyPiece(FrameHeader, UnsafeRawBufferPointer)
    case malformed(reason: String, skipped: UInt64)
    case synchronized(skipped: UInt64)
}

public enum FrameLimits {
    /// No frame larger than this is accepted whatever was negotiated: 2^32-1 byte sizes are not buffered.
    /// RabbitMQ's own ceiling for frame_max is far lower; this only bounds hostile input.
    public static let absoluteMaximumFrameSize: UInt32 = 16 * 1024 * 1024
    /// Frame size assumed while hunting before frame_max is known: RabbitMQ's default frame_max (131072).
    public static let huntingFrameSize: UInt32 = 131_072
    /// Bytes kept while hunting for a frame boundary (enough for two default-sized frames).
    public static let huntBufferLimit = 2 * 131_072 + 64
    /// Consecutive valid frames that prove a boundary when hunting.
    public static let framesToSynchronize = 3
}

struct FrameParser {
    enum Mode {
        case protocolHeader  // the stream's first bytes: a protocol header or frames
        case frames
        case hunting
        case opaque          // not (or no longer) decoded: AMQP 1.0, or not AMQP
    }

    enum Stage {
        case header                                  // collecting the 7-byte frame header
        case payload(FrameHeader)                    // collecting a method/header/heartbeat payload + end byte
        case body(FrameHeader, remaining: Int)       // streaming a body payload
        case end(FrameHeader)                        // expecting the body frame's end byte
        case skip(FrameHeader, remaining: Int)       // a frame lost to a gap: skipping its remaining bytes
    }

    var mode: Mode
    var stage: Stage = .header
    var pending: [UInt8] = []
    var offset: UInt64 = 0            // stream offset of the next byte fed
    var frameStart: UInt64 = 0        // stream offset where the current frame (or hunt buffer) starts
    var damaged = false
    var negotiatedFrameMax: UInt32 = 0
    var keepBodies = false
    var huntedBytes: UInt64 = 0       // skipped while hunting since the last sync

    init(mode: Mode) { self.mode = mode }

    var maximumFrameSize: UInt32 {
        negotiatedFrameMax == 0 ? FrameLimits.absoluteMaximumFrameSize
            : min(FrameLimits.absoluteMaximumFrameSize, max(negotiatedFrameMax, UInt32(AMQPSpec.frameMinSize)))
    }

    /// True when nothing is half-read.
    var isIdle: Bool {
        if case .header = stage, pending.isEmpty { return true }
        return mode == .opaque
    }

    mutating func feed(_ input: UnsafeRawBufferPointer, _ out: (UInt64, ParserOutput) -> Void) {
        var i = 0
        while i < input.count {
            switch mode {
            case .opaque:
                offset += UInt64(input.count - i)
                return
            case .protocolHeader:
                i = headerStep(input, i, out)
            case .hunting:
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i...]))
                offset += UInt64(input.count - i)
                i = input.count
                hunt(out)
            case .frames:
                i = frameStep(input, i, out)
            }
        }
    }

    /// Bytes that never arrived: continue inside the current frame when its size covers them, else hunt.
    mutating func gap(_ length: UInt64, _ out: (UInt64, ParserOutput) -> Void) {
        defer { offset += length }
        switch mode {
        case .opaque: return
        case .hunting:
            huntedBytes += UInt64(pending.count)
            pending.removeAll(keepingCapacity: true)
            frameStart = offset + length
            return
        case .protocolHeader:
            startHunting(at: offset + length, carrying: [])
            return
        case .frames: break
        }
        switch stage {
        case .body(let header, let remaining) where length < UInt64(remaining):
            stage = .body(header, remaining: remaining - Int(length))
            damaged = true
        case .payload(let header) where length < UInt64(Int(header.size) + 1 - pending.count):
            let remaining = Int(header.size) + 1 - pending.count - Int(length)
            pending.removeAll(keepingCapacity: true)
            stage = .skip(header, remaining: remaining)
        case .skip(let header, let remaining) where length < UInt64(remaining):
            stage = .skip(header, remaining: remaining - Int(length))
        default:
            if !isIdle {
                out(frameStart, .malformed(reason: "frame cut by a capture gap", skipped: offset + length - frameStart))
            }
            pending.removeAll(keepingCapacity: true)
            stage = .header
            startHunting(at: offset + length, carrying: [])
        }
    }

    /// Drops what is held (a memory cap was reached): a partial frame is skipped to its known end and reported, a
    /// hunt buffer is counted as skipped bytes.
    mutating func shed(_ out: (UInt64, ParserOutput) -> Void) {
        guard !pending.isEmpty else { return }
        switch (mode, stage) {
        case (.frames, .payload(let header)):
            let remaining = Int(header.size) + 1 - pending.count
            pending = []
            stage = .skip(header, remaining: remaining)
            out(frameStart, .malformed(reason: "\(Self.typeName(header.type)) frame dropped: the decoders' memory cap was reached",
                                       skipped: UInt64(Int(header.size) + 8)))
        case (.hunting, _):
            huntedBytes += UInt64(pending.count)
            frameStart += UInt64(pending.count)
            pending = []
        default:
            break // a header's few bytes: kept
        }
    }

    // MARK: - Protocol header

    private mutating func headerStep(_ input: UnsafeRawBufferPointer, _ start: Int, _ out: (UInt64, ParserOutput) -> Void) -> Int {
        let magic: [UInt8] = [0x41, 0x4D, 0x51, 0x50] // "AMQP"
        var i = start
        while i < input.count && pending.count < 8 {
            let byte = input[i]
            if pending.count < 4 && byte != magic[pending.count] {
                // Not a protocol header: these bytes must be frames (or something else altogether).
                let carried = pending
                pending.removeAll(keepingCapacity: true)
                mode = .frames
                frameStart = offset - UInt64(carried.count)
                if !carried.isEmpty {
                    // Re-read the bytes held back while looking for "AMQP".
                    let savedOffset = offset
                    offset = frameStart
                    carried.withUnsafeBytes { raw in feed(raw, out) }
                    offset = savedOffset
                }
                return i
            }
            pending.append(byte)
            offset += 1
            i += 1
        }
        if pending.count == 8 {
            let header = ProtocolHeader(protocolID: pending[4], major: pending[5], minor: pending[6], revision: pending[7])
            pending.removeAll(keepingCapacity: true)
            out(offset - 8, .protocolHeader(header))
            mode = header.usesFrames091 ? .frames : .opaque
            frameStart = offset
        }
        return i
    }

    // MARK: - Frames

    private mutating func frameStep(_ input: UnsafeRawBufferPointer, _ start: Int, _ out: (UInt64, ParserOutput) -> Void) -> Int {
        var i = start
        let available = input.count - i
        switch stage {
        case .header:
            frameStart = offset - UInt64(pending.count)
            let header: FrameHeader
            if pending.isEmpty && available >= 7 {
                header = Self.readHeader(UnsafeRawBufferPointer(rebasing: input[i..<i + 7]))
                i += 7
                offset += 7
            } else {
                let n = min(7 - pending.count, available)
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i..<i + n]))
                i += n
                offset += UInt64(n)
                guard pending.count == 7 else { return i }
                header = pending.withUnsafeBytes { Self.readHeader($0) }
                pending.removeAll(keepingCapacity: true)
            }
            if let problem = Self.problem(with: header, maximum: maximumFrameSize) {
                // Not a frame: hunt from the byte after this one's start.
                out(frameStart, .malformed(reason: problem, skipped: 1))
                startHunting(at: frameStart + 1, carrying: Array(Self.headerBytes(header)[1...]))
                return i
            }
            damaged = false
            if header.type == FrameType.body.rawValue {
                stage = header.size == 0 ? .end(header) : .body(header, remaining: Int(header.size))
            } else {
                stage = .payload(header)
            }
            return i
        case .payload(let header):
            let needed = Int(header.size) + 1
            if pending.isEmpty && available >= needed {
                let frame = UnsafeRawBufferPointer(rebasing: input[i..<i + needed])
                i += needed
                offset += UInt64(needed)
                complete(header, frame, out)
            } else {
                let n = min(needed - pending.count, available)
                if pending.capacity < needed { pending.reserveCapacity(needed) }
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i..<i + n]))
                i += n
                offset += UInt64(n)
                if pending.count == needed {
                    let whole = pending
                    pending.removeAll(keepingCapacity: true)
                    whole.withUnsafeBytes { complete(header, $0, out) }
                }
            }
            return i
        case .body(let header, let remaining):
            let n = min(remaining, available)
            if keepBodies { out(offset, .bodyPiece(header, UnsafeRawBufferPointer(rebasing: input[i..<i + n]))) }
            i += n
            offset += UInt64(n)
            stage = n == remaining ? .end(header) : .body(header, remaining: remaining - n)
            return i
        case .end(let header):
            let byte = input[i]
            i += 1
            offset += 1
            stage = .header
            if byte == AMQPSpec.frameEnd {
                out(frameStart, .frame(header, payload: UnsafeRawBufferPointer(start: nil, count: 0), damaged: damaged))
            } else {
                // The byte that should have ended the frame may begin the next one: hunt from it.
                out(frameStart, .malformed(reason: Self.badEnd(byte), skipped: offset - 1 - frameStart))
                startHunting(at: offset - 1, carrying: [byte])
            }
            return i
        case .skip(let header, let remaining):
            let n = min(remaining, available)
            i += n
            offset += UInt64(n)
            if n == remaining {
                stage = .header
                out(frameStart, .malformed(reason: "\(Self.typeName(header.type)) frame lost in a capture gap",
                                           skipped: offset - frameStart))
            } else {
                stage = .skip(header, remaining: remaining - n)
            }
            return i
        }
    }

    /// A method, header or heartbeat frame's payload plus end byte is complete.
    private mutating func complete(_ header: FrameHeader, _ bytes: UnsafeRawBufferPointer, _ out: (UInt64, ParserOutput) -> Void) {
        stage = .header
        let end = bytes[bytes.count - 1]
        guard end == AMQPSpec.frameEnd else {
            out(frameStart, .malformed(reason: Self.badEnd(end), skipped: offset - 1 - frameStart))
            startHunting(at: offset - 1, carrying: [end])
            return
        }
        out(frameStart, .frame(header, payload: UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count - 1]), damaged: false))
    }

    static func readHeader(_ b: UnsafeRawBufferPointer) -> FrameHeader {
        FrameHeader(type: b[0], channel: b.integer(at: 1), size: b.integer(at: 3))
    }

    static func headerBytes(_ h: FrameHeader) -> [UInt8] {
        [h.type, UInt8(h.channel >> 8), UInt8(h.channel & 0xff),
         UInt8(h.size >> 24), UInt8((h.size >> 16) & 0xff), UInt8((h.size >> 8) & 0xff), UInt8(h.size & 0xff)]
    }

    static func problem(with header: FrameHeader, maximum: UInt32) -> String? {
        guard FrameType(rawValue: header.type) != nil else { return "unknown frame type \(header.type)" }
        if header.size > maximum {
            return "frame size \(header.size) exceeds the \(maximum)-byte limit"
        }
        return nil
    }

    static func badEnd(_ byte: UInt8) -> String { "frame end byte is 0x\(String(byte, radix: 16)), not 0xce" }

    static func typeName(_ type: UInt8) -> String {
        switch FrameType(rawValue: type) {
        case .method?: "method"
        case .header?: "content header"
        case .body?: "body"
        case .heartbeat?: "heartbeat"
        case nil: "type-\(type)"
        }
    }

    // MARK: - Hunting for a frame boundary

    mutating func startHunting(at streamOffset: UInt64, carrying bytes: [UInt8]) {
        mode = .hunting
        stage = .header
        pending = bytes
        frameStart = streamOffset
        huntedBytes = 0
    }

    /// Looks for a position in `pending` where several consecutive valid frames start.
    private mutating func hunt(_ out: (UInt64, ParserOutput) -> Void) {
        let limit = negotiatedFrameMax == 0 ? FrameLimits.huntingFrameSize : min(maximumFrameSize, FrameLimits.huntingFrameSize * 8)
        var verdict: (position: Int, sync: Bool)? = nil
        pending.withUnsafeBytes { b in
            var p = 0
            while p + 7 <= b.count {
                switch Self.chain(b, from: p, limit: limit) {
                case .sync: verdict = (p, true); return
                case .needMore: verdict = (p, false); return
                case .invalid: p += 1
                }
            }
            verdict = (max(0, b.count - 6), false)
        }
        guard let verdict else { return }
        var drop = verdict.position
        if !verdict.sync && pending.count - drop > FrameLimits.huntBufferLimit {
            drop = pending.count - FrameLimits.huntBufferLimit // a candidate that never completes: let it go
        }
        huntedBytes += UInt64(drop)
        let syncOffset = frameStart + UInt64(drop)
        if verdict.sync {
            let rest = Array(pending[drop...])
            pending.removeAll(keepingCapacity: true)
            out(syncOffset, .synchronized(skipped: huntedBytes))
            huntedBytes = 0
            mode = .frames
            stage = .header
            let savedOffset = offset
            offset = syncOffset
            rest.withUnsafeBytes { feed($0, out) }
            offset = savedOffset
        } else if drop > 0 {
            pending.removeFirst(drop)
            frameStart = syncOffset
        }
    }

    enum Chain { case sync, needMore, invalid }

    /// Validates consecutive frames at `p`: type, size, the end byte, and for method frames a known method.
    static func chain(_ b: UnsafeRawBufferPointer, from start: Int, limit: UInt32) -> Chain {
        var q = start
        var frames = 0
        var strong = false
        while frames < FrameLimits.framesToSynchronize {
            if q + 7 > b.count { return frames >= 2 || (frames == 1 && strong && q == b.count) ? .sync : .needMore }
            let header = readHeader(UnsafeRawBufferPointer(rebasing: b[q..<q + 7]))
            guard let type = FrameType(rawValue: header.type), header.size <= limit else { return .invalid }
            let payload = q + 7
            switch type {
            case .heartbeat:
                guard header.size == 0 && header.channel == 0 else { return .invalid }
                strong = frames == 0
            case .method:
                guard header.size >= 4 else { return .invalid }
                if payload + 4 <= b.count {
                    let classID: UInt16 = b.integer(at: payload)
                    let methodID: UInt16 = b.integer(at: payload + 2)
                    guard AMQPSpec.descriptor(classID: classID, methodID: methodID) != nil else { return .invalid }
                    strong = frames == 0
                }
            case .header:
                guard header.size >= 14 else { return .invalid }
                if payload + 2 <= b.count {
                    let classID: UInt16 = b.integer(at: payload)
                    guard AMQPSpec.isKnownClass(classID) else { return .invalid }
                }
            case .body:
                break
            }
            let end = payload + Int(header.size)
            if end >= b.count { return frames >= 2 ? .sync : .needMore }
            guard b[end] == AMQPSpec.frameEnd else { return .invalid }
            frames += 1
            q = end + 1
        }
        return .sync
    }
}
