// What the engine learns about each connection, and about the capture as a whole: the records that the stories,
// the diagnoses and every report are made from. Plain values; the engine and RecordBuilder fill them in.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly

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
    public var firstMalformed: [MalformedPacket] = []
    public var firstTime: Timestamp?
    public var lastTime: Timestamp?
    /// Connections ended early because too many were tracked at once (`maximumConnections`).
    public var evictedConnections = 0
    public init() {}
}

/// A packet that the packet layers could not read, and why.
public struct MalformedPacket: Hashable, Sendable {
    /// Its number in the capture (1-based).
    public var packet: Int
    /// What was wrong with it.
    public var reason: String
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
    public var counters = PerDirection(repeating: DirectionCounters())
    public var endReason: EndReason?
    public var endTime: Timestamp?
    public var clientState: TCPState = .established
    public var serverState: TCPState = .established
    public var moments: [TCPMoment] = []
    public var verdict: Verdict = .undetermined
    public var protocolHeaders: [ProtocolHeaderRecord] = []
    public var frameCounts = PerDirection(repeating: FrameCounts())
    public var frames: [FrameRecord] = []
    public var problems: [Problem] = []
    public var problemCount = 0
    public var synchronizations: [Synchronization] = []
    /// Key AMQP events (connection and channel lifecycle, blocking, errors): always kept, bounded by the protocol.
    public var keyFrames: [FrameRecord] = []
    public var keyFramesDropped = 0
    /// The last time each direction sent any frame, and any packet.
    public var lastFrameTime = PerDirection<Timestamp?>(repeating: nil)
    public var lastPacketTime = PerDirection<Timestamp?>(repeating: nil)
    /// Heartbeat frame times per direction (bounded ring of the most recent, plus the first few).
    public var heartbeatTimes = PerDirection<[Timestamp]>(repeating: [])
    public var messages: [MessageRecord] = []
    /// Silences of at least a second between consecutive frames of a direction (bounded).
    public var idleGaps = PerDirection<[IdleGap]>(repeating: [])
    /// Silences of at least a second in which neither direction sent a frame (bounded).
    public var connectionIdleGaps: [IdleGap] = []
    /// The last frame in either direction.
    public var lastAnyFrame: PacketMoment?
    /// The packet of each direction's last frame.
    public var lastFramePacket = PerDirection(repeating: 0)
    /// TCP packets each direction sent after its last AMQP frame (its kernel ACKing while the application is silent).
    public var packetsSinceLastFrame = PerDirection(repeating: 0)
    /// The collapsed timeline: key events as they happened, routine traffic folded into runs between them.
    public var timeline: [TimelineEntry] = []
    public var timelineDropped = 0
    /// Every packet, when asked (`--verbose`).
    public var packets: [PacketRecord] = []

    public var isAMQP: Bool { verdict.isAMQP }
}

/// A protocol header ("AMQP" and its version bytes), which direction sent it, where and when.
public struct ProtocolHeaderRecord: Hashable, Sendable {
    public var direction: Direction
    public var header: ProtocolHeader
    public var time: Timestamp
    public var packetNumber: Int
}

/// Where the codec found a frame boundary after joining mid-stream or after a gap.
public struct Synchronization: Hashable, Sendable {
    public var direction: Direction
    /// Bytes passed over before the boundary.
    public var skipped: UInt64
    public var packetNumber: Int
}

/// An assembled message, which direction carried it, where and when it completed.
public struct MessageRecord: Hashable, Sendable {
    public var direction: Direction
    public var time: Timestamp
    public var packetNumber: Int
    public var message: Message
}

/// One TCP packet of a connection (kept for `--verbose`).
public struct PacketRecord: Hashable, Sendable {
    public var direction: Direction
    public var time: Timestamp
    public var packetNumber: Int
    public var info: PacketInfo
}

/// A point in a capture: a time and the packet there.
public struct PacketMoment: Hashable, Sendable {
    public var time: Timestamp
    public var packet: Int
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
