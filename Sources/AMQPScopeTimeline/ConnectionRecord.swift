// What the engine learns about each connection, and about the capture as a whole: the records that the stories,
// the diagnoses and every report are made from. Plain values; the engine and RecordBuilder fill them in.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

/// Per-direction counters as the timeline counts them.
public struct DirectionCounters: Hashable, Sendable {
    /// Packets seen.
    public var packets = 0
    /// Bytes on the wire, whole frames (as tshark counts them).
    public var wireBytes = 0
    /// TCP payload bytes, retransmissions included.
    public var payloadBytes = 0
    /// Bytes of the direction's byte stream delivered in order (retransmitted copies counted once). The engine learns
    /// them from its decoding stage as the connection ends; `Engine.openRecords()` fills them in for open ones.
    public var streamBytes: UInt64 = 0
    /// Packets whose payload had been seen before, in whole or in part.
    public var retransmissions = 0
    /// Packets that arrived ahead of a hole.
    public var outOfOrder = 0
    /// Holes in the stream (bytes that never arrived).
    public var gaps = 0
    /// Bytes in those holes.
    public var gapBytes: UInt64 = 0
    /// Of those gaps, the ones left by the capture's snap length (packets captured shorter than they were).
    public var snapCuts = 0
    /// Their bytes.
    public var snapCutBytes: UInt64 = 0
    /// Retransmissions whose bytes differed from the first copy.
    public var overlapConflicts = 0
    /// TCP keepalive probes.
    public var keepalives = 0
    /// Packets advertising a zero window.
    public var zeroWindows = 0
    /// The defaults.
    public init() {}
}

/// Capture-wide counts.
public struct PacketCounts: Hashable, Sendable {
    /// Packets seen.
    public var packets = 0
    /// Packets cut by the snap length.
    public var truncated = 0
    /// TCP packets.
    public var tcp = 0
    /// Packets that are not TCP.
    public var otherProtocols = 0
    /// IP fragments (skipped).
    public var fragments = 0
    /// Packets the packet layers could not read.
    public var malformed = 0
    /// The first of them, with why.
    public var firstMalformed: [MalformedPacket] = []
    /// The first packet's time.
    public var firstTime: Timestamp?
    /// The last packet's time.
    public var lastTime: Timestamp?
    /// Connections ended early because too many were tracked at once (`maximumConnections`).
    public var evictedConnections = 0
    /// The defaults.
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
    /// What happened.
    public enum Kind: Hashable, Sendable {
        case syn, synAck, fin
        case reset(ResetInfo)
        case gap(length: UInt64, reason: GapReason)
        case dataAfterFIN(length: Int)
        case overlapConflict(length: Int)
        /// Payload sent after the peer's FIN or RST was on the wire (the first such packet per direction).
        case lateWrite(length: Int, afterPeerReset: Bool)
    }
    /// What happened.
    public var kind: Kind
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
}

/// One decoded frame, where and when it completed.
public struct FrameRecord: Hashable, Sendable {
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// When it happened, in capture time.
    public var time: Timestamp
    /// Which way it travelled.
    public var direction: Direction
    /// Where it starts in its direction's byte stream.
    public var offset: UInt64
    /// The frame.
    public var frame: Frame
}

/// A codec problem (malformed bytes or a broken rule), with where it happened.
public struct Problem: Hashable, Sendable {
    /// Malformed bytes, or a rule broken by a frame that was still decoded.
    public enum Kind: String, Hashable, Sendable { case malformed, violation }
    /// What happened.
    public var kind: Kind
    /// What was wrong.
    public var reason: String
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// Where it starts in its direction's byte stream.
    public var offset: UInt64
}

/// Per-direction AMQP frame counts.
public struct FrameCounts: Hashable, Sendable {
    /// Method frames.
    public var method = 0
    /// Content header frames.
    public var header = 0
    /// Body frames.
    public var body = 0
    /// Heartbeat frames.
    public var heartbeat = 0
    /// Body payload bytes.
    public var bodyBytes: UInt64 = 0
    /// Messages assembled.
    public var messages = 0
    /// The defaults.
    public init() {}
    /// All frames.
    public var total: Int { method + header + body + heartbeat }
}

/// Per-direction AMQP 1.0 frame counts, by performative (SASL frames together).
public struct PerformativeCounts: Hashable, Sendable {
    /// open frames.
    public var open = 0
    /// begin frames.
    public var begin = 0
    /// attach frames.
    public var attach = 0
    /// flow frames.
    public var flow = 0
    /// transfer frames.
    public var transfer = 0
    /// disposition frames.
    public var disposition = 0
    /// detach frames.
    public var detach = 0
    /// end frames.
    public var end = 0
    /// close frames.
    public var close = 0
    /// Empty frames (1.0's heartbeat).
    public var empty = 0
    /// SASL frames (mechanisms, init, challenge, response, outcome).
    public var sasl = 0
    /// Deliveries completed (their last transfer seen).
    public var messages = 0
    /// Bytes of message sections the transfers carried.
    public var transferBytes: UInt64 = 0
    /// The defaults.
    public init() {}
    /// All frames.
    public var total: Int {
        open + begin + attach + flow + transfer + disposition + detach + end + close + empty + sasl
    }

    /// Counts one frame.
    mutating func count(_ frame: AMQP10Frame) {
        switch frame.performative {
        case nil: empty += 1
        case .open?: open += 1
        case .begin?: begin += 1
        case .attach?: attach += 1
        case .flow?: flow += 1
        case .transfer(let t)?:
            transfer += 1
            transferBytes += UInt64(t.payloadLength)
        case .disposition?: disposition += 1
        case .detach?: detach += 1
        case .end?: end += 1
        case .close?: close += 1
        case .saslMechanisms?, .saslInit?, .saslChallenge?, .saslResponse?, .saslOutcome?: sasl += 1
        }
    }
}

/// One decoded AMQP 1.0 frame, where and when it completed.
public struct AMQP10FrameRecord: Hashable, Sendable {
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// When it happened, in capture time.
    public var time: Timestamp
    /// Which way it travelled.
    public var direction: Direction
    /// Where it starts in its direction's byte stream.
    public var offset: UInt64
    /// The frame.
    public var frame: AMQP10Frame
}

/// An AMQP 1.0 delivery, which direction carried it, where and when its last transfer completed.
public struct AMQP10MessageRecord: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// The delivery.
    public var message: AMQP10Message
}

/// Everything the engine learned about one connection.
public struct ConnectionRecord: Sendable {
    // What every packet and frame changes comes first, together (with the builder's own per-packet state just
    // before it): a capture of a thousand interleaved connections has evicted a record from the cache by the time
    // its connection's next packet comes, and each cache line a packet touches is then a miss. Scattered through
    // the builder, a packet touched five or six lines; perf put 80 % of `RecordBuilder.packet`'s samples on those loads.
    /// The time of its last packet.
    public var lastTime: Timestamp
    /// The last time each direction sent any packet.
    public var lastPacketTime = PerDirection<Timestamp?>(repeating: nil)
    /// TCP packets each direction sent after its last AMQP frame (its kernel ACKing while the application is silent).
    public var packetsSinceLastFrame = PerDirection(repeating: 0)
    /// The last time each direction sent any frame, and any packet.
    public var lastFrameTime = PerDirection<Timestamp?>(repeating: nil)
    /// The packet of each direction's last frame.
    public var lastFramePacket = PerDirection(repeating: 0)
    /// The last frame in either direction.
    public var lastAnyFrame: PacketMoment?
    /// TCP counts per direction.
    public var counters = PerDirection(repeating: DirectionCounters())
    /// AMQP frame counts per direction.
    public var frameCounts = PerDirection(repeating: FrameCounts())
    /// The connection's identity.
    public var info: ConnectionInfo
    /// The time of its first packet.
    public var firstTime: Timestamp
    /// Why it ended; nil while open.
    public var endReason: EndReason?
    /// When it ended; nil while open.
    public var endTime: Timestamp?
    /// The client's TCP state at the end.
    public var clientState: TCPState = .established
    /// The server's TCP state at the end.
    public var serverState: TCPState = .established
    /// SYN, FIN, RST, gaps and late writes, in order (gaps bounded).
    public var moments: [TCPMoment] = []
    /// What it carries.
    public var verdict: Verdict = .undetermined
    /// The protocol headers each side sent.
    public var protocolHeaders: [ProtocolHeaderRecord] = []
    /// Every decoded frame, when asked (`recordFrames`).
    public var frames: [FrameRecord] = []
    /// Codec problems, the first `maximumProblemsKept`.
    public var problems: [Problem] = []
    /// All codec problems.
    public var problemCount = 0
    /// Where frame boundaries were found after joining or after gaps.
    public var synchronizations: [Synchronization] = []
    /// Key AMQP events (connection and channel lifecycle, blocking, errors): always kept, bounded by the protocol.
    public var keyFrames: [FrameRecord] = []
    /// Key frames past the bound, only counted.
    public var keyFramesDropped = 0
    /// Heartbeat frame times per direction (bounded ring of the most recent, plus the first few).
    public var heartbeatTimes = PerDirection<[Timestamp]>(repeating: [])
    /// Assembled messages, when asked (frames or bodies).
    public var messages: [MessageRecord] = []
    /// Silences of at least a second between consecutive frames of a direction (bounded).
    public var idleGaps = PerDirection<[IdleGap]>(repeating: [])
    /// Silences of at least a second in which neither direction sent a frame (bounded).
    public var connectionIdleGaps: [IdleGap] = []
    /// The TLS layer's summary, when the connection is TLS.
    public var tls: TLSSummary?
    /// A refused attempt (an RST answering the SYN) that the same client followed within a second with a connection
    /// to the same port that the server accepted: an address fallback (happy eyeballs, or trying each address a
    /// name resolves to).
    public var fallback: Fallback?
    /// The other leg, when this connection is one of two that a proxy joined (found by the same handshake, opened
    /// within a second and closed within 100 ms of each other).
    public var proxied: Proxied?
    /// The collapsed timeline: key events as they happened, routine traffic folded into runs between them.
    public var timeline: [TimelineEntry] = []
    /// Timeline entries past the bound, only counted.
    public var timelineDropped = 0
    /// Every packet, when asked (`--verbose`).
    public var packets: [PacketRecord] = []
    /// Message flow (0-9-1): confirms, acks, prefetch, returns, redeliveries, what was at risk; nil when the
    /// connection published, consumed or got nothing.
    public var flow: FlowRecord? {
        get { flowStorage?.value }
        set { flowStorage = newValue.map(FlowRecordBox.init) }
    }
    /// Held by reference: most connections have no flow, and the record of each stays small.
    var flowStorage: FlowRecordBox?
    /// AMQP 1.0 frame counts per direction.
    public var performativeCounts = PerDirection(repeating: PerformativeCounts())
    /// AMQP 1.0 frames that shape the story (open, begin, attach, detach, end, close, SASL): always kept, bounded.
    public var keyPerformatives: [AMQP10FrameRecord] = []
    /// Every AMQP 1.0 frame, when asked (`recordFrames`).
    public var performatives: [AMQP10FrameRecord] = []
    /// AMQP 1.0 deliveries, when asked (frames or bodies).
    public var deliveries: [AMQP10MessageRecord] = []

    init(info: ConnectionInfo, firstTime: Timestamp, lastTime: Timestamp) {
        self.info = info
        self.firstTime = firstTime
        self.lastTime = lastTime
    }

    /// Each direction's in-order stream bytes, as the decoding stage counted them.
    mutating func setStreamBytes(_ bytes: PerDirection<UInt64>) {
        for d in Direction.allCases { counters[d].streamBytes = bytes[d] }
    }

    /// It carried AMQP.
    public var isAMQP: Bool { verdict.isAMQP }
}

/// A protocol header ("AMQP" and its version bytes), which direction sent it, where and when.
public struct ProtocolHeaderRecord: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// The header.
    public var header: ProtocolHeader
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
}

/// Where the codec found a frame boundary after joining mid-stream or after a gap.
public struct Synchronization: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// Bytes passed over before the boundary.
    public var skipped: UInt64
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
}

/// An assembled message, which direction carried it, where and when it completed.
public struct MessageRecord: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// The message.
    public var message: Message
}

/// One TCP packet of a connection (kept for `--verbose`).
public struct PacketRecord: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number in its capture (1-based, as Wireshark numbers frames).
    public var packetNumber: Int
    /// What TCP said about it.
    public var info: PacketInfo
}

/// A point in a capture: a time and the packet there.
public struct PacketMoment: Hashable, Sendable {
    /// When it happened, in capture time.
    public var time: Timestamp
    /// The packet's number.
    public var packet: Int
}

/// A silence between two frames of one direction.
public struct IdleGap: Hashable, Sendable {
    /// The last frame before the silence.
    public var from: Timestamp
    /// The first frame after it (or the connection's end).
    public var to: Timestamp
    /// The packet of the frame before.
    public var fromPacket: Int
    /// The packet of the frame after; 0 when it ran to the end.
    public var toPacket: Int
    /// How long it lasted, in nanoseconds.
    public var length: Int64 { to.since(from) }
}

/// Routine traffic between two key events, folded into one line: "14 heartbeats server->client, every 1.0 s".
public struct Run: Hashable, Sendable {
    /// The method's class and method ids; (0, 0) for heartbeats. Names are made only when a report shows them.
    public var classID: UInt16
    /// The method id within its class.
    public var methodID: UInt16
    /// Which way it travelled.
    public var direction: Direction
    /// How many.
    public var count: Int
    /// The first one's time.
    public var first: Timestamp
    /// The last one's time.
    public var last: Timestamp
    /// The first one's packet.
    public var firstPacket: Int
    /// The last one's packet.
    public var lastPacket: Int
    /// Body bytes the run's methods carried (encrypted records: the records' bytes).
    public var bodyBytes: UInt64
    /// Encrypted TLS records, not decoded frames: (0, 0) is a run of records of a heartbeat's encrypted length,
    /// (0, 1) a run of other records.
    public var inferred = false
    /// AMQP 1.0 frames: `methodID` is the performative's descriptor code, 0 for empty frames (heartbeats).
    public var amqp10 = false

    /// It is a run of heartbeats (decoded, or inferred from TLS record lengths).
    public var isHeartbeat: Bool { classID == 0 && methodID == 0 }
    /// "heartbeat", a method name such as "basic.publish", "heartbeat-sized TLS record" or "TLS record".
    public var kind: String {
        if inferred { return isHeartbeat ? "heartbeat-sized TLS record" : "TLS record" }
        if amqp10 {
            return isHeartbeat ? "empty frame" : AMQP10Descriptor(rawValue: UInt64(methodID))?.name ?? "frame"
        }
        return isHeartbeat ? "heartbeat" : AMQPSpec.methodName(classID: classID, methodID: methodID)
    }
}

/// A moment of the TLS layer: the handshake, alerts, and records that could not be read.
public struct TLSMoment: Hashable, Sendable {
    /// What happened.
    public enum Kind: Hashable, Sendable {
        /// The client offered TLS: the server name it asked for and how many suites it offered.
        case clientHello(serverName: String?, offeredSuites: Int)
        /// The server chose a version and suite; `retry` for a HelloRetryRequest.
        case serverHello(version: UInt16, cipherSuite: UInt16, resumed: Bool, retry: Bool)
        /// Both sides finished the handshake, this long after the ClientHello (nanoseconds).
        case handshakeDone(after: Int64?)
        /// An alert in clear.
        case alert(level: UInt8, description: UInt8)
        /// An alert whose content is encrypted (TLS 1.2), or a TLS 1.3 record of an alert's encrypted length
        /// (`inferred`).
        case encryptedAlert(length: Int, inferred: Bool)
        /// Bytes that were not TLS records.
        case malformed(reason: String)
        /// A record cut by a capture gap.
        case cutRecord(length: Int)
        /// A record boundary found after skipping bytes.
        case synchronized(skipped: UInt64)
    }
    /// What happened.
    public var kind: Kind
    /// Which way it travelled.
    public var direction: Direction
    /// When it happened.
    public var time: Timestamp
    /// The packet that completed it.
    public var packetNumber: Int
}

/// One line of a connection's timeline.
public enum TimelineEntry: Hashable, Sendable {
    case frame(FrameRecord)
    case moment(TCPMoment)
    case run(Run)
    case problem(Problem)
    case tls(TLSMoment)
    /// An AMQP 1.0 frame that shapes the story.
    case performative(AMQP10FrameRecord)
    /// A message the broker logged about the connection (`--broker-log`); boxed, so that the other entries, of which
    /// every connection has many, stay as small as before.
    indirect case log(BrokerLogEvent)

    /// When it happened.
    public var time: Timestamp {
        switch self {
        case .frame(let f): f.time
        case .moment(let m): m.time
        case .run(let r): r.first
        case .problem(let p): p.time
        case .tls(let t): t.time
        case .performative(let f): f.time
        case .log(let l): l.time
        }
    }
}

/// One side of a connection has been silent past its heartbeat interval while the other keeps sending.
public struct HeartbeatOverdue: Sendable {
    /// The connection's identity.
    public var info: ConnectionInfo
    /// The silent side.
    public var side: Side
    /// The negotiated heartbeat, in seconds.
    public var heartbeat: Int
    /// The silent side's last frame.
    public var lastFrame: Timestamp
    /// That frame's packet.
    public var lastFramePacket: Int
    /// How long it has been silent, in nanoseconds.
    public var silentFor: Int64
    /// Heartbeats the peer sent since (the peer is alive and waiting).
    public var peerFramesSince: Int
    /// AMQP 1.0: the idle timeout the peer advertised in its open, in milliseconds (`heartbeat` is then it in whole
    /// seconds, rounded up).
    public var idleTimeOutMilliseconds: Int? = nil
    /// RabbitMQ checks for traffic once per interval and closes after two checks find none: between two and three
    /// intervals after the last frame. AMQP 1.0: the peer may close once its idle timeout has passed, and usually
    /// allows twice that.
    public var earliestDrop: Timestamp {
        if let ms = idleTimeOutMilliseconds { return lastFrame.adding(nanoseconds: Int64(ms) * 1_000_000) }
        return lastFrame.adding(nanoseconds: 2 * Int64(heartbeat) * 1_000_000_000)
    }
    /// The latest time the peer drops the connection (by the same rules).
    public var latestDrop: Timestamp {
        if let ms = idleTimeOutMilliseconds { return lastFrame.adding(nanoseconds: 2 * Int64(ms) * 1_000_000) }
        return lastFrame.adding(nanoseconds: 3 * Int64(heartbeat) * 1_000_000_000)
    }
}

/// A flow record held by reference (immutable: replaced whole when it changes).
final class FlowRecordBox: Sendable {
    let value: FlowRecord
    init(_ value: FlowRecord) { self.value = value }
}

/// The connection a refused attempt fell back to.
public struct Fallback: Hashable, Sendable {
    /// The connection that was accepted.
    public var connection: ConnectionID
    /// The server endpoint it reached.
    public var server: Endpoint
    /// How long after the refusal its SYN left (nanoseconds).
    public var after: Int64
}

/// One leg of a connection relayed by a proxy (haproxy, a load balancer in TCP mode).
public struct Proxied: Hashable, Sendable {
    /// Which leg this connection is.
    public enum Leg: String, Hashable, Sendable {
        /// From the client to the proxy.
        case clientSide = "client-side"
        /// From the proxy to the server.
        case serverSide = "server-side"
    }
    /// The other leg.
    public var peerConnection: ConnectionID
    /// The proxy's listening endpoint (the client-side leg's server).
    public var proxy: Endpoint
    /// This leg.
    public var leg: Leg
    /// When the first of the two legs was closed by TCP, and by which of this leg's sides.
    public var closedAt: Timestamp?
}
