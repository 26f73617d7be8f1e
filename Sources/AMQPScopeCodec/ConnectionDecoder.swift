// Decodes both directions of one TCP connection: decides whether it is AMQP (by its protocol header on any port,
// or by frame sync on the AMQP ports), decodes every frame, follows frame_max from Tune/Tune-Ok, assembles
// messages from content headers and bodies, and redacts credentials.
import AMQPScopePackets

/// One decoded frame.
public struct Frame: Hashable, Sendable {
    /// What a frame carried.
    public enum Content: Hashable, Sendable {
        case method(Method)
        case header(ContentHeader)
        case body(length: Int)
        case heartbeat
    }
    /// The frame type octet (1 method, 2 header, 3 body, 8 heartbeat).
    public var type: UInt8
    /// The AMQP channel.
    public var channel: UInt16
    /// The payload size from the frame header.
    public var size: UInt32
    /// What it carried.
    public var content: Content
    /// The capture cut it short: its arguments or properties past the captured bytes are unknown (strings end in
    /// "…", tables cut are empty, numbers cut read as 0).
    public var cut = false
}

/// A message assembled from a content-carrying method, its content header and its body frames.
public struct Message: Hashable, Sendable {
    /// The AMQP channel.
    public var channel: UInt16
    /// The method that carried it (basic.publish, basic.deliver, ...).
    public var method: Method
    /// Its content properties.
    public var properties: BasicProperties
    /// The body size its content header declared.
    public var bodySize: UInt64
    /// Body frames it came in.
    public var bodyFrames: Int
    /// Kept only when asked (`keepBodies`), and then at most `maximumKeptBodyBytes`.
    public var body: [UInt8]?
    /// Bytes of the body lost in capture gaps.
    public var incomplete: Bool
    /// A digest of its message-id property (known even when properties are not decoded).
    public var messageIDDigest: UInt64? = nil
    /// Its message-id's first 15 bytes.
    public var messageIDPrefix: MessageIDPrefix? = nil
    /// The capture cut its method short: arguments past the captured bytes (a delivery tag after a long consumer
    /// tag, say) are unknown.
    public var methodCut = false
}

/// What the codec decided a connection carries.
public enum Verdict: Hashable, Sendable {
    case undetermined
    case amqp(ProtocolHeader.Version)  // a 0-8/0-9/0-9-1 header was seen
    case amqpBySync  // no header seen: frames found by sync on an AMQP port
    case amqp10(ProtocolHeader.Version)  // AMQP 1.0: decoded by the 1.0 codec, which takes over the connection
    case notAMQP(String)
    /// TLS that was not decrypted; on an AMQP port (5671, or one given with --port) it is taken to carry AMQP.
    case encrypted(onAMQPPort: Bool)

    /// Its AMQP frames are 0-8/0-9/0-9-1 frames, decoded by this codec.
    public var isAMQP091: Bool {
        switch self {
        case .amqp(let version): version.usesFrames091
        case .amqpBySync: true
        default: false
        }
    }

    /// It carries AMQP of any version (encrypted on an AMQP port included).
    public var isAMQP: Bool {
        switch self {
        case .amqp, .amqpBySync, .amqp10: true
        case .encrypted(let onAMQPPort): onAMQPPort
        case .undetermined, .notAMQP: false
        }
    }
}

package enum CodecEventKind {
    case protocolHeader(ProtocolHeader)
    case frame(Frame)
    case message(Message)
    /// A message as the flow follows it, instead of `message` when the sink takes these (`takesFlowMessages`).
    case flowMessage(FlowMessage)
    /// Bytes that broke a rule; `skipped` bytes were passed over (the parser resynchronises after them).
    case malformed(reason: String, skipped: UInt64)
    /// A rule broken by a frame that was still decoded (frame_max exceeded, heartbeat on a channel, ...).
    case violation(String)
    /// A frame boundary was found after joining mid-stream or after a gap, past `skipped` bytes.
    case synchronized(skipped: UInt64)
    case verdict(Verdict)
}

package struct CodecEvent {
    package var direction: Direction
    /// The time of the packet that completed it.
    package var time: Timestamp
    package var packetNumber: Int
    package var offset: UInt64  // stream offset where it starts
    package var kind: CodecEventKind
}

package protocol CodecSink {
    /// The event is the sink's to keep: it is moved in, not copied (an event holds a frame or a message).
    mutating func consume(_ event: consuming CodecEvent)
    /// A content-header, body or heartbeat frame, or a routine method frame, offered before its event is made: true
    /// when the sink counts it and wants no event (most frames are these, and an event is large); false, and the
    /// event follows.
    mutating func count(_ frame: CountedFrame, direction: Direction, time: Timestamp, packetNumber: Int) -> Bool
    /// True when the sink keeps no messages, only follows the flow: a publish's or a delivery's message is then
    /// given as a `FlowMessage`, and no `Method` is made for it.
    var takesFlowMessages: Bool { get }
}

extension CodecSink {
    /// By default every frame is an event.
    package mutating func count(_ frame: CountedFrame, direction: Direction, time: Timestamp, packetNumber: Int)
        -> Bool
    { false }
    /// By default every message is whole.
    package var takesFlowMessages: Bool { false }
}

/// A content-header, body or heartbeat frame, or a routine method frame, as a sink that only counts such frames
/// takes it.
package enum CountedFrame {
    case header
    case body(length: Int)
    case heartbeat
    /// A method frame of the message flow (`RoutineMethod`), whole (not cut by the capture).
    case method(channel: UInt16, RoutineMethod)
}

/// The method frames of the message flow, as a sink that does not keep them takes them: what is followed of each,
/// without its strings. A publish's and a delivery's arguments still reach the sink with their message.
package enum RoutineMethod: Equatable {
    case publish
    case deliver
    case ack(deliveryTag: UInt64, multiple: Bool)
    case nack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)
    case reject(deliveryTag: UInt64, requeue: Bool)

    /// A method of the flow, or nil.
    package init?(_ method: Method) {
        switch method {
        case .basicPublish: self = .publish
        case .basicDeliver: self = .deliver
        case .basicAck(let a): self = .ack(deliveryTag: a.deliveryTag, multiple: a.multiple)
        case .basicNack(let n): self = .nack(deliveryTag: n.deliveryTag, multiple: n.multiple, requeue: n.requeue)
        case .basicReject(let r): self = .reject(deliveryTag: r.deliveryTag, requeue: r.requeue)
        default: return nil
        }
    }

    /// All of them are the basic class's.
    package static let classID: UInt16 = 60

    /// Its method id within the basic class.
    package var methodID: UInt16 {
        switch self {
        case .publish: BasicPublish.methodID
        case .deliver: BasicDeliver.methodID
        case .ack: BasicAck.methodID
        case .nack: BasicNack.methodID
        case .reject: BasicReject.methodID
        }
    }
}

/// What the codec keeps and shows.
public struct CodecConfiguration: Hashable, Sendable {
    /// Keep message bodies (shown only when asked).
    public var keepBodies = false
    /// Bytes kept of each body when bodies are kept.
    public var maximumKeptBodyBytes = 64 * 1024
    /// Leave Connection.Start-Ok's password (and other secrets) in the decoded frames.
    public var showCredentials = false
    /// Make values of content-header properties (content type, headers, ...). Off, they are still checked.
    public var decodeProperties = true
    /// With no protocol header, give up looking for frames after this many bytes per direction.
    public var syncGiveUpBytes: UInt64 = 64 * 1024
    /// The defaults.
    public init() {}
}

package struct ConnectionDecoder {
    package let configuration: CodecConfiguration
    package private(set) var verdict: Verdict = .undetermined
    /// Whether the connection's server port is one of the AMQP ports (frame sync allowed without a header).
    package let onAMQPPort: Bool
    var parsers: PerDirection<FrameParser>
    /// Content being received, per direction: a few channels at most, searched linearly and changed in place.
    var content = PerDirection<[PendingContent]>(repeating: [])
    var everSynchronized = false
    var negotiatedFrameMax: UInt32 = 0
    /// Channels whose content sequence is known, per direction: nil means all (seen from the start). After a sync
    /// or a gap only channels with a method frame since are judged, so a joined stream is not blamed for what
    /// happened before the capture saw it.
    var contentTracked: PerDirection<Set<UInt16>?>
    var time = Timestamp(nanoseconds: 0)
    var packetNumber = 0

    struct PendingContent {
        var channel: UInt16
        /// Taken (left nil) only as the message is made: it and the header are moved into it, not copied. Nil from
        /// the start when the flow's view of the message is made instead (`flow`).
        var method: Method?
        var flow: FlowMessage? = nil
        /// Kept only with its method: the flow's view of a message takes only how the message is known from it.
        var header: ContentHeader?
        /// The body size its content header declared; nil until that header is seen.
        var bodySize: UInt64?
        var received: UInt64 = 0
        var frames = 0
        var body: [UInt8]?
        var incomplete = false
        var methodCut = false

        /// The name of the method that carries it, as a violation gives it.
        var methodName: String { method?.name ?? flow?.methodName ?? "method" }
    }

    /// `fromStart`: the capture saw the connection open, so stream offset 0 is where AMQP begins.
    package init(fromStart: Bool, onAMQPPort: Bool, configuration: CodecConfiguration = CodecConfiguration()) {
        self.configuration = configuration
        self.onAMQPPort = onAMQPPort
        let state: FrameParser.State =
            fromStart ? .protocolHeader : (onAMQPPort ? .hunting(start: 0, skipped: 0) : .opaque)
        var parser = FrameParser(state: state)
        parser.keepBodies = configuration.keepBodies
        parsers = PerDirection(repeating: parser)
        contentTracked = PerDirection(repeating: fromStart ? nil : [])
        if !fromStart && !onAMQPPort {
            verdict = .notAMQP("joined mid-stream on a port that is not an AMQP port, and no protocol header was seen")
        }
    }

    package mutating func data<S: CodecSink>(
        _ bytes: UnsafeRawBufferPointer, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        var parser = takeParser(direction)
        parser.feed(bytes) { offset, output in handle(output, offset: offset, direction: direction, into: &sink) }
        putBack(consume parser, direction)
        afterFeed(direction: direction, into: &sink)
    }

    package mutating func gap<S: CodecSink>(
        _ length: UInt64, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        for i in content[direction].indices { content[direction][i].incomplete = true }
        contentTracked[direction] = []
        var parser = takeParser(direction)
        parser.gap(length) { offset, output in handle(output, offset: offset, direction: direction, into: &sink) }
        putBack(consume parser, direction)
    }

    /// Takes a direction's parser out while it runs, so that its buffer is never copied and the outputs it
    /// produces can update the decoder; decisions about the parser itself are applied in `putBack`.
    private mutating func takeParser(_ direction: Direction) -> FrameParser {
        var parser = FrameParser(state: .opaque)
        swap(&parser, &parsers[direction])
        return parser
    }

    private mutating func putBack(_ parser: consuming FrameParser, _ direction: Direction) {
        parser.negotiatedFrameMax = negotiatedFrameMax
        if stopsDecoding { parser.stop() }
        parsers[direction] = consume parser
    }

    /// Bytes this decoder holds: partial frames, hunt buffers and kept bodies. A mutating getter, so that the engine,
    /// which asks once a segment, reads it in place: a plain getter copied the whole decoder for the call.
    package var bufferedBytes: Int {
        mutating get {
            // The parsers' own counts, not their arrays' (whose storage is out of the cache: see `FrameParser.held`).
            var total = parsers[.clientToServer].held + parsers[.serverToClient].held
            // Bodies are kept only when asked: otherwise no content holds one, and none is looked at (a loop over them
            // copied each content, its method and header, on every segment).
            guard configuration.keepBodies else { return total }
            for pending in content[.clientToServer] { total += pending.body?.count ?? 0 }
            for pending in content[.serverToClient] { total += pending.body?.count ?? 0 }
            return total
        }
    }

    /// Gives up what this decoder holds (the engine's cap on all decoders' buffers was reached).
    package mutating func shed<S: CodecSink>(time: Timestamp, packetNumber: Int, into sink: inout S) {
        self.time = time
        self.packetNumber = packetNumber
        for direction in Direction.allCases {
            var parser = takeParser(direction)
            parser.shed { offset, output in handle(output, offset: offset, direction: direction, into: &sink) }
            putBack(consume parser, direction)
            for i in content[direction].indices where content[direction][i].body != nil {
                content[direction][i].body = []
                content[direction][i].incomplete = true
            }
        }
    }

    /// AMQP 1.0 (another codec's) and non-AMQP connections are not parsed further. After a header naming a version
    /// that is not decoded (0-10, unknown ones) its direction only counts bytes, but the peer's answer is still read:
    /// a broker refuses a version by sending the header of its own.
    private var stopsDecoding: Bool {
        switch verdict {
        case .notAMQP, .amqp10: true
        default: false
        }
    }

    /// Where a direction's stream is: the offset of the next byte.
    package func streamOffset(_ direction: Direction) -> UInt64 { parsers[direction].offset }

    /// Another codec found the connection's frames (AMQP 1.0 by frame sync): this one stops.
    package mutating func handOver<S: CodecSink>(to v: Verdict, direction: Direction, into sink: inout S) {
        setVerdict(v, direction, into: &sink)
    }

    /// The stream ended: says so if a frame was left half-read.
    package mutating func finish<S: CodecSink>(
        direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        let parser = parsers[direction]
        guard let start = parser.unfinishedFrameStart else { return }
        emit(
            direction, start, .malformed(reason: "stream ended inside a frame", skipped: parser.offset - start),
            into: &sink)
    }

    // MARK: -

    private mutating func afterFeed<S: CodecSink>(direction: Direction, into sink: inout S) {
        guard case .undetermined = verdict else { return }
        if parsers[direction].isHunting && parsers[direction].huntedBytes > configuration.syncGiveUpBytes {
            setVerdict(
                .notAMQP("no AMQP frames found in the first \(configuration.syncGiveUpBytes) bytes"), direction,
                into: &sink)
        }
    }

    private mutating func setVerdict<S: CodecSink>(_ v: Verdict, _ direction: Direction, into sink: inout S) {
        verdict = v
        emit(direction, 0, .verdict(v), into: &sink)
        if stopsDecoding {
            for direction in Direction.allCases {
                parsers[direction].stop()
            }
        }
    }

    private func emit<S: CodecSink>(
        _ direction: Direction, _ offset: UInt64, _ kind: consuming CodecEventKind, into sink: inout S
    ) {
        sink.consume(
            CodecEvent(direction: direction, time: time, packetNumber: packetNumber, offset: offset, kind: kind))
    }

    private mutating func handle<S: CodecSink>(
        _ output: ParserOutput, offset: UInt64, direction: Direction, into sink: inout S
    ) {
        if stopsDecoding { return }
        switch output {
        case .protocolHeader(let header):
            emit(direction, offset, .protocolHeader(header), into: &sink)
            if case .undetermined = verdict {
                setVerdict(header.isAMQP10 ? .amqp10(header.version) : .amqp(header.version), direction, into: &sink)
            }
        case .frame(let header, let payload, let damaged):
            if case .undetermined = verdict {
                if direction == .clientToServer && !everSynchronized && !onAMQPPort {
                    setVerdict(
                        .notAMQP("the client's first bytes are not an AMQP protocol header"), direction, into: &sink)
                    return
                }
                setVerdict(.amqpBySync, direction, into: &sink)
            }
            decodeFrame(header, payload, damaged: damaged, offset: offset, direction: direction, into: &sink)
        case .bodyPiece(let header, let bytes):
            guard configuration.keepBodies, let i = pendingIndex(direction, header.channel),
                content[direction][i].body != nil
            else { return }
            let room = configuration.maximumKeptBodyBytes - content[direction][i].body!.count
            if room > 0 {
                content[direction][i].body!.append(
                    contentsOf: UnsafeRawBufferPointer(rebasing: bytes[..<min(room, bytes.count)]))
            }
        case .malformed(let reason, let skipped):
            if case .undetermined = verdict, direction == .clientToServer, !onAMQPPort {
                setVerdict(
                    .notAMQP("the client's first bytes are neither an AMQP protocol header nor AMQP frames"),
                    direction, into: &sink)
                return
            }
            emit(direction, offset, .malformed(reason: reason.description, skipped: skipped), into: &sink)
        case .synchronized(let skipped):
            everSynchronized = true
            contentTracked[direction] = []
            emit(direction, offset, .synchronized(skipped: skipped), into: &sink)
        }
    }

    /// A method or content header the capture cut short (a snap length, a lost segment) is decoded from what was
    /// captured: the missing bytes are given as zeros, never taken for text or tables (see `FieldReader.captured`),
    /// and the frame is marked `cut`. One that cannot be read says nothing: the gap is the capture's fault, and
    /// capture-incomplete tells it.
    private mutating func decodeFrame<S: CodecSink>(
        _ header: FrameHeader, _ payload: UnsafeRawBufferPointer, damaged: Bool, offset: UInt64,
        direction: Direction, into sink: inout S, captured: Int = Int.max
    ) {
        if damaged, header.type != FrameType.body.rawValue, payload.count < Int(header.size) {
            var padded = [UInt8](repeating: 0, count: Int(header.size))
            padded.withUnsafeMutableBytes { $0.copyMemory(from: payload) }
            padded.withUnsafeBytes {
                decodeFrame(
                    header, $0, damaged: true, offset: offset, direction: direction, into: &sink,
                    captured: payload.count)
            }
            return
        }
        let cut = captured < payload.count
        if negotiatedFrameMax != 0 && UInt64(header.size) + 8 > UInt64(negotiatedFrameMax) {
            emit(
                direction, offset,
                .violation(
                    "frame of \(UInt64(header.size) + 8) bytes exceeds the negotiated frame_max \(negotiatedFrameMax) "
                        + "(which counts header and end byte)"
                ),
                into: &sink)
        }
        switch FrameType(rawValue: header.type)! {
        case .heartbeat:
            if header.channel != 0 || header.size != 0 {
                emit(
                    direction, offset,
                    .violation("heartbeat frame on channel \(header.channel) with \(header.size) payload bytes"),
                    into: &sink)
            }
            if !sink.count(.heartbeat, direction: direction, time: time, packetNumber: packetNumber) {
                emit(
                    direction, offset,
                    .frame(Frame(type: header.type, channel: header.channel, size: header.size, content: .heartbeat)),
                    into: &sink)
            }
        case .method:
            // A routine method is first read straight from its bytes, for a sink that counts it (and, for a publish
            // or a delivery, follows its message without keeping it): then no `Method` is made.
            var offered = false
            var flowMessage: FlowMessage?
            if !cut,
                let (routine, message) = RoutineMethod.read(
                    payload, channel: header.channel, flowMessage: sink.takesFlowMessages)
            {
                offered = true
                if sink.count(
                    .method(channel: header.channel, routine), direction: direction, time: time,
                    packetNumber: packetNumber)
                {
                    contentTracked[direction]?.insert(header.channel)
                    if let message {
                        addContent(
                            PendingContent(channel: header.channel, method: nil, flow: message, body: nil),
                            direction: direction, offset: offset, into: &sink)
                    }
                    return
                }
                // Set only when it is needed below, so that each path uses the message once: setting it first made a
                // copy (retaining a publish's exchange and routing key) on every routine publish and delivery.
                flowMessage = message
            }
            var reader = FieldReader(payload, captured: captured)
            let method: Method
            do throws(DecodeError) {
                guard !cut || captured >= 4 else { return }
                let classID = try reader.short()
                let methodID = try reader.short()
                method = try Method.decode(classID: classID, methodID: methodID, reader: &reader)
            } catch {
                if cut { return }
                let name =
                    payload.count >= 4
                    ? AMQPSpec.methodName(classID: payload.integer(at: 0), methodID: payload.integer(at: 2))
                    : "method"
                emit(
                    direction, offset,
                    .malformed(reason: "\(name) on channel \(header.channel): \(error.reason)", skipped: 0),
                    into: &sink)
                return
            }
            // A routine method that the sink only counts makes no event (a publish's or a delivery's method goes on
            // with its content, to its message).
            var counted = false
            if !cut, !offered, let routine = RoutineMethod(method) {
                counted = sink.count(
                    .method(channel: header.channel, routine), direction: direction, time: time,
                    packetNumber: packetNumber)
            }
            if !counted {
                // Only the connection class carries secrets: other methods are passed on as they are, without a copy.
                let shown =
                    configuration.showCredentials || method.classID != 10 ? method : Credentials.redacting(method)
                emit(
                    direction, offset,
                    .frame(
                        Frame(
                            type: header.type, channel: header.channel, size: header.size, content: .method(shown),
                            cut: cut)),
                    into: &sink)
            }
            follow(method, direction: direction)
            contentTracked[direction]?.insert(header.channel)
            if case .channelClose = method { dropContent(channel: header.channel) }
            if let flowMessage {
                // The sink takes the flow's view of the message (it wanted the frame, not the message): the method is
                // not kept.
                addContent(
                    PendingContent(channel: header.channel, method: nil, flow: flowMessage, body: nil),
                    direction: direction, offset: offset, into: &sink)
            } else if method.carriesContent {
                // The method is moved into its content, not copied: nothing reads it here after this.
                addContent(
                    PendingContent(
                        channel: header.channel, method: consume method, body: configuration.keepBodies ? [] : nil,
                        incomplete: cut, methodCut: cut), direction: direction, offset: offset, into: &sink)
            }
        case .header:
            var reader = FieldReader(payload, captured: captured)
            let contentHeader: ContentHeader
            do throws(DecodeError) {
                guard !cut || captured >= 12 else { return }
                contentHeader = try ContentHeader(from: &reader, decodeProperties: configuration.decodeProperties)
            } catch {
                if cut { return }
                emit(
                    direction, offset,
                    .malformed(reason: "content header on channel \(header.channel): \(error.reason)", skipped: 0),
                    into: &sink)
                if let i = pendingIndex(direction, header.channel) { content[direction].remove(at: i) }
                return
            }
            if !sink.count(.header, direction: direction, time: time, packetNumber: packetNumber) {
                emit(
                    direction, offset,
                    .frame(
                        Frame(
                            type: header.type, channel: header.channel, size: header.size,
                            content: .header(contentHeader), cut: cut)), into: &sink)
            }
            let bodySize = contentHeader.bodySize
            // Moved into its content, not copied.
            var moved: ContentHeader? = consume contentHeader
            let taken = pendingIndex(direction, header.channel).map { i in
                Self.inPlace(&content[direction][i]) { pending in
                    guard pending.bodySize == nil else { return false }
                    pending.bodySize = bodySize
                    // The flow message is changed out of its optional and put back: testing the optional and
                    // changing it through `!` copied the message.
                    if var flow = pending.flow.take() {
                        flow.messageIDDigest = moved!.messageIDDigest
                        flow.messageIDPrefix = moved!.messageIDPrefix
                        pending.flow = consume flow
                    } else {
                        swap(&pending.header, &moved)
                    }
                    if cut { pending.incomplete = true }
                    return true
                }
            }
            guard taken == true else {
                if isTracked(direction, header.channel) {
                    emit(
                        direction, offset,
                        .violation("content header on channel \(header.channel) with no content method before it"),
                        into: &sink)
                }
                return
            }
            if bodySize == 0 {
                completeMessage(channel: header.channel, direction: direction, offset: offset, into: &sink)
            }
        case .body:
            if !sink.count(
                .body(length: Int(header.size)), direction: direction, time: time, packetNumber: packetNumber)
            {
                emit(
                    direction, offset,
                    .frame(
                        Frame(
                            type: header.type, channel: header.channel, size: header.size,
                            content: .body(length: Int(header.size)))), into: &sink)
            }
            let counted = pendingIndex(direction, header.channel).flatMap { i in
                Self.inPlace(&content[direction][i]) { pending -> (bodySize: UInt64, received: UInt64)? in
                    guard let bodySize = pending.bodySize else { return nil }
                    pending.received += UInt64(header.size)
                    pending.frames += 1
                    if damaged { pending.incomplete = true }
                    return (bodySize, pending.received)
                }
            }
            guard let (bodySize, received) = counted else {
                if isTracked(direction, header.channel) {
                    emit(
                        direction, offset,
                        .violation("body frame on channel \(header.channel) with no content header before it"),
                        into: &sink)
                }
                return
            }
            if received >= bodySize {
                if received > bodySize {
                    emit(
                        direction, offset,
                        .violation(
                            "body of \(received) bytes on channel \(header.channel) exceeds the header's body size "
                                + "\(bodySize)"
                        ),
                        into: &sink)
                }
                completeMessage(channel: header.channel, direction: direction, offset: offset, into: &sink)
            }
        }
    }

    /// A content method starts its content on its channel.
    private mutating func addContent<S: CodecSink>(
        _ pending: consuming PendingContent, direction: Direction, offset: UInt64, into sink: inout S
    ) {
        let channel = pending.channel
        if let i = pendingIndex(direction, channel) {
            // Content a gap cut short was never going to complete: the capture's fault. It is handed up as it is, so
            // that the message is counted.
            if content[direction][i].incomplete {
                completeMessage(channel: channel, direction: direction, offset: offset, into: &sink)
                content[direction].append(consume pending)
            } else {
                emit(
                    direction, offset,
                    .violation(
                        "\(pending.methodName) on channel \(channel) before the previous content was complete"),
                    into: &sink)
                content[direction][i] = consume pending
            }
        } else if content[direction].count < Self.maximumPendingContents {
            content[direction].append(consume pending)
        }
    }

    private mutating func completeMessage<S: CodecSink>(
        channel: UInt16, direction: Direction, offset: UInt64, into sink: inout S
    ) {
        guard let i = pendingIndex(direction, channel) else { return }
        var pending = content[direction].remove(at: i)
        // Content whose header a gap took is still a message (of unknown properties and size).
        guard pending.bodySize != nil || pending.incomplete else { return }
        if var flow = pending.flow.take() {
            flow.methodCut = pending.methodCut
            emit(direction, offset, .flowMessage(consume flow), into: &sink)
            return
        }
        guard let method = pending.method.take() else { return }
        // The method, header and body are moved out of the content into the message: a copy of each retained every
        // string in it, and destroying the content released them again.
        var properties = BasicProperties()
        var bodySize: UInt64 = 0
        var messageIDDigest: UInt64?
        var messageIDPrefix: MessageIDPrefix?
        if var header = pending.header.take() {
            swap(&properties, &header.properties)
            bodySize = header.bodySize
            messageIDDigest = header.messageIDDigest
            messageIDPrefix = header.messageIDPrefix
        }
        emit(
            direction, offset,
            .message(
                Message(
                    channel: channel,
                    method: configuration.showCredentials || method.classID != 10
                        ? method : Credentials.redacting(method),
                    properties: properties, bodySize: bodySize, bodyFrames: pending.frames, body: pending.body.take(),
                    incomplete: pending.incomplete, messageIDDigest: messageIDDigest, messageIDPrefix: messageIDPrefix,
                    methodCut: pending.methodCut)), into: &sink)
    }

    /// Follows the negotiation: frame_max from Tune-Ok (the client's final word) bounds both directions; a closed
    /// channel drops any half-received content on it.
    private mutating func follow(_ method: Method, direction: Direction) {
        switch method {
        case .connectionTuneOk(let tune):
            negotiatedFrameMax = tune.frameMax
            for direction in Direction.allCases { parsers[direction].negotiatedFrameMax = tune.frameMax }
        default: break
        }
    }

    private func isTracked(_ direction: Direction, _ channel: UInt16) -> Bool {
        contentTracked[direction].map { $0.contains(channel) } ?? true
    }

    private mutating func dropContent(channel: UInt16) {
        for direction in Direction.allCases { content[direction].removeAll { $0.channel == channel } }
    }

    /// Channels with content in flight at once, per direction (a peer may interleave at most channel_max).
    static let maximumPendingContents = 2048

    /// Reads and changes one content in place, through a single access: reading a field of an element of
    /// `content` through the per-direction getter copied the whole element (its method and header).
    @inline(__always)
    private static func inPlace<T>(_ pending: inout PendingContent, _ body: (inout PendingContent) -> T) -> T {
        body(&pending)
    }

    private func pendingIndex(_ direction: Direction, _ channel: UInt16) -> Int? {
        content[direction].firstIndex { $0.channel == channel }
    }
}
