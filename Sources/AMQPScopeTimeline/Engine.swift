// The pure engine: packets in (header + borrowed bytes), per-connection records out.
// Joins packet layers -> reassembly -> codec; the timeline and diagnoses are built from its records.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly

public struct EngineConfiguration: Hashable, Sendable {
    public var reassembly = ReassemblyConfiguration()
    public var codec = CodecConfiguration()
    /// Keep every decoded frame in the records (for `--frames`, `--verbose` and tests).
    public var recordFrames = false
    /// Feed each data event to the codec one byte at a time (a check that chunking never changes the answer).
    public var byteAtATime = false
    /// Problems kept per connection with their detail; past it they are only counted.
    public var maximumProblemsKept = 100
    /// Timeline entries kept per connection; past it they are only counted.
    public var maximumTimelineEntries = 5000
    /// Keep every packet in the records (for `--verbose`).
    public var recordPackets = false
    /// Bytes all AMQP decoders together may hold (partial frames, frame-hunt buffers, kept bodies); past it the
    /// decoder that grew sheds what it holds, reported as malformed or skipped bytes.
    public var maximumCodecBufferedBytes = 64 * 1024 * 1024
    /// Hand out timeline entries as they are made (live capture): see `Engine.takeLiveEntries()`.
    public var streamEntries = false
    public init() {}
}

/// Per-direction counters as the timeline counts them.
public struct DirectionCounters: Hashable, Sendable {
    public var packets = 0
    public var wireBytes = 0
    public var payloadBytes = 0
    /// Bytes of the direction's byte stream delivered in order (retransmitted copies counted once).
    public var streamBytes: UInt64 = 0
    public var retransmissions = 0
    public var outOfOrder = 0
    public var gaps = 0
    public var gapBytes: UInt64 = 0
    public var overlapConflicts = 0
    public var keepalives = 0
    public var zeroWindows = 0
    public init() {}
}

/// Capture-wide counts.
public struct PacketCounts: Hashable, Sendable {
    public var packets = 0
    public var truncated = 0
    public var tcp = 0
    public var otherProtocols = 0
    public var fragments = 0
    public var malformed = 0
    public var firstMalformed: [(packet: Int, reason: String)] = []
    public var firstTime: Timestamp?
    public var lastTime: Timestamp?
    /// Connections ended early because too many were tracked at once (`maximumConnections`).
    public var evictedConnections = 0
    public init() {}

    public static func == (a: PacketCounts, b: PacketCounts) -> Bool {
        a.packets == b.packets && a.truncated == b.truncated && a.tcp == b.tcp && a.otherProtocols == b.otherProtocols
            && a.fragments == b.fragments && a.malformed == b.malformed && a.firstTime == b.firstTime && a.lastTime == b.lastTime
    }
    public func hash(into hasher: inout Hasher) { hasher.combine(packets); hasher.combine(tcp) }
}

/// A TCP moment that shapes a connection's story.
public struct TCPMoment: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case syn, synAck, fin, reset(ResetInfo), gap(length: UInt64, reason: GapReason), dataAfterFIN(length: Int)
        case overlapConflict(length: Int)
        /// Payload sent after the peer's FIN or RST was on the wire (the first such packet per direction).
        case lateWrite(length: Int, afterPeerReset: Bool)
    }
    public var kind: Kind
    public var direction: Direction
    public var time: Timestamp
    public var packetNumber: Int
}

/// One decoded frame, where and when it completed.
public struct FrameRecord: Hashable, Sendable {
    public var packetNumber: Int
    public var time: Timestamp
    public var direction: Direction
    public var offset: UInt64
    public var frame: Frame
}

/// A codec problem (malformed bytes or a broken rule), with where it happened.
public struct Problem: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable { case malformed, violation }
    public var kind: Kind
    public var reason: String
    public var direction: Direction
    public var time: Timestamp
    public var packetNumber: Int
    public var offset: UInt64
}

/// Per-direction AMQP frame counts.
public struct FrameCounts: Hashable, Sendable {
    public var method = 0
    public var header = 0
    public var body = 0
    public var heartbeat = 0
    public var bodyBytes: UInt64 = 0
    public var messages = 0
    public init() {}
    public var total: Int { method + header + body + heartbeat }
}

/// Everything the engine learned about one connection.
public struct ConnectionRecord: Sendable {
    public var info: ConnectionInfo
    public var firstTime: Timestamp
    public var lastTime: Timestamp
    public var counters: [DirectionCounters] = [DirectionCounters(), DirectionCounters()]
    public var endReason: EndReason?
    public var endTime: Timestamp?
    public var clientState: TCPState = .established
    public var serverState: TCPState = .established
    public var moments: [TCPMoment] = []
    public var verdict: Verdict = .undetermined
    public var protocolHeaders: [(direction: Direction, header: ProtocolHeader, time: Timestamp, packetNumber: Int)] = []
    public var frameCounts = [FrameCounts(), FrameCounts()]
    public var frames: [FrameRecord] = []
    public var problems: [Problem] = []
    public var problemCount = 0
    public var synchronizations: [(direction: Direction, skipped: UInt64, packetNumber: Int)] = []
    /// Key AMQP events (connection and channel lifecycle, blocking, errors): always kept, bounded by the protocol.
    public var keyFrames: [FrameRecord] = []
    public var keyFramesDropped = 0
    /// The last time each direction sent any frame, and any packet.
    public var lastFrameTime: [Timestamp?] = [nil, nil]
    public var lastPacketTime: [Timestamp?] = [nil, nil]
    /// Heartbeat frame times per direction (bounded ring of the most recent, plus the first few).
    public var heartbeatTimes: [[Timestamp]] = [[], []]
    public var messages: [(direction: Direction, time: Timestamp, packetNumber: Int, message: Message)] = []
    /// Silences of at least a second between consecutive frames of a direction (bounded).
    public var idleGaps: [[IdleGap]] = [[], []]
    /// Silences of at least a second in which neither direction sent a frame (bounded).
    public var connectionIdleGaps: [IdleGap] = []
    /// The last frame in either direction.
    public var lastAnyFrame: (time: Timestamp, packet: Int)?
    /// The packet of each direction's last frame.
    public var lastFramePacket: [Int] = [0, 0]
    /// TCP packets each direction sent after its last AMQP frame (its kernel ACKing while the application is silent).
    public var packetsSinceLastFrame: [Int] = [0, 0]
    /// The collapsed timeline: key events as they happened, routine traffic folded into runs between them.
    public var timeline: [TimelineEntry] = []
    public var timelineDropped = 0
    /// Every packet, when asked (`--verbose`).
    public var packets: [(direction: Direction, time: Timestamp, packetNumber: Int, info: PacketInfo)] = []

    public var isAMQP: Bool { verdict.isAMQP }
}

/// A silence between two frames of one direction.
public struct IdleGap: Hashable, Sendable {
    public var from: Timestamp
    public var to: Timestamp
    public var fromPacket: Int
    public var toPacket: Int
    public var length: Int64 { to.since(from) }
}

/// Routine traffic between two key events, folded into one line: "14 heartbeats server->client, every 1.0 s".
public struct Run: Hashable, Sendable {
    /// The method's class and method ids; (0, 0) for heartbeats. Names are made only when a report shows them.
    public var classID: UInt16
    public var methodID: UInt16
    public var direction: Direction
    public var count: Int
    public var first: Timestamp
    public var last: Timestamp
    public var firstPacket: Int
    public var lastPacket: Int
    public var bodyBytes: UInt64

    public var isHeartbeat: Bool { classID == 0 }
    /// "heartbeat" or a method name such as "basic.publish".
    public var kind: String { isHeartbeat ? "heartbeat" : AMQPSpec.methodName(classID: classID, methodID: methodID) }
}

public enum TimelineEntry: Hashable, Sendable {
    case frame(FrameRecord)
    case moment(TCPMoment)
    case run(Run)
    case problem(Problem)

    public var time: Timestamp {
        switch self {
        case .frame(let f): f.time
        case .moment(let m): m.time
        case .run(let r): r.first
        case .problem(let p): p.time
        }
    }
}

/// One side of a connection has been silent past its heartbeat interval while the other keeps sending.
public struct HeartbeatOverdue: Sendable {
    public var info: ConnectionInfo
    public var side: Side
    public var heartbeat: Int
    public var lastFrame: Timestamp
    public var lastFramePacket: Int
    public var silentFor: Int64
    /// Heartbeats the peer sent since (the peer is alive and waiting).
    public var peerFramesSince: Int
    /// RabbitMQ checks for traffic once per interval and closes after two checks find none: between two and three
    /// intervals after the last frame.
    public var earliestDrop: Timestamp { lastFrame.adding(nanoseconds: 2 * Int64(heartbeat) * 1_000_000_000) }
    public var latestDrop: Timestamp { lastFrame.adding(nanoseconds: 3 * Int64(heartbeat) * 1_000_000_000) }
}

/// Receives reassembly's events and runs the codec per connection. Builders and decoders live in two slabs
/// addressed by a slot: one hash lookup per event at most (none when the event is for the same connection as the
/// last), and a builder is never copied on the hot path.
struct EngineState: StreamSink {
    let configuration: EngineConfiguration
    var slots: [ConnectionID: Int] = [:]
    var builders: [RecordBuilder?] = []
    var decoders: [ConnectionDecoder?] = []
    var freeSlots: [Int] = []
    var cachedID = ConnectionID(rawValue: 0)
    var cachedSlot = -1
    /// What each slot's decoder holds, and the total (kept up to date around every call into a decoder).
    var held: [Int] = []
    var totalHeld = 0
    var ended: [ConnectionRecord] = []
    /// Timeline entries made since the last `takeLiveEntries()` (live capture only).
    var live: [(ConnectionInfo, TimelineEntry)] = []

    init(configuration: EngineConfiguration) { self.configuration = configuration }

    mutating func slot(of id: ConnectionID) -> Int? {
        if id == cachedID { return cachedSlot }
        guard let slot = slots[id] else { return nil }
        cachedID = id
        cachedSlot = slot
        return slot
    }

    /// Keeps the total of what decoders hold; past the cap, the decoder that just grew sheds what it holds.
    mutating func account(_ s: Int, _ event: StreamEvent) {
        var now = decoders[s]!.bufferedBytes
        if now != held[s] || totalHeld > configuration.maximumCodecBufferedBytes {
            totalHeld += now - held[s]
            if totalHeld > configuration.maximumCodecBufferedBytes && now > 0 {
                decoders[s]!.shed(time: event.time.nanoseconds, packetNumber: event.packetNumber, into: &builders[s]!)
                let after = decoders[s]!.bufferedBytes
                totalHeld += after - now
                now = after
            }
            held[s] = now
        }
    }

    /// Builders of open connections, by id.
    var openBuilders: [RecordBuilder] {
        slots.keys.sorted().compactMap { builders[slots[$0]!] }
    }

    /// Moves a builder's new entries to the live queue.
    static func moveLive(from builder: inout RecordBuilder, to live: inout [(ConnectionInfo, TimelineEntry)]) {
        for entry in builder.fresh { live.append((builder.record.info, entry)) }
        builder.fresh.removeAll(keepingCapacity: true)
    }

    mutating func consume(_ event: StreamEvent) {
        let id = event.connection
        if case .opened(let info) = event.kind {
            let onPort = configuration.reassembly.serverPorts.contains(info.server.port)
            let decoder = ConnectionDecoder(fromStart: info.opening == .handshake, onAMQPPort: onPort, configuration: configuration.codec)
            let builder = RecordBuilder(info: info, time: event.time, configuration: configuration)
            let slot: Int
            if let free = freeSlots.popLast() {
                slot = free
                builders[slot] = builder
                decoders[slot] = decoder
                held[slot] = 0
            } else {
                slot = builders.count
                builders.append(builder)
                decoders.append(decoder)
                held.append(0)
            }
            slots[id] = slot
            return
        }
        guard let s = slot(of: id) else { return }
        defer { if configuration.streamEntries, builders[s] != nil { Self.moveLive(from: &builders[s]!, to: &live) } }
        switch event.kind {
        case .opened:
            break
        case .packet(let packet):
            builders[s]!.packet(packet, event)
        case .data(let bytes):
            builders[s]!.record.counters[event.direction.rawValue].streamBytes += UInt64(bytes.count)
            let direction = CodecDirection(rawValue: event.direction.rawValue)!
            if configuration.byteAtATime {
                for i in 0..<bytes.count {
                    decoders[s]!.data(UnsafeRawBufferPointer(rebasing: bytes[i..<i + 1]), direction: direction,
                                      time: event.time.nanoseconds, packetNumber: event.packetNumber, into: &builders[s]!)
                }
            } else {
                decoders[s]!.data(bytes, direction: direction, time: event.time.nanoseconds,
                                  packetNumber: event.packetNumber, into: &builders[s]!)
            }
            account(s, event)
        case .gap(let length, let reason):
            builders[s]!.moment(.gap(length: length, reason: reason), event)
            decoders[s]!.gap(length, direction: CodecDirection(rawValue: event.direction.rawValue)!,
                             time: event.time.nanoseconds, packetNumber: event.packetNumber, into: &builders[s]!)
            account(s, event)
        case .fin:
            builders[s]!.moment(.fin, event)
        case .reset(let info):
            builders[s]!.moment(.reset(info), event)
        case .overlapConflict(let length):
            builders[s]!.moment(.overlapConflict(length: length), event)
        case .dataAfterFIN(let length):
            builders[s]!.moment(.dataAfterFIN(length: length), event)
        case .ended(let reason):
            guard var builder = builders[s].take(), var decoder = decoders[s].take() else { return }
            totalHeld -= held[s]
            held[s] = 0
            slots[id] = nil
            freeSlots.append(s)
            if cachedID == id { cachedSlot = -1; cachedID = ConnectionID(rawValue: 0) }
            for direction in [CodecDirection.clientToServer, .serverToClient] {
                decoder.finish(direction: direction, time: event.time.nanoseconds, packetNumber: event.packetNumber, into: &builder)
            }
            builder.record.verdict = decoder.verdict
            builder.record.endReason = reason
            builder.record.endTime = event.time
            builder.closeRuns()
            Self.moveLive(from: &builder, to: &live)
            ended.append(builder.record)
        }
    }
}

/// The engine: feed it packets, then `finish`, then read `records`.
public struct Engine {
    public let configuration: EngineConfiguration
    public let linkType: LinkType
    var reassembler: Reassembler
    var state: EngineState
    public private(set) var counts = PacketCounts()

    public init(linkType: LinkType, configuration: EngineConfiguration = EngineConfiguration()) {
        self.configuration = configuration
        self.linkType = linkType
        reassembler = Reassembler(configuration: configuration.reassembly)
        state = EngineState(configuration: configuration)
    }

    /// Feeds one captured packet.
    public mutating func process(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) {
        counts.packets += 1
        if header.isTruncated { counts.truncated += 1 }
        if counts.firstTime == nil { counts.firstTime = header.timestamp }
        counts.lastTime = header.timestamp
        switch PacketDecoder.decode(bytes, linkType: linkType) {
        case .tcp(let segment):
            counts.tcp += 1
            reassembler.process(segment, header: header, bytes: bytes, into: &state)
        case .other, .unsupportedLinkType:
            counts.otherProtocols += 1
        case .fragment:
            counts.fragments += 1
        case .malformed(let problem):
            counts.malformed += 1
            if counts.firstMalformed.count < configuration.maximumProblemsKept {
                counts.firstMalformed.append((header.number, problem.description))
            }
        }
    }

    /// Ends idle connections as of `now` (live capture calls this on a timer).
    public mutating func tick(now: Timestamp) {
        reassembler.evictIdle(now: now, into: &state)
    }

    /// Ends every connection still open (the capture is over).
    public mutating func finish() {
        let end = counts.lastTime ?? Timestamp(nanoseconds: 0)
        // Take each connection's final TCP summary before reassembly forgets it.
        for summary in reassembler.summaries() {
            if let slot = state.slot(of: summary.info.id) { state.builders[slot]!.absorb(summary) }
        }
        reassembler.finish(at: end, into: &state)
        counts.evictedConnections = reassembler.evictedForCap
    }

    /// Records of connections that have ended, in the order they ended; taking them frees their memory.
    public mutating func takeEnded() -> [ConnectionRecord] {
        defer { state.ended.removeAll() }
        return state.ended
    }

    public var hasEnded: Bool { !state.ended.isEmpty }

    /// Timeline entries made since the last call, in the order they were made (with `streamEntries`).
    public mutating func takeLiveEntries() -> [(ConnectionInfo, TimelineEntry)] {
        defer { state.live.removeAll(keepingCapacity: true) }
        return state.live
    }

    /// The records of connections still open, as they stand now (routine runs so far included).
    public func openRecords() -> [ConnectionRecord] {
        state.openBuilders.map { builder in
            var copy = builder
            copy.closeRuns()
            return copy.record
        }
    }

    /// The record of one open connection as it stands now.
    public func openRecord(_ id: ConnectionID) -> ConnectionRecord? {
        guard let slot = state.slots[id], var builder = state.builders[slot] else { return nil }
        builder.closeRuns()
        return builder.record
    }

    /// Sides of open connections that have sent no frame for longer than the negotiated heartbeat while their peer
    /// kept sending, as of `now`: each silence is reported once. `now` comes from the caller (packet time, or the
    /// clock of a live capture), so the engine itself keeps no clock.
    public mutating func overdueHeartbeats(now: Timestamp) -> [HeartbeatOverdue] {
        var out: [HeartbeatOverdue] = []
        for id in state.slots.keys.sorted() {
            let slot = state.slots[id]!
            let record = state.builders[slot]!.record
            guard let heartbeat = state.builders[slot]!.negotiatedHeartbeat, heartbeat > 0, record.isAMQP, record.endReason == nil else { continue }
            let interval = Int64(heartbeat) * 1_000_000_000
            for side in Side.allCases {
                let d = side.sending.rawValue, p = side.peer.sending.rawValue
                guard let last = record.lastFrameTime[d], let peerLast = record.lastFrameTime[p] else { continue }
                let silent = now.since(last)
                guard silent > interval, peerLast > last, state.builders[slot]!.overdueReported[d] != last else { continue }
                state.builders[slot]!.overdueReported[d] = last
                out.append(HeartbeatOverdue(
                    info: record.info, side: side, heartbeat: Int(heartbeat), lastFrame: last, lastFramePacket: record.lastFramePacket[d],
                    silentFor: silent, peerFramesSince: record.heartbeatTimes[p].filter { $0 > last }.count))
            }
        }
        return out
    }

    /// Live connections being tracked.
    public var liveConnections: Int { reassembler.trackedConnections }
    /// Bytes all decoders hold now.
    public var codecBufferedBytes: Int { state.totalHeld }
    public var bufferedBytes: Int { reassembler.bufferedBytes }
}
