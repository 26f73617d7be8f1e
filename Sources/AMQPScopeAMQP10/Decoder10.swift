// Decodes both directions of an AMQP 1.0 connection once its protocol header has been seen: every frame's
// performative (SASL included), multi-frame transfers joined into messages, max-frame-size followed from open.
import AMQPScopePackets

/// One decoded AMQP 1.0 frame.
public struct AMQP10Frame: Hashable, Sendable {
    /// 0 AMQP, 1 SASL.
    public var type: UInt8
    /// The channel (AMQP frames).
    public var channel: UInt16
    /// The whole frame's size.
    public var size: UInt32
    /// The performative; nil for an empty frame (1.0's heartbeat).
    public var performative: Performative?

    /// "open", "sasl-init", or "empty" for an empty frame.
    public var name: String { performative?.name ?? "empty" }
}

/// One section of a message (part 3.2): header, annotations, properties, application properties, the body
/// sections, the footer.
public struct AMQP10Section: Hashable, Sendable {
    /// The section's name in the specification: "properties", "data", "amqp-value", ...
    public var name: String
    /// Its value.
    public var value: AMQP10Value
}

/// A delivery assembled from its transfer frames.
public struct AMQP10Message: Hashable, Sendable {
    /// The session's channel.
    public var channel: UInt16
    /// The link handle.
    public var handle: UInt32
    /// The delivery id from its first transfer.
    public var deliveryID: UInt32?
    /// Sent settled.
    public var settled: Bool
    /// The sender aborted it.
    public var aborted: Bool
    /// Transfer frames it came in.
    public var frames: Int
    /// Bytes of its sections.
    public var payloadBytes: UInt64
    /// Bytes lost in capture gaps, or its first frames were not seen.
    public var incomplete: Bool
    /// Its sections, when bodies are kept.
    public var sections: [AMQP10Section]
    /// Its encoded sections, when bodies are kept (at most `maximumKeptBodyBytes`).
    public var body: [UInt8]?
}

/// A protocol header's fields (after "AMQP").
public struct AMQP10HeaderBytes: Hashable, Sendable {
    /// 0 AMQP, 2 TLS, 3 SASL.
    public var protocolID: UInt8
    /// The major version.
    public var major: UInt8
    /// The minor version.
    public var minor: UInt8
    /// The revision.
    public var revision: UInt8
}

package enum AMQP10EventKind {
    case protocolHeader(AMQP10HeaderBytes)
    case frame(AMQP10Frame)
    case message(AMQP10Message)
    case malformed(reason: String, skipped: UInt64)
    case violation(String)
    case synchronized(skipped: UInt64)
}

package struct AMQP10Event {
    package var direction: Direction
    package var time: Timestamp
    package var packetNumber: Int
    package var offset: UInt64
    package var kind: AMQP10EventKind
}

package protocol AMQP10Sink {
    /// The event is the sink's to keep: it is moved in, not copied.
    mutating func consume(_ event: consuming AMQP10Event)
}

/// What the 1.0 decoder keeps and shows.
package struct AMQP10Configuration: Hashable, Sendable {
    package var keepBodies = false
    package var maximumKeptBodyBytes = 64 * 1024
    package var showCredentials = false
    package init() {}
}

package struct AMQP10Decoder {
    package let configuration: AMQP10Configuration
    var parsers: PerDirection<AMQP10FrameParser>
    /// Deliveries whose last transfer has not come yet, per direction.
    var deliveries = PerDirection<[PendingDelivery]>(repeating: [])
    /// The max-frame-size each direction's sender advertised in its open (0: none yet, or no limit): it bounds the
    /// frames of the other direction.
    var advertisedMaxFrameSize = PerDirection<UInt32>(repeating: 0)
    var time = Timestamp(nanoseconds: 0)
    var packetNumber = 0

    struct PendingDelivery {
        var channel: UInt16
        var handle: UInt32
        var deliveryID: UInt32?
        var settled: Bool
        var frames = 0
        var bytes: UInt64 = 0
        var body: [UInt8]?
        var incomplete: Bool
    }

    /// Deliveries in flight at once, per direction (bounded by handle-max in principle; this bounds hostile input).
    package static let maximumPendingDeliveries = 2048

    /// A decoder whose `direction` has already read `consumed` bytes (its protocol header), and whose other direction
    /// starts at offset 0; `hunting` when the connection was joined mid-stream.
    package init(
        configuration: AMQP10Configuration, consumed: PerDirection<UInt64> = PerDirection(repeating: 0),
        hunting: Bool = false
    ) {
        self.configuration = configuration
        parsers = PerDirection(repeating: AMQP10FrameParser())
        for d in Direction.allCases {
            parsers[d] = AMQP10FrameParser(
                hunting: hunting, offset: consumed[d], streamTransfers: !configuration.keepBodies)
        }
    }

    /// Runs a direction's parser with the decoder free to handle its outputs: the parser is taken out while it
    /// runs, so its buffer is never copied.
    private mutating func withParser(
        _ direction: Direction, _ body: (inout AMQP10FrameParser, inout AMQP10Decoder) -> Void
    ) {
        var parser = parsers[direction]
        parsers[direction] = AMQP10FrameParser()
        body(&parser, &self)
        parsers[direction] = parser
    }

    /// Whether a direction is still looking for a frame boundary.
    package func isHunting(_ direction: Direction) -> Bool { parsers[direction].isHunting }

    /// Bytes this decoder holds. A mutating getter, read in place (see ConnectionDecoder.bufferedBytes).
    package var bufferedBytes: Int {
        mutating get {
            var total = parsers[.clientToServer].pending.count + parsers[.serverToClient].pending.count
            for delivery in deliveries[.clientToServer] { total += delivery.body?.count ?? 0 }
            for delivery in deliveries[.serverToClient] { total += delivery.body?.count ?? 0 }
            return total
        }
    }

    package mutating func data<S: AMQP10Sink>(
        _ bytes: UnsafeRawBufferPointer, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        withParser(direction) { parser, decoder in
            parser.feed(bytes) { offset, output in
                decoder.handle(output, offset: offset, direction: direction, into: &sink)
            }
        }
    }

    package mutating func gap<S: AMQP10Sink>(
        _ length: UInt64, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        for i in deliveries[direction].indices { deliveries[direction][i].incomplete = true }
        withParser(direction) { parser, decoder in
            parser.gap(length) { offset, output in
                decoder.handle(output, offset: offset, direction: direction, into: &sink)
            }
        }
    }

    package mutating func shed<S: AMQP10Sink>(time: Timestamp, packetNumber: Int, into sink: inout S) {
        self.time = time
        self.packetNumber = packetNumber
        for direction in Direction.allCases {
            withParser(direction) { parser, decoder in
                parser.shed { offset, output in
                    decoder.handle(output, offset: offset, direction: direction, into: &sink)
                }
            }
            for i in deliveries[direction].indices where deliveries[direction][i].body != nil {
                deliveries[direction][i].body = []
                deliveries[direction][i].incomplete = true
            }
        }
    }

    /// The stream ended: says so if a frame was left half-read.
    package mutating func finish<S: AMQP10Sink>(
        direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        guard let start = parsers[direction].unfinishedFrameStart else { return }
        emit(
            direction, start,
            .malformed(reason: "stream ended inside a frame", skipped: parsers[direction].offset - start),
            into: &sink)
    }

    private func emit<S: AMQP10Sink>(
        _ direction: Direction, _ offset: UInt64, _ kind: consuming AMQP10EventKind, into sink: inout S
    ) {
        sink.consume(
            AMQP10Event(direction: direction, time: time, packetNumber: packetNumber, offset: offset, kind: kind))
    }

    private mutating func handle<S: AMQP10Sink>(
        _ output: Parser10Output, offset: UInt64, direction: Direction, into sink: inout S
    ) {
        switch output {
        case .protocolHeader(let h):
            emit(
                direction, offset,
                .protocolHeader(
                    AMQP10HeaderBytes(protocolID: h.protocolID, major: h.major, minor: h.minor, revision: h.revision)),
                into: &sink)
        case .frame(let header, let body, let truncated, let damaged):
            decodeFrame(
                header, body, truncated: truncated, damaged: damaged, offset: offset, direction: direction,
                into: &sink)
        case .malformed(let reason, let skipped):
            emit(direction, offset, .malformed(reason: reason, skipped: skipped), into: &sink)
        case .synchronized(let skipped):
            for i in deliveries[direction].indices { deliveries[direction][i].incomplete = true }
            emit(direction, offset, .synchronized(skipped: skipped), into: &sink)
        }
    }

    private mutating func decodeFrame<S: AMQP10Sink>(
        _ header: Frame10Header, _ body: UnsafeRawBufferPointer, truncated: Bool = false, damaged: Bool = false,
        offset: UInt64, direction: Direction, into sink: inout S
    ) {
        let limit = advertisedMaxFrameSize[direction.reversed]
        if limit != 0 && header.size > limit {
            emit(
                direction, offset,
                .violation(
                    "frame of \(header.size) bytes exceeds the max-frame-size \(limit) the \(direction.receiver) "
                        + "advertised in open"),
                into: &sink)
        }
        // A frame the capture cut before any of its body: nothing to read (capture-incomplete tells the gap).
        if damaged && truncated && body.isEmpty && Int(header.size) > Int(header.doff) * 4 { return }
        guard !body.isEmpty else {
            emit(
                direction, offset,
                .frame(AMQP10Frame(type: header.type, channel: header.channel, size: header.size, performative: nil)),
                into: &sink)
            return
        }
        var reader = AMQP10Reader(body)
        var performative: Performative
        do throws(AMQP10DecodeError) {
            performative = try Performative.decode(
                &reader, frameType: header.type, showCredentials: configuration.showCredentials)
            if case .transfer(var transfer) = performative {
                // A truncated body is the frame's first bytes: the payload runs to the frame's end.
                transfer.payloadLength = Int(header.size) - Int(header.doff) * 4 - reader.index
                performative = .transfer(transfer)
            }
        } catch {
            // Cut by the capture before its performative ended: the capture's fault, not the peer's.
            if damaged { return }
            let kind = header.type == 1 ? "SASL frame" : "frame on channel \(header.channel)"
            let reason =
                truncated
                ? "transfer on channel \(header.channel) whose performative is longer than the bytes read of it"
                    + (damaged ? " before a capture gap" : " (\(Frame10Limits.transferPrefix))") + ": \(error.reason)"
                : "\(kind): \(error.reason)"
            emit(direction, offset, .malformed(reason: reason, skipped: 0), into: &sink)
            return
        }
        emit(
            direction, offset,
            .frame(
                AMQP10Frame(type: header.type, channel: header.channel, size: header.size, performative: performative)),
            into: &sink)
        switch performative {
        case .open(let open):
            // The open's max-frame-size bounds what its receiver may send back.
            advertisedMaxFrameSize[direction] = open.maxFrameSize ?? 0
        case .transfer(let transfer):
            transferred(
                transfer, channel: header.channel,
                payload: UnsafeRawBufferPointer(rebasing: body[min(reader.index, body.count)...]), damaged: damaged,
                offset: offset, direction: direction, into: &sink)
        case .detach(let detach):
            deliveries[direction].removeAll { $0.channel == header.channel && $0.handle == detach.handle }
        case .end:
            deliveries[direction].removeAll { $0.channel == header.channel }
        default:
            break
        }
    }

    private mutating func transferred<S: AMQP10Sink>(
        _ transfer: Transfer, channel: UInt16, payload: UnsafeRawBufferPointer, damaged: Bool, offset: UInt64,
        direction: Direction, into sink: inout S
    ) {
        var i = deliveries[direction].firstIndex { $0.channel == channel && $0.handle == transfer.handle }
        if let j = i, transfer.deliveryID != nil, let pendingID = deliveries[direction][j].deliveryID,
            pendingID != transfer.deliveryID
        {
            emit(
                direction, offset,
                .violation(
                    "transfer of delivery \(transfer.deliveryID!) on channel \(channel) handle \(transfer.handle) "
                        + "before delivery \(pendingID) was complete"),
                into: &sink)
            deliveries[direction].remove(at: j)
            i = nil
        }
        if i == nil {
            guard deliveries[direction].count < Self.maximumPendingDeliveries else { return }
            deliveries[direction].append(
                PendingDelivery(
                    channel: channel, handle: transfer.handle, deliveryID: transfer.deliveryID,
                    settled: transfer.settled ?? false, body: configuration.keepBodies ? [] : nil,
                    // A continuation frame with no delivery before it: the capture missed the delivery's start.
                    incomplete: transfer.deliveryID == nil))
            i = deliveries[direction].count - 1
        }
        let j = i!
        deliveries[direction][j].frames += 1
        deliveries[direction][j].bytes += UInt64(transfer.payloadLength)
        if damaged { deliveries[direction][j].incomplete = true }
        if transfer.settled == true { deliveries[direction][j].settled = true }
        if deliveries[direction][j].body != nil {
            let room = configuration.maximumKeptBodyBytes - deliveries[direction][j].body!.count
            if room > 0 { deliveries[direction][j].body!.append(contentsOf: payload.prefix(room)) }
        }
        guard !transfer.more || transfer.aborted else { return }
        let done = deliveries[direction].remove(at: j)
        var sections: [AMQP10Section] = []
        if let body = done.body, !transfer.aborted {
            body.withUnsafeBytes { raw in sections = Self.sections(raw) }
        }
        emit(
            direction, offset,
            .message(
                AMQP10Message(
                    channel: channel, handle: transfer.handle, deliveryID: done.deliveryID, settled: done.settled,
                    aborted: transfer.aborted, frames: done.frames, payloadBytes: done.bytes,
                    incomplete: done.incomplete, sections: sections, body: done.body)),
            into: &sink)
    }

    /// Sections shown at most per message.
    static let maximumSections = 64

    /// A message's sections, each a described value, as far as they can be read.
    package static func sections(_ raw: UnsafeRawBufferPointer) -> [AMQP10Section] {
        var reader = AMQP10Reader(raw)
        var out: [AMQP10Section] = []
        while !reader.isAtEnd && out.count < maximumSections {
            guard let value = try? reader.value(), case .described(let descriptor, let inner) = value else { break }
            let name =
                descriptor.unsigned.flatMap { AMQP10Descriptor(rawValue: $0)?.name } ?? descriptor.text ?? "section"
            out.append(AMQP10Section(name: name, value: inner))
        }
        return out
    }
}
