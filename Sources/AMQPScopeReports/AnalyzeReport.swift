// `amqpscope analyze`: per capture file, what was read; per TCP connection, how it went and what AMQP it carried.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

/// One capture file's results, as the reports need them.
public struct CaptureResult: Sendable {
    public var path: String
    public var linkType: LinkType?
    public var counts: PacketCounts
    public var records: [ConnectionRecord]
    /// Why reading stopped early, or why the file could not be read at all.
    public var error: String?
    /// True when nothing could be read (exit 3); false with an error means read in part (exit 4).
    public var unreadable: Bool

    public init(path: String, linkType: LinkType?, counts: PacketCounts, records: [ConnectionRecord], error: String?, unreadable: Bool) {
        self.path = path
        self.linkType = linkType
        self.counts = counts
        self.records = records
        self.error = error
        self.unreadable = unreadable
    }
}

public struct ReportOptions: Sendable {
    /// Every frame and packet instead of the collapsed timeline (needs records made with frames and packets).
    public var verbose = false
    /// List decoded frames (`--frames`): implied by `verbose`.
    public var showFrames = false
    public var showBodies = false
    /// Only these connection ids (per file).
    public var connections: Set<Int>?
    /// Only timeline entries in this window.
    public var from: Timestamp?
    public var to: Timestamp?
    public var story = StoryOptions()
    /// ANSI colour for severities in the text report (the CLI sets it only for a terminal without NO_COLOR).
    public var colour = false
    public init() {}

    func includes(_ t: Timestamp) -> Bool { (from.map { t >= $0 } ?? true) && (to.map { t <= $0 } ?? true) }
}

public enum AnalyzeReport {
    /// The stories of a capture's connections that pass the filters.
    public static func stories(_ result: CaptureResult, options: ReportOptions) -> [Story] {
        // A connection is in a time window when any of its life falls inside it.
        result.records.filter { passes($0, options) }.map { Story($0, options: options.story) }
    }

    // MARK: Text

    /// The whole report of captures analysed in memory (the CLI streams the same through `AnalyzeWriter`).
    public static func text(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> String {
        render(results, format: .text, options: options)
    }

    static func render(_ results: [CaptureResult], format: AnalyzeWriter.Kind, options: ReportOptions) -> String {
        var out = ""
        var writer = AnalyzeWriter(format: format, options: options) { out += $0 }
        for (index, r) in results.enumerated() {
            writer.begin(capture: r.path)
            for record in r.records { writer.connection(record, capture: index) }
            writer.end(capture: r)
        }
        writer.finish()
        return out
    }

    /// The capture's summary: packets, time span, link type, tally of connections and diagnoses.
    static func summaryText(_ r: CaptureResult, connections: Int, amqp: Int, tally: [Diagnosis.Severity: Int]) -> String {
        if r.unreadable { return "  error: \(Format.safe(r.error ?? "unreadable"))\n" }
        let c = r.counts
        var out = "  \(c.packets) packets"
        if let first = c.firstTime, let last = c.lastTime {
            out += " from \(Format.time(first)) to \(Format.time(last)) UTC (\(Format.duration(nanoseconds: last.since(first))))"
        }
        out += ", link type \(r.linkType?.name ?? "unknown")\n"
        var notes: [String] = []
        if c.truncated > 0 { notes.append("\(c.truncated) cut by the snap length") }
        if c.otherProtocols > 0 { notes.append("\(c.otherProtocols) not TCP") }
        if c.fragments > 0 { notes.append("\(c.fragments) IP fragments skipped") }
        if c.malformed > 0 { notes.append("\(c.malformed) malformed") }
        if !notes.isEmpty { out += "  packets: " + notes.joined(separator: ", ") + "\n" }
        for m in c.firstMalformed.prefix(5) { out += "  malformed packet \(m.packet): \(m.reason)\n" }
        var line = "  \(connections) TCP connection\(connections == 1 ? "" : "s"), \(amqp) AMQP"
        for severity in [Diagnosis.Severity.error, .warning] {
            let n = tally[severity, default: 0]
            if n > 0 { line += ", \(n) \(severity.rawValue)\(n == 1 ? "" : "s")" }
        }
        out += line + "\n"
        if c.evictedConnections > 0 {
            out += "  \(c.evictedConnections) connections were ended early: more were open at once than --max-connections allows\n"
        }
        if let error = r.error { out += "  reading stopped early: \(Format.safe(error))\n" }
        return out
    }

    static func storyText(_ story: Story, options: ReportOptions) -> String {
        let r = story.record
        var out = "connection \(r.info.id.rawValue): \(r.info.client) -> \(r.info.server), \(protocolName(r.verdict))"
        if case .notAMQP(let why) = r.verdict { out += " (\(why))" }
        out += "\n"
        // The diagnoses first, in plain words.
        if story.diagnoses.allSatisfy({ $0.severity == .info }) && r.isAMQP {
            out += "  no problems found\n"
        }
        for d in story.diagnoses {
            out += "  \(severityLabel(d.severity, colour: options.colour)) \(d.code): \(Format.safe(d.summary, limit: 2000))\n"
            for detail in d.details { out += "      \(Format.safe(detail, limit: 2000))\n" }
            let evidence = d.evidence.map { e in (e.packetNumber > 0 ? "#\(e.packetNumber) " : "") + "\(Format.time(e.time).suffix(15)) \(Format.safe(e.what))" }
            if !evidence.isEmpty { out += "      evidence: " + evidence.joined(separator: "; ") + "\n" }
            for advice in d.advice { out += "      advice: \(advice)\n" }
        }
        // Who, what was agreed, how it ended.
        if let client = story.client { out += "  client     \(peerLine(client))\n" }
        if let server = story.server { out += "  server     \(peerLine(server))\n" }
        if let n = story.negotiated {
            out += "  negotiated \(Describe.negotiated(n))\n"
        } else if r.isAMQP {
            out += "  negotiated unknown (no Tune/Tune-Ok in the capture, and no heartbeats to infer from)\n"
        }
        if r.isAMQP {
            let beats = Direction.allCases.map { d -> String in
                let n = r.frameCounts[d].heartbeat
                let cadence = story.heartbeatCadence[d].map { ", every \(Format.duration(nanoseconds: $0))" } ?? ""
                return "\(d) \(n)\(cadence)"
            }
            out += "  heartbeats \(beats.joined(separator: "; "))\n"
            let frames = Direction.allCases.map { d -> String in
                let f = r.frameCounts[d]
                return "\(d) \(f.method) method, \(f.header) header, \(f.body) body, \(f.messages) messages"
            }
            out += "  frames     \(frames.joined(separator: "; "))\n"
        }
        if r.isAMQP {
            let last = Direction.allCases.map { d -> String in
                var parts: [String] = []
                if let t = r.lastFrameTime[d] { parts.append("frame #\(r.lastFramePacket[d]) at \(Format.time(t).suffix(15))") }
                if let t = r.lastPacketTime[d] { parts.append("packet at \(Format.time(t).suffix(15))") }
                return "\(d) " + (parts.isEmpty ? "nothing" : parts.joined(separator: ", "))
            }
            out += "  last sent  \(last.joined(separator: "; "))\n"
            for d in Direction.allCases where !story.silences[d].isEmpty {
                let list = story.silences[d].prefix(3).map { g in
                    "\(Format.duration(nanoseconds: g.length)) from #\(g.fromPacket)" + (g.toPacket > 0 ? " to #\(g.toPacket)" : " to the end")
                }
                let more = story.silences[d].count > 3 ? " and \(story.silences[d].count - 3) more" : ""
                out += "  silences   \(d): \(list.joined(separator: ", "))\(more)\n"
            }
        }
        out += "  ended      \(story.ending)\n"
        out += "  tcp        \(tcpStory(r))\n"
        for d in Direction.allCases {
            let k = r.counters[d]
            var extras: [String] = []
            if k.retransmissions > 0 { extras.append("\(k.retransmissions) retransmitted") }
            if k.outOfOrder > 0 { extras.append("\(k.outOfOrder) out of order") }
            if k.gaps > 0 { extras.append("\(k.gaps) gaps (\(k.gapBytes) bytes missing)") }
            if k.keepalives > 0 { extras.append("\(k.keepalives) keepalives") }
            if k.zeroWindows > 0 { extras.append("\(k.zeroWindows) zero-window") }
            if k.overlapConflicts > 0 { extras.append("\(k.overlapConflicts) conflicting overlaps") }
            out += "             \(d): \(k.packets) packets, \(k.payloadBytes) payload bytes"
            out += extras.isEmpty ? "\n" : ", " + extras.joined(separator: ", ") + "\n"
        }
        for sync in r.synchronizations.prefix(3) {
            out += "  sync       \(sync.direction) frames found at packet \(sync.packetNumber) after skipping \(sync.skipped) bytes\n"
        }
        out += timelineText(story, options: options)
        if options.showBodies { out += messagesText(r) }
        return out
    }

    /// Messages with their bodies: only with --show-bodies, escaped, at most 2000 characters each.
    static func messagesText(_ r: ConnectionRecord) -> String {
        guard !r.messages.isEmpty else { return "" }
        var out = "  messages (bodies shown because --show-bodies was given)\n"
        for m in r.messages {
            out += "    #\(m.packetNumber)  \(m.direction.arrow)  ch \(m.message.channel)  \(Describe.method(m.message.method))  "
            out += "\(m.message.bodySize) bytes\(m.message.incomplete ? " (incomplete)" : "")\n"
            if let body = m.message.body {
                out += "      body: \(Format.safe(String(decoding: body, as: UTF8.self), limit: 2000))\n"
            }
        }
        return out
    }

    /// "ERROR", in bold red on a terminal; "WARNING" yellow; "INFO" dim.
    static func severityLabel(_ severity: Diagnosis.Severity, colour: Bool) -> String {
        let word = severity.rawValue.uppercased()
        guard colour else { return word }
        switch severity {
        case .error: return "\u{1B}[1;31m\(word)\u{1B}[0m"
        case .warning: return "\u{1B}[1;33m\(word)\u{1B}[0m"
        case .info: return "\u{1B}[2m\(word)\u{1B}[0m"
        }
    }

    static func peerLine(_ p: PeerProperties) -> String {
        var text = Format.safe(p.name ?? "unnamed", limit: 120)
        if let platform = p.platform { text += " (\(Format.safe(platform, limit: 60)))" }
        if let name = p.connectionName { text += ", connection_name \"\(Format.safe(name, limit: 120))\"" }
        return text
    }

    // MARK: Timeline

    /// The timeline as lines: UTC time, seconds since the connection's first packet, direction, packet, what.
    static func timelineText(_ story: Story, options: ReportOptions) -> String {
        let r = story.record
        var lines: [(Timestamp, Int, String, String)] = [] // time, packet, direction, text
        if options.verbose {
            for p in r.packets where options.includes(p.time) {
                lines.append((p.time, p.packetNumber, p.direction.arrow, packetLine(p.info)))
            }
            for f in r.frames where options.includes(f.time) {
                lines.append((f.time, f.packetNumber, f.direction.arrow, "  AMQP ch \(f.frame.channel) \(Describe.frame(f.frame))"))
            }
            for m in r.moments where options.includes(m.time) {
                if case .syn = m.kind { continue }
                if case .synAck = m.kind { continue }
                lines.append((m.time, m.packetNumber, m.direction.arrow, "  " + momentText(m)))
            }
            lines.sort { ($0.0, $0.1) < ($1.0, $1.1) }
        } else {
            for entry in r.timeline where options.includes(entry.time) {
                let line = entryLine(entry)
                lines.append((line.time, line.packet, line.arrow, line.text))
            }
        }
        guard !lines.isEmpty else { return "" }
        var out = "  timeline (UTC, seconds since the connection's first packet, packet number)\n"
        for (time, packet, arrow, text) in lines {
            out += "    \(Format.time(time).suffix(15))  \(Format.column(Format.relative(time, from: r.firstTime), 12, right: true))  "
            out += "\(arrow)  \(Format.column("#\(packet)", 7))  \(Format.safe(text, limit: 300))\n"
        }
        if r.timelineDropped > 0 && !options.verbose { out += "    ... \(r.timelineDropped) more entries not kept\n" }
        return out
    }

    /// One timeline entry as (time, packet, direction arrow, text): shared by reports and live capture.
    public static func entryLine(_ entry: TimelineEntry) -> (time: Timestamp, packet: Int, arrow: String, text: String) {
        switch entry {
        case .frame(let f): (f.time, f.packetNumber, f.direction.arrow, Describe.frame(f.frame))
        case .moment(let m): (m.time, m.packetNumber, m.direction.arrow, momentText(m))
        case .run(let run): (run.first, run.firstPacket, run.direction.arrow, runText(run))
        case .problem(let p): (p.time, p.packetNumber, p.direction.arrow, "\(p.kind.rawValue): \(p.reason)")
        }
    }

    static func runText(_ run: Run) -> String {
        var text = run.isHeartbeat ? "\(run.count) heartbeat\(run.count == 1 ? "" : "s")" : "\(run.count) × \(run.kind)"
        if run.count > 1 {
            let every = run.last.since(run.first) / Int64(run.count - 1)
            text += ", every \(Format.duration(nanoseconds: every)) (to #\(run.lastPacket))"
        }
        if run.bodyBytes > 0 { text += ", \(run.bodyBytes) body bytes" }
        return text
    }

    static func packetLine(_ p: PacketInfo) -> String {
        var text = "TCP [\(p.flags)] seq=\(p.sequence) ack=\(p.acknowledgment) win=\(p.window) len=\(p.payloadLength)"
        if p.isRetransmission { text += " retransmission" }
        if p.isOutOfOrder { text += " out-of-order" }
        if p.isKeepalive { text += " keepalive" }
        if p.isZeroWindow { text += " zero-window" }
        return text
    }

    static func momentText(_ m: TCPMoment) -> String {
        let side = m.direction.sender
        switch m.kind {
        case .syn: return "SYN from the \(side)"
        case .synAck: return "SYN-ACK from the \(side)"
        case .fin: return "FIN from the \(side) (half-close)"
        case .reset(let info):
            var text = "RST from the \(side)"
            if info.repeated { return text + " (repeated)" }
            text += "; the \(side.peer) was \(info.receiverState.rawValue)"
            if let e = ResetErrno.predict(info.receiverState) { text += ": its next socket call gets \(e.name) (\(e.errno))" }
            if !info.inWindow { text += " (out of window: may be ignored)" }
            return text
        case .gap(let length, let reason): return "\(length) bytes missing (\(reason.rawValue))"
        case .dataAfterFIN(let n): return "\(n) bytes after its own FIN"
        case .overlapConflict(let n): return "retransmission of \(n) bytes differs from the first copy"
        case .lateWrite(let n, let afterReset): return "\(n) bytes written after the \(side.peer)'s \(afterReset ? "RST" : "FIN")"
        }
    }

    static let tableHeader = ["id", "client", "server", "pkts c>s", "bytes c>s", "pkts s>c", "bytes s>c", "first", "last", "protocol"]

    static func tableRow(_ r: ConnectionRecord) -> [String] {
        ["\(r.info.id.rawValue)", r.info.client.description, r.info.server.description,
         "\(r.counters.clientToServer.packets)", "\(r.counters.clientToServer.wireBytes)", "\(r.counters.serverToClient.packets)", "\(r.counters.serverToClient.wireBytes)",
         Format.time(r.firstTime), Format.time(r.lastTime), protocolName(r.verdict)]
    }

    static func connectionTable(_ body: [[String]]) -> String {
        let rows = [tableHeader] + body
        let widths = (0..<tableHeader.count).map { col in rows.map { $0[col].count }.max() ?? 0 }
        let numeric: Set<Int> = [0, 3, 4, 5, 6]
        return rows.map { row in
            "  " + row.enumerated().map { Format.column($1, widths[$0], right: numeric.contains($0)) }.joined(separator: "  ")
                .trimmingTrailingSpaces()
        }.joined(separator: "\n") + "\n"
    }

    public static func protocolName(_ verdict: Verdict) -> String {
        switch verdict {
        case .amqp(let v): return v.rawValue
        case .amqpBySync: return "AMQP 0-9-1 (by frame sync)"
        case .amqp10(let v): return v.rawValue
        case .notAMQP: return "not AMQP"
        case .undetermined: return "no payload"
        }
    }

    /// "SYN client (#1), SYN-ACK server (#2), FIN client (#89), RST server (#91); reset".
    public static func tcpStory(_ r: ConnectionRecord) -> String {
        var parts: [String] = []
        if r.info.opening == .midstream { parts.append("picked up mid-stream (server chosen by \(r.info.roleEvidence.rawValue))") }
        for m in r.moments {
            let side = m.direction.sender.rawValue
            switch m.kind {
            case .syn: parts.append("SYN \(side) (#\(m.packetNumber))")
            case .synAck: parts.append("SYN-ACK \(side) (#\(m.packetNumber))")
            case .fin: parts.append("FIN \(side) (#\(m.packetNumber))")
            case .reset(let info): parts.append("RST \(side) (#\(m.packetNumber)\(info.repeated ? ", repeated" : "")\(info.inWindow ? "" : ", out of window"))")
            case .dataAfterFIN(let n): parts.append("\(n) bytes after own FIN \(side) (#\(m.packetNumber))")
            case .lateWrite(let n, _): parts.append("\(n) bytes late write \(side) (#\(m.packetNumber))")
            case .gap, .overlapConflict: break
            }
        }
        var text = parts.joined(separator: ", ")
        if let end = r.endReason { text += (text.isEmpty ? "" : "; ") + end.rawValue }
        return text
    }

    // MARK: JSON (schema: docs/json.md)

    /// The JSON document of captures analysed in memory (the CLI streams the same through `AnalyzeWriter`).
    public static func json(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> String {
        render(results, format: .json, options: options)
    }

    static func captureJSON(_ r: CaptureResult, connections: Int) -> JSON {
        let c = r.counts
        return .object([
            ("file", .string(r.path)),
            ("link_type", r.linkType.map { .int(Int64($0.rawValue)) } ?? .null),
            ("link_type_name", .optional(r.linkType?.name)),
            ("packets", .int(c.packets)),
            ("truncated_packets", .int(c.truncated)),
            ("tcp_packets", .int(c.tcp)),
            ("malformed_packets", .int(c.malformed)),
            ("ip_fragments", .int(c.fragments)),
            ("first_time", c.firstTime.map { .string(Format.rfc3339($0)) } ?? .null),
            ("last_time", c.lastTime.map { .string(Format.rfc3339($0)) } ?? .null),
            ("connections", .int(connections)),
            ("evicted_connections", .int(c.evictedConnections)),
            ("complete", .bool(r.error == nil)),
            ("error", .optional(r.error)),
        ])
    }

    static func directionJSON(_ k: DirectionCounters) -> JSON {
        .object([
            ("packets", .int(k.packets)), ("bytes", .int(k.wireBytes)), ("payload_bytes", .int(k.payloadBytes)),
            ("retransmissions", .int(k.retransmissions)), ("out_of_order", .int(k.outOfOrder)),
            ("gaps", .int(k.gaps)), ("gap_bytes", .int(Int64(k.gapBytes))),
        ])
    }

    static func framesJSON(_ f: FrameCounts) -> JSON {
        .object([("method", .int(f.method)), ("header", .int(f.header)), ("body", .int(f.body)), ("heartbeat", .int(f.heartbeat))])
    }

    static func directionName(_ d: Direction) -> String { d == .clientToServer ? "client_to_server" : "server_to_client" }

    public static func connectionJSON(_ story: Story, capture: Int, options: ReportOptions) -> JSON {
        let r = story.record
        let negotiated: JSON = story.negotiated.map { n in
            .object([
                ("heartbeat", .int(n.heartbeat)), ("frame_max", .optional(n.frameMax)), ("channel_max", .optional(n.channelMax)),
                ("inferred", .bool(n.inferred)),
            ])
        } ?? .null
        var members: [(String, JSON)] = [
            ("id", .int(r.info.id.rawValue)),
            ("capture", .int(capture)),
            ("client", .string(r.info.client.description)),
            ("server", .string(r.info.server.description)),
            ("protocol", .string(protocolName(r.verdict))),
            ("negotiated", negotiated),
            ("client_properties", story.client.map { Describe.json($0.table) } ?? .null),
            ("server_properties", story.server.map { Describe.json($0.table) } ?? .null),
            ("frames", .object([("client_to_server", framesJSON(r.frameCounts.clientToServer)), ("server_to_client", framesJSON(r.frameCounts.serverToClient))])),
            ("opening", .string(r.info.opening.rawValue)),
            ("first_time", .string(Format.rfc3339(r.firstTime))),
            ("last_time", .string(Format.rfc3339(r.lastTime))),
            ("ended", .string(story.ending)),
            ("tcp", .object([("client_to_server", directionJSON(r.counters.clientToServer)), ("server_to_client", directionJSON(r.counters.serverToClient))])),
            ("heartbeat_cadence_seconds", .object(Direction.allCases.map { d in
                (directionName(d), story.heartbeatCadence[d].map { .double(Double($0) / 1e9) } ?? .null)
            })),
            ("last_sent", .object(Direction.allCases.map { d in
                (directionName(d), .object([
                    ("frame", r.lastFrameTime[d].map { .string(Format.rfc3339($0)) } ?? .null),
                    ("frame_packet", r.lastFrameTime[d] == nil ? .null : .int(r.lastFramePacket[d])),
                    ("packet", r.lastPacketTime[d].map { .string(Format.rfc3339($0)) } ?? .null),
                ]))
            })),
            ("silences", .object(Direction.allCases.map { d in
                (directionName(d), .array(story.silences[d].map { g in
                    .object([("from", .string(Format.rfc3339(g.from))), ("to", .string(Format.rfc3339(g.to))),
                             ("seconds", .double(Double(g.length) / 1e9)), ("from_packet", .int(g.fromPacket)),
                             ("to_packet", g.toPacket > 0 ? .int(g.toPacket) : .null)])
                }))
            })),
            ("events", .array(eventsJSON(story, options: options))),
            ("diagnoses", .array(story.diagnoses.map(diagnosisJSON))),
        ]
        if options.showBodies {
            members.append(("messages", .array(r.messages.map { m in
                .object([
                    ("packet", .int(m.packetNumber)), ("time", .string(Format.rfc3339(m.time))),
                    ("direction", .string(directionName(m.direction))), ("channel", .int(Int64(m.message.channel))),
                    ("method", .string(Describe.method(m.message.method))), ("body_size", .int(Int64(m.message.bodySize))),
                    ("properties", .object(m.message.properties.present.map { ($0.name, Describe.json($0.value)) })),
                    ("body", m.message.body.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null),
                    ("incomplete", .bool(m.message.incomplete)),
                ])
            })))
        }
        if options.showFrames || options.verbose {
            members.append(("frame_list", .array(r.frames.filter { options.includes($0.time) }.map { f in
                .object([
                    ("packet", .int(f.packetNumber)), ("time", .string(Format.rfc3339(f.time))),
                    ("direction", .string(directionName(f.direction))),
                    ("channel", .int(Int64(f.frame.channel))), ("type", .int(Int64(f.frame.type))),
                    ("description", .string(Describe.frame(f.frame))),
                ])
            })))
        }
        return .object(members)
    }

    static func eventsJSON(_ story: Story, options: ReportOptions) -> [JSON] {
        story.record.timeline.filter { options.includes($0.time) }.map(entryJSON)
    }

    /// One timeline entry as a JSON object: shared by reports and live capture.
    public static func entryJSON(_ entry: TimelineEntry) -> JSON {
        var members: [(String, JSON)] = []
        switch entry {
        case .frame(let f):
            members = [("kind", .string("frame")), ("direction", .string(directionName(f.direction))), ("packet", .int(f.packetNumber)),
                       ("channel", .int(Int64(f.frame.channel))), ("description", .string(Describe.frame(f.frame)))]
            if case .method(let m) = f.frame.content { members.insert(("method", .string(m.name)), at: 1) }
        case .moment(let m):
            members = [("kind", .string(momentKind(m.kind))), ("direction", .string(directionName(m.direction))),
                       ("packet", .int(m.packetNumber)), ("description", .string(momentText(m)))]
            if case .reset(let info) = m.kind {
                members.append(("receiver_state", .string(info.receiverState.rawValue)))
                members.append(("errno", .optional(ResetErrno.predict(info.receiverState).map { $0.errno })))
            }
        case .run(let run):
            members = [("kind", .string("run")), ("direction", .string(directionName(run.direction))), ("packet", .int(run.firstPacket)),
                       ("last_packet", .int(run.lastPacket)), ("what", .string(run.kind)), ("count", .int(run.count)),
                       ("until", .string(Format.rfc3339(run.last))), ("description", .string(runText(run)))]
        case .problem(let p):
            members = [("kind", .string(p.kind.rawValue)), ("direction", .string(directionName(p.direction))),
                       ("packet", .int(p.packetNumber)), ("description", .string(p.reason))]
        }
        return .object([("time", .string(Format.rfc3339(entry.time)))] + members)
    }

    static func momentKind(_ kind: TCPMoment.Kind) -> String {
        switch kind {
        case .syn: "syn"
        case .synAck: "syn-ack"
        case .fin: "fin"
        case .reset: "rst"
        case .gap: "gap"
        case .dataAfterFIN: "data-after-fin"
        case .overlapConflict: "overlap-conflict"
        case .lateWrite: "late-write"
        }
    }

    public static func diagnosisJSON(_ d: Diagnosis) -> JSON {
        .object([
            ("code", .string(d.code.rawValue)),
            ("severity", .string(d.severity.rawValue)),
            ("summary", .string(d.summary)),
            ("side", .optional(d.side?.rawValue)),
            ("errno", .optional(d.errno?.errno)),
            ("errno_name", .optional(d.errno?.name)),
            ("rule", .optional(d.errno?.rule)),
            ("evidence", .array(d.evidence.map { e in
                .object([("packet", e.packetNumber > 0 ? .int(e.packetNumber) : .null), ("time", .string(Format.rfc3339(e.time))),
                         ("what", .string(e.what))])
            })),
            ("details", .array(d.details.map(JSON.string))),
            ("advice", .array(d.advice.map(JSON.string))),
        ])
    }
}

extension Direction {
    /// "c>s" or "s>c".
    var arrow: String { self == .clientToServer ? "c>s" : "s>c" }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
