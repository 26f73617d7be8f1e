// Builds one connection's record from its TCP and codec events.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

struct RecordBuilder: CodecSink, AMQP10Sink, TLSSink {
    // Every packet reads the first three, frames the next two, then the record's first fields: they are kept
    // together (see `ConnectionRecord`).
    /// Per direction: has this direction's peer sent FIN / RST (so this direction's writes are late)?
    var peerClosed = PerDirection(repeating: PeerClosed())
    var lateWriteSeen = PerDirection(repeating: false)
    /// `configuration.recordPackets`.
    let recordPackets: Bool
    /// Message flow, once a connection publishes, consumes or gets: held by reference (most frames are not flow).
    var flow: FlowBox?
    /// Runs of routine traffic not yet placed on the timeline (closed by the next key event).
    var openRuns: [Run] = []
    /// Per direction, the open run that the last method carrying content (publish, return, deliver, get-ok) joined:
    /// the body frames that follow are that method's, and their bytes that run's, whatever runs opened since.
    var contentRun = PerDirection<Int?>(repeating: nil)
    var record: ConnectionRecord
    let configuration: EngineConfiguration
    /// Entries made since the live queue last took them (only filled with `streamEntries`).
    var fresh: [TimelineEntry] = []
    /// Heartbeat from Tune-Ok, once seen (live warnings need it at once).
    var negotiatedHeartbeat: UInt16?
    /// AMQP 1.0: the idle timeout each direction's sender advertised in its open, in milliseconds (0: none).
    var idleTimeOut10 = PerDirection<UInt32>(repeating: 0)
    /// The handshake a proxy would relay unchanged (0-9-1: Start-Ok's client properties; 1.0: the client's
    /// container-id), hashed: the engine finds the other leg of a proxied connection by it. `handshakeFresh` until
    /// the engine has indexed it.
    var handshakeKey: Int?
    var handshakeFresh = false

    /// The handshake key and the open time, once, when the handshake has just been seen.
    mutating func takeFreshHandshake() -> (Int, Timestamp)? {
        guard handshakeFresh, let handshakeKey else { return nil }
        handshakeFresh = false
        return (handshakeKey, record.firstTime)
    }
    /// Per direction, the last-frame time for which an overdue warning was given.
    var overdueReported = PerDirection<Timestamp?>(repeating: nil)
    /// Silences shorter than this are not kept.
    static let idleGapMinimum: Int64 = 1_000_000_000
    static let idleGapsKept = 1000
    /// Heartbeat times kept per direction (the most recent ones; cadence needs no more).
    static let heartbeatsKept = 4096

    /// Whether the peer of a direction's sender has sent FIN or RST.
    struct PeerClosed {
        var fin = false
        var rst = false
    }

    init(info: ConnectionInfo, time: Timestamp, configuration: EngineConfiguration) {
        record = ConnectionRecord(info: info, firstTime: time, lastTime: time)
        self.configuration = configuration
        recordPackets = configuration.recordPackets
    }

    mutating func packet(_ packet: PacketInfo, _ event: StreamEvent) {
        let direction = event.direction
        record.lastTime = event.time
        record.lastPacketTime[direction] = event.time
        // Changed in place through the addressor: a copy of the counters (13 fields) out and back cost more than the
        // changes, on every packet.
        record.counters[direction].packets += 1
        record.counters[direction].wireBytes += packet.wireLength
        record.counters[direction].payloadBytes += packet.payloadLength
        if packet.isRetransmission || packet.isPartialRetransmission { record.counters[direction].retransmissions += 1 }
        if packet.isOutOfOrder { record.counters[direction].outOfOrder += 1 }
        if packet.isKeepalive { record.counters[direction].keepalives += 1 }
        if packet.isZeroWindow { record.counters[direction].zeroWindows += 1 }
        record.packetsSinceLastFrame[direction] += 1
        if recordPackets {
            record.packets.append(
                PacketRecord(
                    direction: event.direction, time: event.time, packetNumber: event.packetNumber, info: packet))
        }
        if packet.payloadLength > 0 && !packet.isRetransmission
            && (peerClosed[direction].fin || peerClosed[direction].rst) && !lateWriteSeen[direction]
        {
            lateWriteSeen[direction] = true
            moment(.lateWrite(length: packet.payloadLength, afterPeerReset: peerClosed[direction].rst), event)
        }
        if packet.flags.contains(.syn) {
            let kind: TCPMoment.Kind = packet.flags.contains(.ack) ? .synAck : .syn
            if !record.moments.contains(where: { $0.kind == kind }) {
                moment(kind, event)
            }
        }
    }

    mutating func moment(_ kind: TCPMoment.Kind, _ event: StreamEvent) {
        switch kind {
        case .gap(let length, let reason):
            record.counters[event.direction].gaps += 1
            record.counters[event.direction].gapBytes += length
            if reason == .notCaptured {
                record.counters[event.direction].snapCuts += 1
                record.counters[event.direction].snapCutBytes += length
            }
        case .overlapConflict:
            record.counters[event.direction].overlapConflicts += 1
        default: break
        }
        switch kind {
        case .fin: peerClosed[event.direction.reversed].fin = true
        case .reset: peerClosed[event.direction.reversed].rst = true
        default: break
        }
        switch kind {
        case .fin, .reset: if event.direction == .serverToClient { flow?.tracker.serverClosed = true }
        default: break
        }
        // Gaps can be many on a lossy capture: keep the first hundred, count the rest.
        if case .gap = kind, record.moments.count >= configuration.maximumProblemsKept { return }
        let m = TCPMoment(kind: kind, direction: event.direction, time: event.time, packetNumber: event.packetNumber)
        record.moments.append(m)
        addKey(.moment(m))
    }

    /// Moves the entries made since the last call to the live queue.
    mutating func moveFresh(to live: inout [(ConnectionInfo, TimelineEntry)]) {
        for entry in fresh { live.append((record.info, entry)) }
        fresh.removeAll(keepingCapacity: true)
    }

    /// A key event: the routine runs before it go on the timeline first.
    mutating func addKey(_ entry: TimelineEntry) {
        closeRuns()
        append(entry)
    }

    /// The flow record as it stands (`ended`: the connection is over; it died unless its close handshake completed).
    mutating func summarizeFlow(ended: Bool) {
        guard let tracker = flow?.tracker else { return }
        let died =
            ended && !tracker.cleanClose && record.endReason != .captureEnded
            && record.moments.contains { m in
                if case .fin = m.kind { return true }
                if case .reset = m.kind { return true }
                return false
            }
        record.flow = tracker.summary(ended: ended, died: died)
    }

    mutating func closeRuns() {
        for run in openRuns { append(.run(run)) }
        openRuns.removeAll(keepingCapacity: true)
        contentRun = PerDirection(repeating: nil)
    }

    private mutating func append(_ entry: TimelineEntry) {
        if configuration.streamEntries { fresh.append(entry) }
        if record.timeline.count < configuration.maximumTimelineEntries {
            record.timeline.append(entry)
        } else {
            record.timelineDropped += 1
        }
    }

    /// Routine traffic joins the open run of its kind and direction.
    mutating func routine(
        _ classID: UInt16, _ methodID: UInt16, _ direction: Direction, _ time: Timestamp, _ packet: Int,
        inferred: Bool = false, amqp10: Bool = false, bytes: UInt64 = 0
    ) {
        let joined: Int
        if let i = openRuns.firstIndex(where: {
            $0.classID == classID && $0.methodID == methodID && $0.direction == direction && $0.inferred == inferred
                && $0.amqp10 == amqp10
        }) {
            openRuns[i].count += 1
            openRuns[i].last = time
            openRuns[i].lastPacket = packet
            openRuns[i].bodyBytes += bytes
            joined = i
        } else {
            openRuns.append(
                Run(
                    classID: classID, methodID: methodID, direction: direction, count: 1, first: time, last: time,
                    firstPacket: packet, lastPacket: packet, bodyBytes: bytes, inferred: inferred, amqp10: amqp10))
            joined = openRuns.count - 1
        }
        if Self.carriesContent(classID, methodID) { contentRun[direction] = joined }
    }

    /// basic.publish, basic.return, basic.deliver and basic.get-ok: the 0-9-1 methods that a content header and body
    /// frames follow (the spec's content flag, `MethodDescriptor.carriesContent`, which a test holds this to; compared
    /// here, not looked up, as it runs for every routine frame). Runs of AMQP 1.0 frames and of TLS records have
    /// class 0.
    static func carriesContent(_ classID: UInt16, _ methodID: UInt16) -> Bool {
        classID == 60 && (methodID == 40 || methodID == 50 || methodID == 60 || methodID == 71)
    }

    /// A direction sent a frame (or, encrypted, a record): its silences, and the connection's, end here.
    mutating func spoke(_ direction: Direction, _ time: Timestamp, _ packet: Int) {
        if let previous = record.lastFrameTime[direction], time.since(previous) >= Self.idleGapMinimum,
            record.idleGaps[direction].count < Self.idleGapsKept
        {
            record.idleGaps[direction].append(
                IdleGap(from: previous, to: time, fromPacket: record.lastFramePacket[direction], toPacket: packet))
        }
        if let last = record.lastAnyFrame, time.since(last.time) >= Self.idleGapMinimum,
            record.connectionIdleGaps.count < Self.idleGapsKept
        {
            record.connectionIdleGaps.append(
                IdleGap(from: last.time, to: time, fromPacket: last.packet, toPacket: packet))
        }
        record.lastAnyFrame = PacketMoment(time: time, packet: packet)
        record.lastFrameTime[direction] = time
        record.lastFramePacket[direction] = packet
        record.packetsSinceLastFrame[direction] = 0
    }

    /// A heartbeat (decoded, or inferred from an encrypted record's length: marked inferred wherever shown).
    mutating func heartbeat(_ direction: Direction, _ time: Timestamp) {
        if record.heartbeatTimes[direction].count >= Self.heartbeatsKept {
            record.heartbeatTimes[direction].removeFirst(Self.heartbeatsKept / 2)
        }
        record.heartbeatTimes[direction].append(time)
    }

    /// The TLS layer's events: the handshake and alerts are key moments; without keys, application-data records
    /// are the direction speaking, and heartbeat-sized ones are inferred heartbeats.
    mutating func consume(_ event: TLSEvent) {
        let d = event.direction
        func key(_ kind: TLSMoment.Kind) {
            addKey(.tls(TLSMoment(kind: kind, direction: d, time: event.time, packetNumber: event.packetNumber)))
        }
        switch event.kind {
        case .clientHello(let hello):
            key(.clientHello(serverName: hello.serverName, offeredSuites: hello.cipherSuites.count))
        case .serverHello(let hello):
            key(
                .serverHello(
                    version: hello.version, cipherSuite: hello.cipherSuite,
                    resumed: hello.acceptedPreSharedKey, retry: hello.isHelloRetryRequest))
        case .changeCipherSpec:
            break
        case .handshakeDone(let after):
            key(.handshakeDone(after: after))
        case .alert(let level, let description):
            spoke(d, event.time, event.packetNumber)
            key(.alert(level: level, description: description))
        case .encryptedAlert(let length, let inferred):
            spoke(d, event.time, event.packetNumber)
            key(.encryptedAlert(length: length, inferred: inferred))
        case .applicationData(let length, let isHeartbeat):
            spoke(d, event.time, event.packetNumber)
            if isHeartbeat {
                heartbeat(d, event.time)
                routine(0, 0, d, event.time, event.packetNumber, inferred: true, bytes: UInt64(length))
            } else {
                routine(0, 1, d, event.time, event.packetNumber, inferred: true, bytes: UInt64(length))
            }
        case .malformed(let reason, _):
            key(.malformed(reason: reason))
        case .cutRecord(_, let length):
            key(.cutRecord(length: length))
        case .synchronized(let skipped):
            key(.synchronized(skipped: skipped))
        }
    }

    /// Reassembly's final word on the TCP states (for connections still open when the capture ends).
    mutating func absorb(_ summary: ConnectionSummary) {
        record.clientState = summary.clientState
        record.serverState = summary.serverState
    }

    /// A content-header, body, heartbeat or routine method frame: the direction spoke, and the frame is counted (a
    /// heartbeat or a method also joins its run, and a method is followed in the message flow).
    mutating func counted(_ frame: CountedFrame, _ direction: Direction, _ time: Timestamp, _ packet: Int) {
        spoke(direction, time, packet)
        switch frame {
        case .header: record.frameCounts[direction].header += 1
        case .body(let length):
            record.frameCounts[direction].body += 1
            record.frameCounts[direction].bodyBytes += UInt64(length)
            if let i = contentRun[direction] { openRuns[i].bodyBytes += UInt64(length) }
        case .heartbeat:
            record.frameCounts[direction].heartbeat += 1
            heartbeat(direction, time)
            routine(0, 0, direction, time, packet)
        case .method(let channel, let method):
            // As `consume` takes the same method's frame event: counted, followed, and not a key frame.
            record.frameCounts[direction].method += 1
            startFlow()
            flow?.tracker.routine(method, channel: channel, direction: direction, time: time, packet: packet)
            routine(RoutineMethod.classID, method.methodID, direction, time, packet)
        }
    }

    /// The first method of the basic or confirm class starts following the message flow.
    mutating func startFlow() {
        guard flow == nil else { return }
        flow = FlowBox()
        flow?.tracker.tracesUnacked = configuration.keepsUnackedTrace
        // What the server closed before the first flow method: publishes after it are lost.
        flow?.tracker.serverClosed =
            peerClosed[.clientToServer].fin || peerClosed[.clientToServer].rst
            || record.keyFrames.contains { f in
                guard f.direction == .serverToClient, case .method(.connectionClose) = f.frame.content else {
                    return false
                }
                return true
            }
    }

    /// Consuming: the engine hands each event over, and a borrowed one was copied whole (callgrind: 99,000 copies
    /// for 86,000 events, now 37,000).
    mutating func consume(_ event: consuming CodecEvent) {
        let direction = event.direction
        let time = event.time
        let packetNumber = event.packetNumber
        let offset = event.offset
        // The event's own kind, switched on as it is moved: its frame or message is taken, not copied.
        let kind = (consume event).kind
        switch consume kind {
        case .protocolHeader(let header):
            record.protocolHeaders.append(
                ProtocolHeaderRecord(direction: direction, header: header, time: time, packetNumber: packetNumber)
            )
        case .frame(var frame):
            // Made only when kept (a key frame, or every frame with recordFrames): most frames are routine.
            var frameRecord: FrameRecord {
                FrameRecord(
                    packetNumber: packetNumber, time: time, direction: direction,
                    offset: offset, frame: frame)
            }
            // The content is moved out of the frame (a heartbeat left in its place) and put back only when the frame
            // is kept: a method bound from the frame in place was copied, every string in it retained and released.
            var content = Frame.Content.heartbeat
            swap(&content, &frame.content)
            switch consume content {
            case .method(let method):
                spoke(direction, time, packetNumber)
                record.frameCounts[direction].method += 1
                if case .connectionTuneOk(let tune) = method { negotiatedHeartbeat = tune.heartbeat }
                if case .connectionStartOk(let startOk) = method {
                    handshakeKey = startOk.clientProperties.hashValue
                    handshakeFresh = true
                }
                if method.classID == 60 || method.classID == 85 || flow != nil {
                    startFlow()
                    flow?.tracker.method(
                        method, channel: frame.channel, direction: direction, time: time, packet: packetNumber)
                }
                if Self.isKey(method) {
                    frame.content = .method(method)
                    let key = frameRecord
                    if record.keyFrames.count < 10_000 {
                        record.keyFrames.append(key)
                    } else {
                        record.keyFramesDropped += 1
                    }
                    addKey(.frame(key))
                } else {
                    routine(method.classID, method.methodID, direction, time, packetNumber)
                    if configuration.recordFrames { frame.content = .method(method) }
                }
            case .header(let header):
                counted(.header, direction, time, packetNumber)
                if configuration.recordFrames { frame.content = .header(header) }
            case .body(let length):
                counted(.body(length: length), direction, time, packetNumber)
                if configuration.recordFrames { frame.content = .body(length: length) }
            case .heartbeat:
                counted(.heartbeat, direction, time, packetNumber)
            }
            if configuration.recordFrames { record.frames.append(frameRecord) }
        case .flowMessage(let message):
            record.frameCounts[direction].messages += 1
            flow?.tracker.message(message, direction: direction, time: time, packet: packetNumber)
        case .message(let message):
            record.frameCounts[direction].messages += 1
            flow?.tracker.message(FlowMessage(message), direction: direction, time: time, packet: packetNumber)
            if configuration.keepsMessages {
                record.messages.append(
                    MessageRecord(direction: direction, time: time, packetNumber: packetNumber, message: message))
            }
        case .malformed(let reason, _):
            addProblem(.malformed, reason, direction, time, packetNumber, offset)
        case .violation(let reason):
            addProblem(.violation, reason, direction, time, packetNumber, offset)
        case .synchronized(let skipped):
            if record.synchronizations.count < configuration.maximumProblemsKept {
                record.synchronizations.append(
                    Synchronization(direction: direction, skipped: skipped, packetNumber: packetNumber))
            }
        case .verdict(let verdict):
            record.verdict = verdict
        }
    }

    /// The AMQP 1.0 codec's events: open, begin, attach, detach, end, close and SASL frames are key events; transfers,
    /// flows, dispositions and empty frames (heartbeats) fold into runs.
    mutating func consume(_ event: AMQP10Event) {
        let direction = event.direction
        let time = event.time
        switch event.kind {
        case .protocolHeader(let h):
            record.protocolHeaders.append(
                ProtocolHeaderRecord(
                    direction: direction,
                    header: ProtocolHeader(
                        protocolID: h.protocolID, major: h.major, minor: h.minor, revision: h.revision),
                    time: time, packetNumber: event.packetNumber))
        case .frame(let frame):
            spoke(direction, time, event.packetNumber)
            record.performativeCounts[direction].count(frame)
            var frameRecord: AMQP10FrameRecord {
                AMQP10FrameRecord(
                    packetNumber: event.packetNumber, time: time, direction: direction, offset: event.offset,
                    frame: frame)
            }
            if case .open(let o)? = frame.performative {
                idleTimeOut10[direction] = o.idleTimeOut ?? 0
                if direction == .clientToServer {
                    handshakeKey = o.containerID.hashValue
                    handshakeFresh = true
                }
            }
            switch frame.performative {
            case nil:
                heartbeat(direction, time)
                routine(0, 0, direction, time, event.packetNumber, amqp10: true)
            case .transfer(let t)?:
                routine(
                    0, UInt16(AMQP10Descriptor.transfer.rawValue), direction, time, event.packetNumber, amqp10: true,
                    bytes: UInt64(t.payloadLength))
            case .flow?, .disposition?:
                routine(
                    0, UInt16(frame.performative!.descriptor.rawValue), direction, time, event.packetNumber,
                    amqp10: true)
            default:
                let key = frameRecord
                if record.keyPerformatives.count < 10_000 {
                    record.keyPerformatives.append(key)
                } else {
                    record.keyFramesDropped += 1
                }
                addKey(.performative(key))
            }
            if configuration.recordFrames { record.performatives.append(frameRecord) }
        case .message(let message):
            record.performativeCounts[direction].messages += 1
            if configuration.keepsMessages {
                record.deliveries.append(
                    AMQP10MessageRecord(
                        direction: direction, time: time, packetNumber: event.packetNumber, message: message))
            }
        case .malformed(let reason, _):
            addProblem(.malformed, reason, direction, time, event.packetNumber, event.offset)
        case .violation(let reason):
            addProblem(.violation, reason, direction, time, event.packetNumber, event.offset)
        case .synchronized(let skipped):
            if record.synchronizations.count < configuration.maximumProblemsKept {
                record.synchronizations.append(
                    Synchronization(direction: direction, skipped: skipped, packetNumber: event.packetNumber))
            }
        }
    }

    private mutating func addProblem(
        _ kind: Problem.Kind, _ reason: String, _ direction: Direction, _ time: Timestamp, _ packetNumber: Int,
        _ offset: UInt64
    ) {
        record.problemCount += 1
        if record.problems.count < configuration.maximumProblemsKept {
            let problem = Problem(
                kind: kind, reason: reason, direction: direction, time: time, packetNumber: packetNumber,
                offset: offset)
            record.problems.append(problem)
            addKey(.problem(problem))
        }
    }

    /// Methods that shape a connection's story (everything but routine message traffic).
    static func isKey(_ method: Method) -> Bool {
        switch method.classID {
        case 10, 20: return true  // connection and channel lifecycle
        case 60:
            switch method {
            case .basicPublish, .basicDeliver, .basicAck, .basicNack, .basicReject, .basicGet, .basicGetOk,
                .basicGetEmpty:
                return false
            default: return true
            }
        default: return true
        }
    }
}

/// A connection's flow tracker, held by reference.
final class FlowBox {
    /// Unchecked, like the other per-connection boxes: one owner, no overlapping access.
    @exclusivity(unchecked) var tracker = FlowTracker()
}
