// One AMQP 1.0 frame parser per direction of a connection (OASIS AMQP 1.0 part 2.3). It owns the bytes of an
// incomplete frame, returns frames as they complete, and when it meets bytes that are not a frame (or after a
// capture gap) it hunts for the next plausible frame boundary.
//
// Frame layout (2.3.1): SIZE (4, the whole frame, at least 8) DOFF (1, the header's length in 4-byte words, at
// least 2) TYPE (1: 0 AMQP, 1 SASL) type-specific (2: the channel for AMQP frames) extended header (DOFF*4-8)
// body (SIZE-DOFF*4). An empty body is an empty frame: 1.0's heartbeat (2.4.5).
// Protocol headers (2.2) are eight bytes too, "AMQP" and id/major/minor/revision: the SASL layer's (3 1 0 0) comes
// first, the AMQP one (0 1 0 0) again after the SASL outcome (5.3.2), so a header may come between frames. A
// frame's SIZE never starts with "AMQP" (0x414d5150 bytes is past any limit), so the two cannot be confused.
import AMQPScopePackets

/// An AMQP 1.0 frame header.
package struct Frame10Header: Hashable, Sendable {
    /// The whole frame's size, header included.
    package var size: UInt32
    /// The data offset, in 4-byte words.
    package var doff: UInt8
    /// 0 AMQP, 1 SASL.
    package var type: UInt8
    /// The channel (AMQP frames).
    package var channel: UInt16
}

/// The eight bytes of a protocol header after "AMQP".
package struct Header10: Hashable, Sendable {
    /// 0 AMQP, 2 TLS, 3 SASL.
    package var protocolID: UInt8
    package var major: UInt8
    package var minor: UInt8
    package var revision: UInt8
}

/// What the parser hands up, with the stream offset where it starts.
package enum Parser10Output {
    case protocolHeader(Header10)
    /// A whole frame; `body` is the bytes after the (extended) header, valid only during the call. For a large
    /// transfer whose payload is not kept, `body` is only its first bytes (`truncated`); `damaged` says a capture gap
    /// removed bytes of its payload.
    case frame(Frame10Header, body: UnsafeRawBufferPointer, truncated: Bool = false, damaged: Bool = false)
    case malformed(reason: String, skipped: UInt64)
    case synchronized(skipped: UInt64)
}

/// Limits, each with where it comes from.
package enum Frame10Limits {
    /// Part 2.3.1: a frame is at least its 8-byte header.
    package static let minimumFrameSize: UInt32 = 8
    /// No frame larger than this is buffered whatever was advertised (max-frame-size may be 4 GiB - 1): this only
    /// bounds hostile input. Azure Service Bus advertises 256 KiB, RabbitMQ 128 KiB, Proton 32 KiB to 4 GiB.
    package static let absoluteMaximumFrameSize: UInt32 = 16 * 1024 * 1024
    /// Frame size believed while hunting for a boundary.
    package static let huntingFrameSize: UInt32 = 1024 * 1024
    /// Bytes kept while hunting.
    package static let huntBufferLimit = 2 * 1024 * 1024 + 64
    /// Of a transfer frame longer than this whose payload is not kept, only this many bytes are buffered (the
    /// performative, which real peers keep well under it); the rest is counted, like a 0-9-1 body.
    package static let transferPrefix = 1024
}

package struct AMQP10FrameParser {
    /// Where the parser is in the stream, with what it knows of the frame in flight.
    package enum State {
        /// Collecting eight bytes: a frame header or a protocol header; they start `pending.count` bytes back.
        case header
        /// Collecting a frame's remaining bytes; `whole` once it is known not to be a transfer read by its prefix.
        case body(Frame10Header, start: UInt64, whole: Bool)
        /// A large transfer's prefix (its performative) is in `pending`: counting the payload to the frame's end.
        case tail(Frame10Header, start: UInt64, remaining: Int, damaged: Bool)
        /// A frame lost in a capture gap: skipping its remaining bytes.
        case skip(Frame10Header, start: UInt64, remaining: Int)
        /// Looking for a frame boundary in `pending`, which starts at `start`.
        case hunting(start: UInt64, skipped: UInt64)
        /// Not decoded (TLS negotiated in band with "AMQP 2 1 0 0"): bytes are only counted.
        case opaque
    }

    private struct Step {
        enum Payload {
            case none
            case source(Range<Int>)
            case pending
        }
        var offset: UInt64
        var output: Parser10Output
        var payload = Payload.none
    }

    package private(set) var state: State
    package private(set) var pending: [UInt8] = []
    private var replay: [UInt8] = []
    /// Where the last gap ended when a hunt began there: a segment's first byte.
    private var gapBoundary: UInt64?
    /// Stream offset of the next byte read.
    package private(set) var offset: UInt64 = 0
    /// Large transfers are read by their prefix (their payload is not kept).
    package let streamTransfers: Bool

    /// A frame over the peer's advertised max-frame-size is still read (the decoder reports it as a violation): the
    /// parser refuses only frames over `Frame10Limits.absoluteMaximumFrameSize`.
    package init(hunting: Bool = false, offset: UInt64 = 0, streamTransfers: Bool = true) {
        state = hunting ? .hunting(start: offset, skipped: 0) : .header
        self.offset = offset
        self.streamTransfers = streamTransfers
    }

    package var isHunting: Bool {
        if case .hunting = state { return true }
        return false
    }

    /// Where the frame being read started, when the stream is inside one.
    package var unfinishedFrameStart: UInt64? {
        switch state {
        case .header: pending.isEmpty ? nil : offset - UInt64(pending.count)
        case .body(_, let start, _), .skip(_, let start, _), .tail(_, let start, _, _): start
        case .hunting, .opaque: nil
        }
    }

    package mutating func stop() {
        state = .opaque
        pending = []
        replay = []
    }

    /// Reads `input`, handing each output to `out`.
    package mutating func feed(_ input: UnsafeRawBufferPointer, _ out: (UInt64, Parser10Output) -> Void) {
        var cursor = 0
        read(input, &cursor, out)
        readReplay(out)
    }

    /// Bytes after a boundary a hunt found, read again (a hunt among them may leave more).
    private mutating func readReplay(_ out: (UInt64, Parser10Output) -> Void) {
        while !replay.isEmpty {
            let bytes = replay
            replay = []
            var position = 0
            bytes.withUnsafeBytes { read($0, &position, out) }
        }
    }

    private mutating func read(
        _ source: UnsafeRawBufferPointer, _ cursor: inout Int, _ out: (UInt64, Parser10Output) -> Void
    ) {
        while let step = next(source, &cursor) {
            switch step.payload {
            case .none:
                out(step.offset, step.output)
            case .source(let range):
                guard case .frame(let header, _, _, _) = step.output else { continue }
                out(step.offset, .frame(header, body: UnsafeRawBufferPointer(rebasing: source[range])))
            case .pending:
                guard case .frame(let header, _, let truncated, let damaged) = step.output else { continue }
                pending.withUnsafeBytes { raw in
                    let skip = min(Int(header.doff) * 4 - 8, raw.count)
                    out(
                        step.offset,
                        .frame(
                            header, body: UnsafeRawBufferPointer(rebasing: raw[skip...]), truncated: truncated,
                            damaged: damaged))
                }
                pending.removeAll(keepingCapacity: true)
            }
        }
    }

    private mutating func next(_ source: UnsafeRawBufferPointer, _ i: inout Int) -> Step? {
        while i < source.count {
            let available = source.count - i
            switch state {
            case .opaque:
                offset += UInt64(available)
                i = source.count
            case .hunting(let start, let skipped):
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i...]))
                offset += UInt64(available)
                i = source.count
                return hunt(start: start, skipped: skipped)
            case .header:
                if let step = header(source, &i) { return step }
            case .body(let header, let start, let whole):
                let needed = Int(header.size) - 8
                if pending.isEmpty && available >= needed {
                    let from = i + Int(header.doff) * 4 - 8
                    i += needed
                    offset += UInt64(needed)
                    state = .header
                    return Step(
                        offset: start, output: .frame(header, body: UnsafeRawBufferPointer(start: nil, count: 0)),
                        payload: .source(from..<i))
                }
                // A large frame whose payload is not kept: its first bytes tell whether it is a transfer.
                let prefix = Int(header.doff) * 4 - 8 + Frame10Limits.transferPrefix
                let cap = !whole && streamTransfers && needed > prefix ? prefix : needed
                let n = min(cap - pending.count, available)
                if pending.capacity < cap { pending.reserveCapacity(cap) }
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i..<i + n]))
                i += n
                offset += UInt64(n)
                if pending.count == needed {
                    state = .header
                    return Step(
                        offset: start, output: .frame(header, body: UnsafeRawBufferPointer(start: nil, count: 0)),
                        payload: .pending)
                }
                if pending.count == cap {
                    state =
                        Self.isTransfer(pending, header)
                        ? .tail(header, start: start, remaining: needed - cap, damaged: false)
                        : .body(header, start: start, whole: true)
                }
            case .tail(let header, let start, let remaining, let damaged):
                let n = min(remaining, available)
                i += n
                offset += UInt64(n)
                if n < remaining {
                    state = .tail(header, start: start, remaining: remaining - n, damaged: damaged)
                } else {
                    state = .header
                    return Step(
                        offset: start,
                        output: .frame(
                            header, body: UnsafeRawBufferPointer(start: nil, count: 0), truncated: true,
                            damaged: damaged),
                        payload: .pending)
                }
            case .skip(let header, let start, let remaining):
                // The rest of a frame already handed up (cut by a gap) or dropped (memory cap): passed over.
                let n = min(remaining, available)
                i += n
                offset += UInt64(n)
                state = n < remaining ? .skip(header, start: start, remaining: remaining - n) : .header
            }
        }
        return nil
    }

    /// Bytes that never arrived (lost, or cut off by the capture's snap length). A gap is the capture's fault, never
    /// the protocol's: the frame in flight is handed up with what was captured of it (`damaged`, read as far as it
    /// goes), and its size carries the boundary across the missing bytes. When the gap runs past the frame's end the
    /// hunt starts at the gap's end, where a segment (and usually a frame) began.
    package mutating func gap(_ length: UInt64, _ out: (UInt64, Parser10Output) -> Void) {
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
        case .tail(let header, let start, let remaining, _) where length < UInt64(remaining):
            // Bytes of a payload that is not kept: the performative in the prefix still reads.
            state = .tail(header, start: start, remaining: remaining - Int(length), damaged: true)
        case .body(let header, let start, _)
        where streamTransfers && length < UInt64(Int(header.size) - 8 - pending.count)
            && Self.isTransfer(pending, header):
            // A transfer whose payload is not kept: what was read of it (its performative) still reads.
            state = .tail(
                header, start: start, remaining: Int(header.size) - 8 - pending.count - Int(length), damaged: true)
        case .body(let header, let start, _), .tail(let header, let start, _, _):
            // The frame's head, as far as it was captured; the decoder reads what it can of it.
            let remaining = UInt64(Int(header.size)) - (offset - start)
            handUpCut(header, start: start, out)
            if length < remaining {
                state = .skip(header, start: start, remaining: Int(remaining - length))
            } else {
                resume(afterFrameEndingAt: start + UInt64(header.size), gapEnd: end)
            }
        case .skip(let header, let start, let remaining) where length < UInt64(remaining):
            state = .skip(header, start: start, remaining: remaining - Int(length))
        case .skip(let header, let start, _):
            resume(afterFrameEndingAt: start + UInt64(header.size), gapEnd: end)
        case .header:
            // A header's first bytes, or none: the next boundary is unknown.
            pending.removeAll(keepingCapacity: true)
            state = .hunting(start: end, skipped: 0)
        }
        if case .hunting(let start, _) = state, start == end { gapBoundary = end }
    }

    /// A frame cut by a gap, handed up with its captured bytes (after the extended header).
    private mutating func handUpCut(_ header: Frame10Header, start: UInt64, _ out: (UInt64, Parser10Output) -> Void) {
        pending.withUnsafeBytes { raw in
            let skip = min(Int(header.doff) * 4 - 8, raw.count)
            out(
                start,
                .frame(header, body: UnsafeRawBufferPointer(rebasing: raw[skip...]), truncated: true, damaged: true))
        }
        pending.removeAll(keepingCapacity: true)
    }

    /// After a gap that covered the rest of a frame: in step when it ended at the frame's end, else hunting.
    private mutating func resume(afterFrameEndingAt frameEnd: UInt64, gapEnd: UInt64) {
        if gapEnd == frameEnd {
            state = .header
        } else {
            pending.removeAll(keepingCapacity: true)
            state = .hunting(start: gapEnd, skipped: 0)
        }
    }

    /// A hunt that began at a gap's end (where a segment began): when what was captured there starts with a plausible
    /// frame header, the boundary is taken and the bytes are read as frames (a snap length that keeps only each
    /// segment's first bytes leaves no room for the chain of frames a hunt otherwise asks for).
    private mutating func resumeAtGapBoundary(_ out: (UInt64, Parser10Output) -> Void) {
        guard case .hunting(let start, let skipped) = state, start == gapBoundary, pending.count >= 8 else { return }
        let plausible = pending.withUnsafeBytes { b in
            Self.chain(b, from: 0, limit: Frame10Limits.huntingFrameSize) != .invalid && Self.strongHead(b)
        }
        guard plausible else { return }
        let held = pending
        pending = []
        out(start, .synchronized(skipped: skipped))
        state = .header
        offset = start
        replay = held
        readReplay(out)
    }

    /// The bytes start with a frame whose performative descriptor was captured, or with an empty frame on channel 0.
    static func strongHead(_ b: UnsafeRawBufferPointer) -> Bool {
        let size: UInt32 = b.integer(at: 0)
        if size == 8 { return b[6] == 0 && b[7] == 0 }
        return b.count >= 11 && b[8] == 0x00 && b[9] == 0x53
    }

    /// Drops what is held (a memory cap was reached).
    package mutating func shed(_ out: (UInt64, Parser10Output) -> Void) {
        guard !pending.isEmpty else { return }
        switch state {
        case .body(let header, let start, _):
            let remaining = Int(header.size) - 8 - pending.count
            pending = []
            state = .skip(header, start: start, remaining: remaining)
            out(
                start,
                .malformed(
                    reason: "frame dropped: the decoders' memory cap was reached", skipped: UInt64(header.size)))
        case .hunting(let start, let skipped):
            let held = UInt64(pending.count)
            pending = []
            state = .hunting(start: start + held, skipped: skipped + held)
        default:
            break
        }
    }

    // MARK: - Headers

    private mutating func header(_ source: UnsafeRawBufferPointer, _ i: inout Int) -> Step? {
        let start = offset - UInt64(pending.count)
        let available = source.count - i
        let word: UInt64
        if pending.isEmpty && available >= 8 {
            word = source.integer(at: i, as: UInt64.self)
            i += 8
            offset += 8
        } else {
            let n = min(8 - pending.count, available)
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[i..<i + n]))
            i += n
            offset += UInt64(n)
            guard pending.count == 8 else { return nil }
            word = pending.withUnsafeBytes { $0.integer(at: 0, as: UInt64.self) }
            pending.removeAll(keepingCapacity: true)
        }
        if word >> 32 == Self.magic {
            let header = Header10(
                protocolID: UInt8(truncatingIfNeeded: word >> 24), major: UInt8(truncatingIfNeeded: word >> 16),
                minor: UInt8(truncatingIfNeeded: word >> 8), revision: UInt8(truncatingIfNeeded: word))
            if header.protocolID == 2 { state = .opaque }  // TLS follows, negotiated in band: not read
            return Step(offset: start, output: .protocolHeader(header))
        }
        let header = Frame10Header(
            size: UInt32(truncatingIfNeeded: word >> 32), doff: UInt8(truncatingIfNeeded: word >> 24),
            type: UInt8(truncatingIfNeeded: word >> 16), channel: UInt16(truncatingIfNeeded: word))
        if let problem = Self.problem(with: header, maximum: Frame10Limits.absoluteMaximumFrameSize) {
            startHunting(at: start + 1, carrying: Self.bytes(of: word).dropFirst())
            return Step(offset: start, output: .malformed(reason: problem, skipped: 1))
        }
        if header.size == 8 {
            return Step(offset: start, output: .frame(header, body: UnsafeRawBufferPointer(start: nil, count: 0)))
        }
        state = .body(header, start: start, whole: false)
        return nil
    }

    /// Whether the bytes read of a frame (after its 8-byte header) start a transfer performative.
    static func isTransfer(_ bytes: [UInt8], _ header: Frame10Header) -> Bool {
        let body = Int(header.doff) * 4 - 8
        return bytes.count >= body + 3 && bytes[body] == 0x00 && bytes[body + 1] == 0x53 && bytes[body + 2] == 0x14
    }

    /// "AMQP" as a big-endian word.
    static let magic: UInt64 = 0x414D_5150

    static func bytes(of word: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: word >> (56 - 8 * UInt64($0))) }
    }

    /// What makes a frame header impossible (part 2.3.1: a size of at least 8 bytes, a data offset of at least 2
    /// words and within the frame, type 0 or 1), or nil.
    enum Defect { case sizeUnderMinimum, offsetUnderTwo, offsetPastFrame, unknownType, sizeOverMaximum }

    /// The header's defect, without words: hunting asks at every byte it tries, and words are wanted only for a
    /// frame reported as malformed (on a capture joined in the middle of a thousand 0-9-1 connections, formatting
    /// them had taken two thirds of the reading thread's instructions).
    static func defect(of header: Frame10Header, maximum: UInt32) -> Defect? {
        if header.size < Frame10Limits.minimumFrameSize { return .sizeUnderMinimum }
        if header.doff < 2 { return .offsetUnderTwo }
        if UInt32(header.doff) * 4 > header.size { return .offsetPastFrame }
        if header.type > 1 { return .unknownType }
        if header.size > maximum { return .sizeOverMaximum }
        return nil
    }

    static func problem(with header: Frame10Header, maximum: UInt32) -> String? {
        switch defect(of: header, maximum: maximum) {
        case nil: return nil
        case .sizeUnderMinimum: return "frame size \(header.size) is under 8 bytes"
        case .offsetUnderTwo: return "data offset \(header.doff) is under 2 (the header is 8 bytes)"
        case .offsetPastFrame:
            return "data offset \(header.doff) (\(Int(header.doff) * 4) bytes) is past the frame's \(header.size) bytes"
        case .unknownType: return "unknown frame type \(header.type)"
        case .sizeOverMaximum: return "frame size \(header.size) exceeds the \(maximum)-byte limit"
        }
    }

    // MARK: - Hunting for a frame boundary

    mutating func startHunting<C: Collection>(at streamOffset: UInt64, carrying bytes: C) where C.Element == UInt8 {
        state = .hunting(start: streamOffset, skipped: 0)
        pending.removeAll(keepingCapacity: true)
        pending.append(contentsOf: bytes)
    }

    private mutating func hunt(start: UInt64, skipped: UInt64) -> Step? {
        let limit = Frame10Limits.huntingFrameSize
        let verdict: (position: Int, sync: Bool) = pending.withUnsafeBytes { b in
            var p = 0
            while p + 8 <= b.count {
                switch Self.chain(b, from: p, limit: limit) {
                case .sync: return (p, true)
                case .needMore: return (p, false)
                case .invalid: p += 1
                }
            }
            return (max(0, b.count - 7), false)
        }
        var drop = verdict.position
        if !verdict.sync && pending.count - drop > Frame10Limits.huntBufferLimit {
            drop = pending.count - Frame10Limits.huntBufferLimit
        }
        let syncOffset = start + UInt64(drop)
        guard verdict.sync else {
            if drop > 0 { pending.removeFirst(drop) }
            state = .hunting(start: syncOffset, skipped: skipped + UInt64(drop))
            return nil
        }
        replay = Array(pending[drop...])
        pending.removeAll(keepingCapacity: true)
        offset = syncOffset
        state = .header
        return Step(offset: syncOffset, output: .synchronized(skipped: skipped + UInt64(drop)))
    }

    enum Chain { case sync, needMore, invalid }

    /// Validates consecutive frames at `start`: a protocol header, or frame headers whose bodies start with a
    /// performative's descriptor (or are empty). Two in a row, or one performative that ends the bytes held, prove a
    /// boundary.
    static func chain(_ b: UnsafeRawBufferPointer, from start: Int, limit: UInt32) -> Chain {
        var q = start
        var frames = 0
        var strong = false
        while frames < 3 {
            if q + 8 > b.count { return frames >= 2 || (frames == 1 && strong && q == b.count) ? .sync : .needMore }
            let word: UInt64 = b.integer(at: q)
            if word >> 32 == magic {
                let id = UInt8(truncatingIfNeeded: word >> 24)
                guard [0, 2, 3].contains(id), word & 0xff_ffff == 0x01_0000 else { return .invalid }
                frames += 1
                strong = strong || frames == 1
                q += 8
                continue
            }
            let header = Frame10Header(
                size: UInt32(truncatingIfNeeded: word >> 32), doff: UInt8(truncatingIfNeeded: word >> 24),
                type: UInt8(truncatingIfNeeded: word >> 16), channel: UInt16(truncatingIfNeeded: word))
            // Every implementation seen uses no extended header (DOFF 2): hunting asks for it.
            guard defect(of: header, maximum: limit) == nil, header.doff == 2 else { return .invalid }
            if header.size > 8 {
                let body = q + Int(header.doff) * 4
                if body + 3 <= b.count {
                    guard b[body] == 0x00 else { return .invalid }
                    let code = b[body + 2]
                    switch b[body + 1] {
                    case 0x53:
                        let valid = header.type == 0 ? (0x10...0x18).contains(code) : (0x40...0x44).contains(code)
                        guard valid else { return .invalid }
                    case 0xa3: break  // a symbolic descriptor
                    default: return .invalid
                    }
                    strong = strong || frames == 0
                }
            } else if header.type != 0 || header.channel != 0 && frames == 0 {
                return .invalid  // empty frames are AMQP frames; alone on channel 0 they are the usual heartbeat
            }
            let end = q + Int(header.size)
            if end > b.count { return frames >= 2 || (frames == 1 && strong) ? .sync : .needMore }
            frames += 1
            q = end
        }
        return .sync
    }
}
