// A connection's story: the negotiated parameters, the peers, how it ended, and the diagnoses with their evidence.
// A pure function of the connection's record.
import AMQPScopeAMQP10
import AMQPScopeBrokerLog
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly

/// What the peers agreed in Connection.Tune / Tune-Ok (or what their heartbeats show).
public struct Negotiated: Hashable, Sendable {
    /// Seconds; 0 means heartbeats are off.
    public var heartbeat: Int
    /// Largest frame in bytes, header and end byte included.
    public var frameMax: Int?
    /// Highest channel number.
    public var channelMax: Int?
    /// Estimated from the observed heartbeat cadence (no Tune/Tune-Ok in the capture).
    public var inferred: Bool
    /// What the server proposed in Connection.Tune, when the capture has it.
    public var serverProposed: Proposal?

    /// Connection.Tune's values.
    public struct Proposal: Hashable, Sendable {
        /// Heartbeat interval, in seconds (0: off).
        public var heartbeat: Int
        /// Largest frame in bytes, header and end byte included.
        public var frameMax: Int
        /// Highest channel number.
        public var channelMax: Int
    }
}

/// What a peer says about itself in Connection.Start / Start-Ok.
public struct PeerProperties: Hashable, Sendable {
    /// The properties table as sent (AMQP 1.0: open's properties, strings and numbers).
    public var table: FieldTable
    /// AMQP 1.0: the container id from open.
    public var containerID: String? = nil
    /// The `product` property.
    public var product: String? { table.string("product") }
    /// The `version` property.
    public var version: String? { table.string("version") }
    /// The `platform` property.
    public var platform: String? { table.string("platform") }
    /// The `connection_name` property (set by the application).
    public var connectionName: String? { table.string("connection_name") }

    /// "Pika Python Client Library 1.3.2".
    public var name: String? {
        guard let product else { return nil }
        return version.map { "\(product) \($0)" } ?? product
    }
}

/// A fact a diagnosis rests on: a packet, its time, and what it shows.
public struct Evidence: Hashable, Sendable {
    /// The packet (0 when the evidence spans several).
    public var packetNumber: Int
    /// When it happened, in capture time.
    public var time: Timestamp
    /// What the packet shows, in words.
    public var what: String
}

/// A diagnosis's stable code. The raw value is the string reports and JSON print; the order of the cases is the
/// order in which a story lists its diagnoses (the cause before its consequences).
public enum DiagnosisCode: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A side went silent past the negotiated heartbeat.
    case missedHeartbeats = "missed-heartbeats"
    /// Something between client and server (a proxy, load balancer or NAT) closed an idle connection.
    case idleTimeoutInPath = "idle-timeout-in-path"
    /// A side wrote after its peer had closed or reset the connection.
    case writeAfterClose = "write-after-close"
    /// An RST, with the error the receiving socket then returns.
    case reset
    /// Connection.Close with an error reply code; AMQP 1.0: close with an error, or a failed SASL outcome.
    case connectionError = "connection-error"
    /// TCP closed with no AMQP close handshake.
    case abruptClose = "abrupt-close"
    /// Publishes or deliveries left in doubt when the connection died: lost, unconfirmed, unacknowledged.
    case messagesAtRisk = "messages-at-risk"
    /// Channel.Close with an error reply code.
    case channelError = "channel-error"
    /// AMQP 1.0: end with an error (a session ended, with its links).
    case sessionError = "session-error"
    /// AMQP 1.0: detach with an error (a link ended).
    case linkError = "link-error"
    /// Connection.Blocked from the server.
    case blocked
    /// A consumer held as many unacknowledged deliveries as its prefetch allowed, for long.
    case consumerSaturated = "consumer-saturated"
    /// Publisher confirms were slow (99th percentile over the threshold).
    case slowConfirms = "slow-confirms"
    /// The same message was delivered again and again (requeued by nack or reject, or by a consumer dying).
    case redeliveryLoop = "redelivery-loop"
    /// Mandatory publishes came back unroutable (basic.return).
    case unroutable
    /// Heartbeats negotiated off, with long silences.
    case heartbeatsDisabled = "heartbeats-disabled"
    /// Bytes or frames that break the protocol.
    case protocolViolation = "protocol-violation"
    /// The capture misses part of the connection.
    case captureIncomplete = "capture-incomplete"

    /// The code as reports print it.
    public var description: String { rawValue }
}

/// The error a socket's next call returns after an RST lands on it, and the rule that predicts it.
public struct ErrnoPrediction: Hashable, Sendable {
    /// The errno value (Linux).
    public var errno: Int
    /// Its symbolic name, such as "ECONNRESET".
    public var name: String
    /// The rule the prediction follows, in words.
    public var rule: String
}

/// One finding about a connection, with its evidence and advice.
public struct Diagnosis: Hashable, Sendable {
    /// How bad it is: info (expected), warning, error.
    public enum Severity: String, Hashable, Sendable, Comparable, CaseIterable {
        case info, warning, error
        var rank: Int { self == .info ? 0 : self == .warning ? 1 : 2 }
        /// Orders by value.
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }
    /// Its stable code.
    public var code: DiagnosisCode
    /// How bad it is.
    public var severity: Severity
    /// One or two sentences in plain words.
    public var summary: String
    /// missed-heartbeats: the silent side; reset and write-after-close: the side whose socket gets the error;
    /// otherwise the side that acted.
    public var side: Side?
    /// The error the side's socket gets (reset, write-after-close, and missed-heartbeats ended by an RST).
    public var errno: ErrnoPrediction?
    /// The packets it rests on.
    public var evidence: [Evidence]
    /// Further facts in plain words (e.g. the broker log line that would match).
    public var details: [String]
    /// What to do, fitted to the client library when it is known.
    public var advice: [String]
    /// The index, in the story's diagnoses, of the diagnosis this one follows from; nil for a cause or a
    /// finding of its own.
    public var consequenceOf: Int? = nil
    /// The finding ended the connection (a silence up to the peer's close, a close with an error): its
    /// TCP consequences are told under it.
    package var endsConnection = false
}

/// How stories are told.
public struct StoryOptions: Hashable, Sendable {
    /// With heartbeats off (or unknown), silences at least this long are reported (nanoseconds).
    public var idleThreshold: Int64 = 30_000_000_000
    /// slow-confirms: the 99th percentile of publish-to-confirm latency above this (nanoseconds).
    public var slowConfirmThreshold: Int64 = 1_000_000_000
    /// consumer-saturated: unacknowledged deliveries at the prefetch limit for longer than this (nanoseconds).
    public var saturationThreshold: Int64 = 5_000_000_000
    /// redelivery-loop: a message redelivered at least this many times.
    public var redeliveryLoopCount = 3
    /// The defaults.
    public init() {}
}

/// A connection's story: who the peers were, what they agreed, how it ended, and the diagnoses.
public struct Story: Sendable {
    /// The record it is told from.
    public var record: ConnectionRecord
    /// What was negotiated, or inferred from heartbeats; nil when unknown.
    public var negotiated: Negotiated?
    /// AMQP 1.0: each side's open, the SASL exchange and the links.
    public var amqp10: AMQP10Story?
    /// What the client said about itself in Start-Ok (AMQP 1.0: in open).
    public var client: PeerProperties?
    /// What the server said about itself in Start.
    public var server: PeerProperties?
    /// Median interval between heartbeat frames per direction (nanoseconds), when at least two were seen.
    public var heartbeatCadence: PerDirection<Int64?>
    /// The diagnoses, the cause first.
    public var diagnoses: [Diagnosis]
    /// One sentence: how the connection ended.
    public var ending: String
    /// Per direction, silences between frames at least as long as the heartbeat interval (or the idle threshold
    /// when heartbeats are off or unknown), the trailing one (to the connection's end) included.
    public var silences: PerDirection<[IdleGap]>
    /// What the broker logged about this connection (`--broker-log`), on the capture's clock.
    public var brokerLog: [BrokerLogEvent] = []

    /// The most severe diagnosis's severity, if any.
    public var worstSeverity: Diagnosis.Severity? { diagnoses.map(\.severity).max() }

    /// What one side said about itself.
    public func peer(_ side: Side) -> PeerProperties? { side == .client ? client : server }

    /// "the client (Pika Python Client Library 1.3.2)".
    public func describe(_ side: Side) -> String {
        if let name = peer(side)?.name { return "the \(side) (\(name))" }
        return "the \(side)"
    }
}

/// The error a socket's next call returns after an RST lands, by the TCP state it was in (Linux tcp_reset()).
package enum ResetErrno {
    package static func predict(_ state: TCPState) -> ErrnoPrediction? {
        switch state {
        case .synSent:
            return ErrnoPrediction(
                errno: 111, name: "ECONNREFUSED", rule: "Linux tcp_reset(): an RST in SYN_SENT gives ECONNREFUSED")
        case .closeWait:
            return ErrnoPrediction(
                errno: 32, name: "EPIPE",
                rule: "Linux tcp_reset(): an RST in CLOSE_WAIT (after the peer's FIN) gives EPIPE")
        case .established, .synReceived:
            return ErrnoPrediction(
                errno: 104, name: "ECONNRESET", rule: "Linux tcp_reset(): an RST in \(state.rawValue) gives ECONNRESET")
        case .finWait, .lastAck, .timeWait, .closed:
            return nil  // the application already closed (or the socket is gone): no call of its sees an error
        }
    }
}

extension Story {
    /// Tells a record's story.
    public init(_ record: ConnectionRecord, options: StoryOptions = StoryOptions(), brokerLog: [BrokerLogEvent] = []) {
        self.record = record
        self.brokerLog = brokerLog
        var tune: ConnectionTune?
        var tuneOk: ConnectionTuneOk?
        var client: PeerProperties?
        var server: PeerProperties?
        for f in record.keyFrames {
            guard case .method(let m) = f.frame.content else { continue }
            switch m {
            case .connectionTune(let t): tune = t
            case .connectionTuneOk(let t): tuneOk = t
            case .connectionStart(let s): server = PeerProperties(table: s.serverProperties)
            case .connectionStartOk(let s): client = PeerProperties(table: s.clientProperties)
            default: break
            }
        }
        if case .amqp10 = record.verdict {
            let s10 = AMQP10Story(record)
            amqp10 = s10
            client = PeerProperties(open: s10.open(sentBy: .client))
            server = PeerProperties(open: s10.open(sentBy: .server))
        } else {
            amqp10 = nil
        }
        self.client = client
        self.server = server
        heartbeatCadence = record.heartbeatTimes.map(Self.medianInterval)
        if let tuneOk {
            negotiated = Negotiated(
                heartbeat: Int(tuneOk.heartbeat), frameMax: Int(tuneOk.frameMax), channelMax: Int(tuneOk.channelMax),
                inferred: false,
                serverProposed: tune.map {
                    Negotiated.Proposal(
                        heartbeat: Int($0.heartbeat), frameMax: Int($0.frameMax), channelMax: Int($0.channelMax))
                })
        } else if let cadence = [heartbeatCadence.clientToServer, heartbeatCadence.serverToClient].compactMap({ $0 })
            .min()
        {
            // RabbitMQ and the common clients send heartbeats at half the negotiated interval.
            let seconds = max(1, Int((Double(cadence) * 2 / 1e9).rounded()))
            negotiated = Negotiated(
                heartbeat: seconds, frameMax: nil, channelMax: nil, inferred: true, serverProposed: nil)
        } else {
            negotiated = nil
        }
        ending = ""
        diagnoses = []
        silences = PerDirection(repeating: [])
        ending = describeEnding()
        let threshold091 =
            negotiated.map { $0.heartbeat > 0 ? Int64($0.heartbeat) * 1_000_000_000 : options.idleThreshold }
            ?? options.idleThreshold
        let end = record.endTime ?? record.lastTime
        for d in Direction.allCases {
            // AMQP 1.0: a direction's sender must honour the idle timeout its receiver advertised.
            let threshold =
                amqp10.map { s in
                    s.idleTimeOut(advertisedBy: d.receiver).map { Int64($0) * 1_000_000 } ?? options.idleThreshold
                } ?? threshold091
            var gaps = record.idleGaps[d].filter { $0.length >= threshold }
            if let last = record.lastFrameTime[d], end.since(last) >= threshold {
                gaps.append(IdleGap(from: last, to: end, fromPacket: record.lastFramePacket[d], toPacket: 0))
            }
            silences[d] = gaps
        }
        diagnoses = Diagnoser(story: self, options: options).run()
    }

    static func medianInterval(_ times: [Timestamp]) -> Int64? {
        guard times.count >= 2 else { return nil }
        var intervals = zip(times.dropFirst(), times).map { $0.since($1) }
        intervals.sort()
        return intervals[intervals.count / 2]
    }

    func clock(_ t: Timestamp) -> String { t.clock }

    func describeEnding() -> String {
        let r = record
        var closeMethod: (FrameRecord, ConnectionClose)?
        for f in r.keyFrames {
            if case .method(.connectionClose(let c)) = f.frame.content, closeMethod == nil { closeMethod = (f, c) }
        }
        var close10: AMQP10FrameRecord?
        for f in r.keyPerformatives where close10 == nil {
            if case .close? = f.frame.performative { close10 = f }
        }
        let firstTCPClose = r.moments.first {
            if case .fin = $0.kind { return true }
            if case .reset = $0.kind { return true }
            return false
        }
        var parts: [String] = []
        if let f = close10, case .close(let e)? = f.frame.performative {
            parts.append(
                "close" + (e.map { " with \(AMQP10Story.describe($0))" } ?? "") + " from the \(f.direction.sender) at "
                    + clock(f.time))
        }
        if let (f, c) = closeMethod {
            parts.append(
                "Connection.Close \(c.replyCode) \(AMQPSpec.replyCodes[c.replyCode]?.name ?? "") from the "
                    + "\(f.direction.sender) at \(clock(f.time))"
            )
        }
        if let m = firstTCPClose {
            let how: String
            if case .reset = m.kind { how = "reset (RST)" } else { how = "closed (FIN)" }
            parts.append(
                "\(how) by the \(m.direction.sender) at "
                    + "\(clock(m.time))\(closeMethod == nil && close10 == nil && r.isAMQP && !(r.tls.map { !$0.decrypted } ?? false) ? (amqp10 == nil ? " with no Connection.Close" : " with no close performative") : "")"
            )
        }
        if parts.isEmpty {
            return r.endReason == .captureEnded || r.endReason == nil
                ? "still open when the capture ended" : (r.endReason?.rawValue ?? "")
        }
        return parts.joined(separator: "; then ")
    }

}
