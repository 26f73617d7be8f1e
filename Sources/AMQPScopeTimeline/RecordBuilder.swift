// Builds one connection's record from its TCP and codec events.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly

struct RecordBuilder: CodecSink {
    var record: ConnectionRecord
    let configuration: EngineConfiguration
    /// Heartbeat times kept per direction (the most recent ones; cadence needs no more).
    static let heartbeatsKept = 4096

    init(info: ConnectionInfo, time: Timestamp, configuration: EngineConfiguration) {
        record = ConnectionRecord(info: info, firstTime: time, lastTime: time)
        self.configuration = configuration
    }

    mutating func packet(_ packet: PacketInfo, _ event: StreamEvent) {
        let d = event.direction.rawValue
        record.lastTime = event.time
        record.lastPacketTime[d] = event.time
        var counters = record.counters[d]
        counters.packets += 1
        counters.wireBytes += packet.wireLength
        counters.payloadBytes += packet.payloadLength
        if packet.isRetransmission || packet.isPartialRetransmission { counters.retransmissions += 1 }
        if packet.isOutOfOrder { counters.outOfOrder += 1 }
        if packet.isKeepalive { counters.keepalives += 1 }
        if packet.isZeroWindow { counters.zeroWindows += 1 }
        record.counters[d] = counters
        if packet.flags.contains(.syn) {
            let kind: TCPMoment.Kind = packet.flags.contains(.ack) ? .synAck : .syn
            if !record.moments.contains(where: { $0.kind == kind }) {
                record.moments.append(TCPMoment(kind: kind, direction: event.direction, time: event.time, packetNumber: event.packetNumber))
            }
        }
    }

    mutating func moment(_ kind: TCPMoment.Kind, _ event: StreamEvent) {
        switch kind {
        case .gap(let length, _):
            record.counters[event.direction.rawValue].gaps += 1
            record.counters[event.direction.rawValue].gapBytes += length
        case .overlapConflict:
            record.counters[event.direction.rawValue].overlapConflicts += 1
        default: break
        }
        // Gaps can be many on a lossy capture: keep the first hundred, count the rest.
        if case .gap = kind, record.moments.count >= configuration.maximumProblemsKept { return }
        record.moments.append(TCPMoment(kind: kind, direction: event.direction, time: event.time, packetNumber: event.packetNumber))
    }

    /// Reassembly's final word on the TCP states (for connections still open when the capture ends).
    mutating func absorb(_ summary: ConnectionSummary) {
        record.clientState = summary.clientState
        record.serverState = summary.serverState
    }

    mutating func consume(_ event: CodecEvent) {
        let direction = Direction(rawValue: event.direction.rawValue)!
        let d = direction.rawValue
        let time = Timestamp(nanoseconds: event.time)
        switch event.kind {
        case .protocolHeader(let header):
            record.protocolHeaders.append((direction, header, time, event.packetNumber))
        case .frame(let frame):
            record.lastFrameTime[d] = time
            if record.firstFrameTime[d] == nil { record.firstFrameTime[d] = time }
            let frameRecord = FrameRecord(packetNumber: event.packetNumber, time: time, direction: direction,
                                          offset: event.offset, frame: frame)
            switch frame.content {
            case .method(let method):
                record.frameCounts[d].method += 1
                if Self.isKey(method) {
                    if record.keyFrames.count < 10_000 { record.keyFrames.append(frameRecord) } else { record.keyFramesDropped += 1 }
                }
            case .header: record.frameCounts[d].header += 1
            case .body(let length):
                record.frameCounts[d].body += 1
                record.frameCounts[d].bodyBytes += UInt64(length)
            case .heartbeat:
                record.frameCounts[d].heartbeat += 1
                if record.heartbeatTimes[d].count >= Self.heartbeatsKept { record.heartbeatTimes[d].removeFirst(Self.heartbeatsKept / 2) }
                record.heartbeatTimes[d].append(time)
            }
            if configuration.recordFrames { record.frames.append(frameRecord) }
        case .message(let message):
            record.frameCounts[d].messages += 1
            if configuration.recordFrames || configuration.codec.keepBodies {
                record.messages.append((direction, time, event.packetNumber, message))
            }
        case .malformed(let reason, _):
            addProblem(.malformed, reason, direction, time, event)
        case .violation(let reason):
            addProblem(.violation, reason, direction, time, event)
        case .synchronized(let skipped):
            if record.synchronizations.count < configuration.maximumProblemsKept {
                record.synchronizations.append((direction, skipped, event.packetNumber))
            }
        case .verdict(let verdict):
            record.verdict = verdict
        }
    }

    private mutating func addProblem(_ kind: Problem.Kind, _ reason: String, _ direction: Direction, _ time: Timestamp, _ event: CodecEvent) {
        record.problemCount += 1
        if record.problems.count < configuration.maximumProblemsKept {
            record.problems.append(Problem(kind: kind, reason: reason, direction: direction, time: time,
                                           packetNumber: event.packetNumber, offset: event.offset))
        }
    }

    /// Methods that shape a connection's story (everything but routine message traffic).
    static func isKey(_ method: Method) -> Bool {
        switch method.classID {
        case 10, 20: return true  // connection and channel lifecycle
        case 60:
            switch method {
            case .basicPublish, .basicDeliver, .basicAck, .basicNack, .basicReject, .basicGet, .basicGetOk, .basicGetEmpty: return false
            default: return true
            }
        default: return true
        }
    }
}
