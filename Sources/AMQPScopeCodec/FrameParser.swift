// One AMQP 0-9-1 frame parser per direction of a connection. It owns the bytes of an incomplete frame,
// returns frames as they complete, streams body payloads without buffering them, and when it meets bytes
// that are not a frame (or joins mid-stream, or after a gap) it hunts for the next plausible frame boundary.
//
// Frame layout (AMQP 0-9-1 section 4.2.3): type (1) channel (2) size (4) payload (size) frame-end 0xCE (1).
import AMQPScopePackets

package struct FrameHeader: Hashable, Sendable {
    package var type: UInt8
    package var channel: UInt16
    package var size: UInt32
}

package enum FrameType: UInt8, Sendable {
    case method = 1
    case header = 2
    case body = 3
    case heartbeat = 8
}

/// The eight bytes a peer sends first: "AMQP" and four version bytes.
public struct ProtocolHeader: Hashable, Sendable, CustomStringConvertible {
    /// The protocol id octet (0 for 0-9-1 and 1.0, 2 TLS and 3 SASL in 1.0).
    public var protocolID: UInt8
    /// The major version.
    public var major: UInt8
    /// The minor version.
    public var minor: UInt8
    /// The revision.
    public var revision: UInt8

    /// The protocol a header names.
    public enum Version: String, Hashable, Sendable {
        case amqp091 = "AMQP 0-9-1"
        case amqp09 = "AMQP 0-9"
        case amqp08 = "AMQP 0-8"
        case amqp10 = "AMQP 1.0"
        case amqp10TLS = "AMQP 1.0 (TLS negotiation)"
        case amqp10SASL = "AMQP 1.0 (SASL layer)"
        /// AMQP 0-10 (Qpid's protocol): named, not decoded.
        case amqp010 = "AMQP 0-10"
        case unknown = "AMQP (unknown version)"

        /// Frames in the 0-8/0-9/0-9-1 layout follow a header naming it.
        public var usesFrames091: Bool { self == .amqp091 || self == .amqp09 || self == .amqp08 }
    }

    /// The protocol it names.
    public var version: Version {
        switch (protocolID, major, minor, revision) {
        case (0, 0, 9, 1): .amqp091
        case (1, 1, 0, 9): .amqp09
        case (1, 1, 8, 0), (1, 1, 9, 1): .amqp08  // RabbitMQ treats 1-1-9-1 as its 0-8 dialect too
        case (0, 1, 0, _): .amqp10
        case (2, 1, 0, _): .amqp10TLS
        case (3, 1, 0, _): .amqp10SASL
        case (1, 1, 0, 10): .amqp010
        default: .unknown
        }
    }

    /// Frames in the 0-8/0-9/0-9-1 layout follow this header.
    public var usesFrames091: Bool { version.usesFrames091 }
    /// It is an AMQP 1.0 header (plain, TLS or SASL).
    public var isAMQP10: Bool { version == .amqp10 || version == .amqp10TLS || version == .amqp10SASL }

    /// A header from its four bytes after "AMQP".
    package init(protocolID: UInt8, major: UInt8, minor: UInt8, revision: UInt8) {
        self.protocolID = protocolID
        self.major = major
        self.minor = minor
        self.revision = revision
    }

    /// As reports print it.
    public var description: String { "\(version.rawValue) (AMQP \(protocolID) \(major) \(minor) \(revision))" }
}

/// What the parser hands up, with the stream offset where it starts.
enum ParserOutput {
    case protocolHeader(ProtocolHeader)
    /// A whole frame. For method, header and heartbeat frames `payload` holds the payload; for body frames it is
    /// empty (bodies stream through `.bodyPiece`). `damaged` says capture gaps removed bytes from inside it.
    case frame(FrameHeader, payload: UnsafeRawBufferPointer, damaged: Bool)
    case bodyPiece(FrameHeader, UnsafeRawBufferPointer)
    case malformed(reason: MalformedFrame, skipped: UInt64)
    case synchronized(skipped: UInt64)

    /// The same output with its payload (a frame's) or bytes (a body piece's) in `bytes`.
    func with(payload bytes: UnsafeRawBufferPointer) -> ParserOutput {
        switch self {
        case .frame(let header, _, let damaged): .frame(header, payload: bytes, damaged: damaged)
        case .bodyPiece(let header, _): .bodyPiece(header, bytes)
        case .protocolHeader, .malformed, .synchronized: self
        }
    }
}

/// Why bytes were not a frame: words only when the decoder hands the reason up. Held as values, so that the parser's
/// outputs hold no reference, and a step costs nothing to destroy (a step of every frame did).
enum MalformedFrame: CustomStringConvertible {
    case unknownType(UInt8)
    case tooLarge(size: UInt32, maximum: UInt32)
    case badEnd(UInt8)
    case dropped(type: UInt8)

    var description: String {
        switch self {
        case .unknownType(let type): "unknown frame type \(type)"
        case .tooLarge(let size, let maximum): "frame size \(size) exceeds the \(maximum)-byte limit"
        case .badEnd(let byte): "frame end byte is 0x\(String(byte, radix: 16)), not 0xce"
        case .dropped(let type): "\(FrameParser.typeName(type)) frame dropped: the decoders' memory cap was reached"
        }
    }
}

extension UnsafeRawBufferPointer {
    /// No bytes.
    static var empty: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }
}

package enum FrameLimits {
    /// No frame larger than this is accepted whatever was negotiated: 2^32-1 byte sizes are not buffered.
    /// RabbitMQ's own ceiling for frame_max is far lower; this only bounds hostile input.
    package static let absoluteMaximumFrameSize: UInt32 = 16 * 1024 * 1024
    /// Frame size assumed while hunting before frame_max is known: RabbitMQ's default frame_max (131072).
    package static let huntingFrameSize: UInt32 = 131_072
    /// Bytes kept while hunting for a frame boundary (enough for two default-sized frames).
    package static let huntBufferLimit = 2 * 131_072 + 64
    /// Consecutive valid frames that prove a boundary when hunting.
    package static let framesToSynchronize = 3
}

struct FrameParser {
    /// Where the parser is in the stream, with what it knows of the frame in flight. The bytes of a frame header,
    /// protocol header, method payload or hunt that have arrived so far are in `pending`, which the parser owns.
    enum State {
        /// The stream's first bytes: a protocol header, or frames when they do not start with "AMQP".
        case protocolHeader
        /// Collecting a 7-byte frame header; it starts `pending.count` bytes before `offset`.
        case frameHeader
        /// A method, content-header or heartbeat frame: collecting its payload and end byte.
        case payload(FrameHeader, start: UInt64)
        /// A body frame's payload, streamed through without buffering; `damaged` when a gap removed bytes of it.
        case body(FrameHeader, start: UInt64, remaining: Int, damaged: Bool)
        /// A body frame's end byte.
        case bodyEnd(FrameHeader, start: UInt64, damaged: Bool)
        /// A frame lost in a capture gap: skipping its remaining bytes.
        case skip(FrameHeader, start: UInt64, remaining: Int)
        /// Looking for a frame boundary in `pending`, which starts at `start`; `skipped` bytes were passed over since
        /// the hunt began.
        case hunting(start: UInt64, skipped: UInt64)
        /// Not decoded (AMQP 1.0, or not AMQP): bytes are only counted.
        case opaque
    }

    /// One step's result: an output, whose frame payload or body piece lies in the bytes being read or (for a
    /// frame collected across packets) in `pending`.
    private struct Step {
        enum Payload {
            case none
            case source(Range<Int>)
            case pending
        }
        var offset: UInt64
        var output: ParserOutput
        var payload = Payload.none
    }

    private(set) var state: State
    /// The in-flight bytes of the current state (see `State`).
    private(set) var pending: [UInt8] = [] {
        didSet { held = pending.count }
    }
    /// `pending.count`, kept in the parser: the checks made on every frame then read the parser alone, not the
    /// array's storage, which a thousand interleaved connections evict from the cache between two packets.
    private(set) var held = 0
    /// Bytes after a boundary that a hunt found, to be read again as frames.
    private var replay: [UInt8] = []
    /// Where the last gap ended when a hunt began there: a segment's first byte.
    private var gapBoundary: UInt64?
    /// Stream offset of the next byte read.
    private(set) var offset: UInt64 = 0
    var negotiatedFrameMax: UInt32 = 0
    var keepBodies = false

    init(state: State) { self.state = state }

    var maximumFrameSize: UInt32 {
        negotiatedFrameMax == 0
            ? FrameLimits.absoluteMaximumFrameSize
            : min(FrameLimits.absoluteMaximumFrameSize, max(negotiatedFrameMax, UInt32(AMQPSpec.frameMinSize)))
    }

    var isHunting: Bool {
        if case .hunting = state { return true }
        return false
    }

    /// Bytes passed over or held while hunting for a frame boundary.
    var huntedBytes: UInt64 {
        if case .hunting(_, let skipped) = state { return skipped + UInt64(pending.count) }
        return 0
    }

    /// Where the frame being read started, when the stream is inside one.
    var unfinishedFrameStart: UInt64? {
        switch state {
        case .frameHeader: pending.isEmpty ? nil : offset - UInt64(pending.count)
        case .payload(_, let start), .body(_, let start, _, _), .bodyEnd(_, let start, _), .skip(_, let start, _): start
        case .protocolHeader, .hunting, .opaque: nil
        }
    }

    /// Stops decoding and lets go of what is held.
    mutating func stop() {
        state = .opaque
        pending = []
        replay = []
    }

    /// Reads `input`, handing each output to `out` (frame payloads and body pieces are valid only during the call).
    mutating func feed(_ input: UnsafeRawBufferPointer, _ out: (UInt64, ParserOutput) -> Void) {
        var cursor = 0
        read(input, &cursor, out)
        readReplay(out)
    }

    /// A hunt that found a boundary left the bytes after it to be read again (and a hunt among those may do so once
    /// more).
    private mutating func readReplay(_ out: (UInt64, ParserOutput) -> Void) {
        while !replay.isEmpty {
            let bytes = replay
            replay = []
            var position = 0
            bytes.withUnsafeBytes { read($0, &position, out) }
        }
    }

    private mutating func read(
        _ source: UnsafeRawBufferPointer, _ cursor: inout Int, _ out: (UInt64, ParserOutput) -> Void
    ) {
        while let step = next(source, &cursor) {
            switch step.payload {
            case .none:
                out(step.offset, step.output)
            case .source(let range):
                out(step.offset, step.output.with(payload: UnsafeRawBufferPointer(rebasing: source[range])))
            case .pending:
                pending.withUnsafeBytes { out(step.offset, step.output.with(payload: $0)) }
                pending.removeAll(keepingCapacity: true)
            }
        }
    }

    /// The next output from `source` at `i`, or nil once `source` is used up.
    private mutating func next(_ source: UnsafeRawBufferPointer, _ i: inout Int) -> Step? {
        while i < source.count {
            let available = source.count - i
            switch state {
            case .opaque:
                offset += UInt64(available)
                i = source.count
            case .protocolHeader:
                if let step = protocolHeader(source, &i) { return step }
            case .hunting(let start, let skipped):
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i...]))
                offset += UInt64(available)
                i = source.count
                return hunt(start: start, skipped: skipped)
            case .frameHeader:
                if let step = frameHeader(source, &i) { return step }
            case .payload(let header, let start):
                let needed = Int(header.size) + 1
                if held == 0 && available >= needed {
                    let range = i..<i + needed
                    i += needed
                    offset += UInt64(needed)
                    return complete(
                        header, start: start, end: source[range.upperBound - 1], payload: .source(range.dropLast()))
                }
                let n = min(needed - held, available)
                if pending.capacity < needed { pending.reserveCapacity(needed) }
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i..<i + n]))
                i += n
                offset += UInt64(n)
                if pending.count == needed {
                    let end = pending.removeLast()
                    return complete(header, start: start, end: end, payload: .pending)
                }
            case .body(let header, let start, let remaining, let damaged):
                let n = min(remaining, available)
                let range = i..<i + n
                let pieceOffset = offset
                i += n
                offset += UInt64(n)
                state =
                    n == remaining
                    ? .bodyEnd(header, start: start, damaged: damaged)
                    : .body(header, start: start, remaining: remaining - n, damaged: damaged)
                if keepBodies {
                    return Step(offset: pieceOffset, output: .bodyPiece(header, .empty), payload: .source(range))
                }
            case .bodyEnd(let header, let start, let damaged):
                let byte = source[i]
                i += 1
                offset += 1
                state = .frameHeader
                if byte == AMQPSpec.frameEnd {
                    return Step(offset: start, output: .frame(header, payload: .empty, damaged: damaged))
                }
                // The byte that should have ended the frame may begin the next one: hunt from it.
                startHunting(at: offset - 1, carrying: [byte])
                return Step(offset: start, output: .malformed(reason: .badEnd(byte), skipped: offset - 1 - start))
            case .skip(let header, let start, let remaining):
                // The rest of a frame already handed up (cut by a gap) or dropped (memory cap): passed over.
                let n = min(remaining, available)
                i += n
                offset += UInt64(n)
                state = n < remaining ? .skip(header, start: start, remaining: remaining - n) : .frameHeader
            }
        }
        return nil
    }

    /// Bytes that never arrived (lost, or cut off by the capture's snap length). A gap is the capture's fault, never
    /// the protocol's: the frame in flight is handed up with what was captured of it (`damaged`), and its size from
    /// its header carries the frame boundary across the missing bytes. Only when the gap runs past the frame's end is
    /// the next boundary unknown; the hunt then starts at the gap's end, where a segment (and usually a frame) began.
    mutating func gap(_ length: UInt64, _ out: (UInt64, ParserOutput) -> Void) {
        resumeAtGapBoundary(out)
        let end = offset + length
        defer { offset = end }
        switch state {
        case .opaque:
            return
        case .hunting(_, let skipped):
            let held = UInt64(pending.count)
            pending.removeAll(keepingCapacity: true)
            state = .hunting(start: end, skipped: skipped + held)
        case .protocolHeader:
            startHunting(at: end, carrying: [])
        case .body(let header, let start, let remaining, _) where length < UInt64(remaining):
            state = .body(header, start: start, remaining: remaining - Int(length), damaged: true)
        case .body(let header, let start, let remaining, _) where length == UInt64(remaining):
            state = .bodyEnd(header, start: start, damaged: true)
        case .body(let header, let start, _, _):
            out(start, .frame(header, payload: .empty, damaged: true))
            resume(afterFrameEndingAt: start + 8 + UInt64(header.size), gapEnd: end)
        case .bodyEnd(let header, let start, _):
            out(start, .frame(header, payload: .empty, damaged: true))
            resume(afterFrameEndingAt: start + 8 + UInt64(header.size), gapEnd: end)
        case .payload(let header, let start):
            let remaining = UInt64(Int(header.size) + 1 - pending.count)
            // What was captured of the payload, without its end byte (which may be among the captured bytes).
            let captured = min(pending.count, Int(header.size))
            pending.withUnsafeBytes {
                out(start, .frame(header, payload: UnsafeRawBufferPointer(rebasing: $0[..<captured]), damaged: true))
            }
            pending.removeAll(keepingCapacity: true)
            if length < remaining {
                state = .skip(header, start: start, remaining: Int(remaining - length))
            } else {
                resume(afterFrameEndingAt: start + 8 + UInt64(header.size), gapEnd: end)
            }
        case .skip(let header, let start, let remaining) where length < UInt64(remaining):
            state = .skip(header, start: start, remaining: remaining - Int(length))
        case .skip(let header, let start, _):
            resume(afterFrameEndingAt: start + 8 + UInt64(header.size), gapEnd: end)
        case .frameHeader:
            // A header's first bytes, or none: the next boundary is unknown.
            startHunting(at: end, carrying: [])
        }
        if case .hunting(let start, _) = state, start == end { gapBoundary = end }
    }

    /// After a gap that covered the rest of a frame: in step when the gap ended exactly at the frame's end, else
    /// hunting from the gap's end.
    private mutating func resume(afterFrameEndingAt frameEnd: UInt64, gapEnd: UInt64) {
        if gapEnd == frameEnd {
            state = .frameHeader
        } else {
            startHunting(at: gapEnd, carrying: [])
        }
    }

    /// A hunt that began at a gap's end (where a segment began) and holds what was captured there: when those bytes
    /// start with a plausible frame header, the boundary is taken and they are read as frames, so that the frame cut
    /// by the next gap is handed up with its captured head. (A snap length that keeps only each segment's first
    /// bytes leaves no room for the chain of frames a hunt otherwise asks for.)
    private mutating func resumeAtGapBoundary(_ out: (UInt64, ParserOutput) -> Void) {
        guard case .hunting(let start, let skipped) = state, start == gapBoundary, pending.count >= 7 else { return }
        let plausible = pending.withUnsafeBytes { Self.plausibleHead($0, limit: maximumFrameSize) }
        guard plausible else { return }
        let held = pending
        pending = []
        out(start, .synchronized(skipped: skipped))
        state = .frameHeader
        offset = start
        replay = held
        readReplay(out)
    }

    /// A frame header at the start of `b` that a sender could have written there: a known type within the size
    /// limit, a heartbeat on channel 0, a method of a known class and method, a content header of a known class, a
    /// body on a channel other than 0.
    static func plausibleHead(_ b: UnsafeRawBufferPointer, limit: UInt32) -> Bool {
        let header = readHeader(UnsafeRawBufferPointer(rebasing: b[0..<7]))
        guard let type = FrameType(rawValue: header.type), header.size <= limit else { return false }
        switch type {
        case .heartbeat: return header.size == 0 && header.channel == 0
        case .method:
            guard header.size >= 4, b.count >= 11 else { return false }
            return AMQPSpec.descriptor(classID: b.integer(at: 7), methodID: b.integer(at: 9)) != nil
        case .header:
            guard header.size >= 14, header.channel != 0, b.count >= 9 else { return false }
            return AMQPSpec.isKnownClass(b.integer(at: 7))
        case .body: return header.channel != 0
        }
    }

    /// Drops what is held (a memory cap was reached): a partial frame is skipped to its known end and reported, a
    /// hunt buffer is counted as skipped bytes.
    mutating func shed(_ out: (UInt64, ParserOutput) -> Void) {
        guard !pending.isEmpty else { return }
        switch state {
        case .payload(let header, let start):
            let remaining = Int(header.size) + 1 - pending.count
            pending = []
            state = .skip(header, start: start, remaining: remaining)
            out(
                start,
                .malformed(reason: .dropped(type: header.type), skipped: UInt64(Int(header.size) + 8)))
        case .hunting(let start, let skipped):
            let held = UInt64(pending.count)
            pending = []
            state = .hunting(start: start + held, skipped: skipped + held)
        default:
            break  // a header's few bytes: kept
        }
    }

    // MARK: - Protocol header

    private mutating func protocolHeader(_ source: UnsafeRawBufferPointer, _ i: inout Int) -> Step? {
        let magic: [UInt8] = [0x41, 0x4D, 0x51, 0x50]  // "AMQP"
        while i < source.count && pending.count < 8 {
            let byte = source[i]
            if pending.count < 4 && byte != magic[pending.count] {
                // Not a protocol header: these bytes must be frames (or something else altogether). The bytes held
                // while looking for "AMQP" are the start of the first frame header.
                state = .frameHeader
                return nil
            }
            pending.append(byte)
            offset += 1
            i += 1
        }
        guard pending.count == 8 else { return nil }
        let header = ProtocolHeader(protocolID: pending[4], major: pending[5], minor: pending[6], revision: pending[7])
        pending.removeAll(keepingCapacity: true)
        state = header.usesFrames091 ? .frameHeader : .opaque
        return Step(offset: offset - 8, output: .protocolHeader(header))
    }

    // MARK: - Frames

    /// Inlined into `next`, which calls it for every frame and almost always gets nil back (the state moves on):
    /// called, it cost 98 instructions a frame.
    @inline(__always)
    private mutating func frameHeader(_ source: UnsafeRawBufferPointer, _ i: inout Int) -> Step? {
        let start = offset - UInt64(held)
        let available = source.count - i
        let header: FrameHeader
        if held == 0 && available >= 7 {
            header = Self.readHeader(UnsafeRawBufferPointer(rebasing: source[i..<i + 7]))
            i += 7
            offset += 7
        } else {
            let n = min(7 - held, available)
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i..<i + n]))
            i += n
            offset += UInt64(n)
            guard pending.count == 7 else { return nil }
            header = pending.withUnsafeBytes { Self.readHeader($0) }
            pending.removeAll(keepingCapacity: true)
        }
        if let problem = Self.problem(with: header, maximum: maximumFrameSize) {
            // Not a frame: hunt from the byte after this one's start.
            startHunting(at: start + 1, carrying: Array(Self.headerBytes(header)[1...]))
            return Step(offset: start, output: .malformed(reason: problem, skipped: 1))
        }
        if header.type == FrameType.body.rawValue {
            state =
                header.size == 0
                ? .bodyEnd(header, start: start, damaged: false)
                : .body(header, start: start, remaining: Int(header.size), damaged: false)
        } else {
            state = .payload(header, start: start)
        }
        return nil
    }

    /// A method, header or heartbeat frame's payload and end byte are complete.
    private mutating func complete(_ header: FrameHeader, start: UInt64, end: UInt8, payload: Step.Payload) -> Step {
        state = .frameHeader
        guard end == AMQPSpec.frameEnd else {
            pending.removeAll(keepingCapacity: true)
            startHunting(at: offset - 1, carrying: [end])
            return Step(offset: start, output: .malformed(reason: .badEnd(end), skipped: offset - 1 - start))
        }
        return Step(offset: start, output: .frame(header, payload: .empty, damaged: false), payload: payload)
    }

    static func readHeader(_ b: UnsafeRawBufferPointer) -> FrameHeader {
        FrameHeader(type: b[0], channel: b.integer(at: 1), size: b.integer(at: 3))
    }

    static func headerBytes(_ h: FrameHeader) -> [UInt8] {
        [
            h.type, UInt8(h.channel >> 8), UInt8(h.channel & 0xff),
            UInt8(h.size >> 24), UInt8((h.size >> 16) & 0xff), UInt8((h.size >> 8) & 0xff), UInt8(h.size & 0xff),
        ]
    }

    static func problem(with header: FrameHeader, maximum: UInt32) -> MalformedFrame? {
        guard FrameType(rawValue: header.type) != nil else { return .unknownType(header.type) }
        if header.size > maximum { return .tooLarge(size: header.size, maximum: maximum) }
        return nil
    }

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
        state = .hunting(start: streamOffset, skipped: 0)
        pending = bytes
    }

    /// Looks for a position in `pending` where several consecutive valid frames start. Once found, the bytes from
    /// there on are read again as frames, from that offset.
    private mutating func hunt(start: UInt64, skipped: UInt64) -> Step? {
        let limit =
            negotiatedFrameMax == 0
            ? FrameLimits.huntingFrameSize : min(maximumFrameSize, FrameLimits.huntingFrameSize * 8)
        let verdict: (position: Int, sync: Bool) = pending.withUnsafeBytes { b in
            var p = 0
            while p + 7 <= b.count {
                switch Self.chain(b, from: p, limit: limit) {
                case .sync: return (p, true)
                case .needMore: return (p, false)
                case .invalid: p += 1
                }
            }
            return (max(0, b.count - 6), false)
        }
        var drop = verdict.position
        if !verdict.sync && pending.count - drop > FrameLimits.huntBufferLimit {
            drop = pending.count - FrameLimits.huntBufferLimit  // a candidate that never completes: let it go
        }
        let syncOffset = start + UInt64(drop)
        guard verdict.sync else {
            if drop > 0 { pending.removeFirst(drop) }
            state = .hunting(start: syncOffset, skipped: skipped + UInt64(drop))
            return nil
        }
        replay = Array(pending[drop...])
        pending.removeAll(keepingCapacity: true)
        offset = syncOffset  // the bytes after the boundary are read again
        state = .frameHeader
        return Step(offset: syncOffset, output: .synchronized(skipped: skipped + UInt64(drop)))
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
