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
    public var showFrames = false
    public var showBodies = false
    public init() {}
}

public enum AnalyzeReport {
    // MARK: Text

    public static func text(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> String {
        var out = ""
        for (i, result) in results.enumerated() {
            if i > 0 { out += "\n" }
            out += captureText(result, options: options)
        }
        return out
    }

    static func captureText(_ r: CaptureResult, options: ReportOptions) -> String {
        var out = "capture \(Format.safe(r.path))\n"
        if r.unreadable {
            out += "  error: \(r.error ?? "unreadable")\n"
            return out
        }
        let c = r.counts
        out += "  link type    \(r.linkType?.name ?? "unknown")\n"
        out += "  packets      \(c.packets) (\(c.truncated) truncated by snap length, \(c.tcp) TCP"
        if c.otherProtocols > 0 { out += ", \(c.otherProtocols) other" }
        if c.fragments > 0 { out += ", \(c.fragments) IP fragments skipped" }
        if c.malformed > 0 { out += ", \(c.malformed) malformed" }
        out += ")\n"
        if let first = c.firstTime, let last = c.lastTime {
            out += "  time span    \(Format.time(first)) to \(Format.time(last)) UTC (\(Format.duration(nanoseconds: last.since(first))))\n"
        }
        let amqp = r.records.filter(\.isAMQP).count
        out += "  connections  \(r.records.count) TCP, \(amqp) AMQP\n"
        for (packet, reason) in c.firstMalformed.prefix(5) { out += "  malformed packet \(packet): \(reason)\n" }
        if let error = r.error { out += "  stopped early: \(error)\n" }
        guard !r.records.isEmpty else { return out }

        out += "\n" + connectionTable(r.records)
        for record in r.records {
            out += "\n" + connectionText(record, options: options)
        }
        return out
    }

    static func connectionTable(_ records: [ConnectionRecord]) -> String {
        let header = ["id", "client", "server", "pkts c>s", "bytes c>s", "pkts s>c", "bytes s>c", "first", "last", "protocol"]
        var rows: [[String]] = [header]
        for r in records {
            rows.append([
                "\(r.info.id.rawValue)", r.info.client.description, r.info.server.description,
                "\(r.counters[0].packets)", "\(r.counters[0].wireBytes)", "\(r.counters[1].packets)", "\(r.counters[1].wireBytes)",
                Format.time(r.firstTime), Format.time(r.lastTime), protocolName(r.verdict),
            ])
        }
        let widths = (0..<header.count).map { col in rows.map { $0[col].count }.max() ?? 0 }
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

    static func connectionText(_ r: ConnectionRecord, options: ReportOptions) -> String {
        var out = "connection \(r.info.id.rawValue): client \(r.info.client) -> server \(r.info.server)"
        out += r.info.opening == .handshake ? " (handshake seen)\n" : " (joined mid-stream; server chosen by \(r.info.roleEvidence.rawValue))\n"
        out += "  tcp      \(tcpStory(r))\n"
        for d in Direction.allCases {
            let k = r.counters[d.rawValue]
            var extras: [String] = []
            if k.retransmissions > 0 { extras.append("\(k.retransmissions) retransmitted") }
            if k.outOfOrder > 0 { extras.append("\(k.outOfOrder) out of order") }
            if k.gaps > 0 { extras.append("\(k.gaps) gaps (\(k.gapBytes) bytes missing)") }
            if k.keepalives > 0 { extras.append("\(k.keepalives) keepalives") }
            if k.zeroWindows > 0 { extras.append("\(k.zeroWindows) zero-window") }
            if k.overlapConflicts > 0 { extras.append("\(k.overlapConflicts) conflicting overlaps") }
            out += "  \(d == .clientToServer ? "c>s" : "s>c")      \(k.packets) packets, \(k.payloadBytes) payload bytes"
            out += extras.isEmpty ? "\n" : ", " + extras.joined(separator: ", ") + "\n"
        }
        out += "  protocol \(protocolName(r.verdict))"
        if case .notAMQP(let why) = r.verdict { out += ": \(why)" }
        out += "\n"
        if r.isAMQP {
            for d in Direction.allCases {
                let f = r.frameCounts[d.rawValue]
                out += "  \(d == .clientToServer ? "c>s" : "s>c")      \(f.method) method, \(f.header) header, \(f.body) body, \(f.heartbeat) heartbeat frames"
                out += f.messages > 0 ? ", \(f.messages) messages\n" : "\n"
            }
            for sync in r.synchronizations.prefix(5) {
                out += "  sync     \(sync.direction) frames found at packet \(sync.packetNumber) after skipping \(sync.skipped) bytes\n"
            }
            for p in r.problems.prefix(10) {
                out += "  \(p.kind == .malformed ? "malformed" : "violation") packet \(p.packetNumber) \(p.direction): \(Format.safe(p.reason))\n"
            }
            if r.problemCount > 10 { out += "  ... \(r.problemCount - 10) more problems\n" }
        }
        if options.showFrames && !r.frames.isEmpty {
            out += "  frames\n"
            for f in r.frames {
                out += "    \(Format.column(String(f.packetNumber), 6, right: true))  \(Format.time(f.time))  "
                out += "\(Format.relative(f.time, from: r.firstTime))  \(f.direction == .clientToServer ? "c>s" : "s>c")  "
                out += "ch \(Format.column(String(f.frame.channel), 3, right: true))  \(Describe.frame(f.frame))\n"
            }
        }
        return out
    }

    /// "SYN client, SYN-ACK server, FIN server, RST client; still open at capture end".
    public static func tcpStory(_ r: ConnectionRecord) -> String {
        var parts: [String] = []
        if r.info.opening == .midstream { parts.append("picked up mid-stream") }
        for m in r.moments {
            let side = m.direction.sender.rawValue
            switch m.kind {
            case .syn: parts.append("SYN \(side) (#\(m.packetNumber))")
            case .synAck: parts.append("SYN-ACK \(side) (#\(m.packetNumber))")
            case .fin: parts.append("FIN \(side) (#\(m.packetNumber))")
            case .reset(let info): parts.append("RST \(side) (#\(m.packetNumber)\(info.repeated ? ", repeated" : "")\(info.inWindow ? "" : ", out of window"))")
            case .dataAfterFIN(let n): parts.append("\(n) bytes after own FIN \(side) (#\(m.packetNumber))")
            case .gap, .overlapConflict: break
            }
        }
        var text = parts.joined(separator: ", ")
        if let end = r.endReason { text += "; \(end.rawValue)" }
        return text
    }

    // MARK: JSON

    public static func json(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> JSON {
        var captures: [JSON] = []
        var connections: [JSON] = []
        for (index, r) in results.enumerated() {
            captures.append(captureJSON(r))
            for record in r.records { connections.append(connectionJSON(record, capture: index, options: options)) }
        }
        return .object([("captures", .array(captures)), ("connections", .array(connections))])
    }

    static func captureJSON(_ r: CaptureResult) -> JSON {
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
            ("complete", .bool(r.error == nil)),
            ("error", .optional(r.error)),
        ])
    }

    static func direction(_ k: DirectionCounters) -> JSON {
        .object([
            ("packets", .int(k.packets)), ("bytes", .int(k.wireBytes)), ("payload_bytes", .int(k.payloadBytes)),
            ("retransmissions", .int(k.retransmissions)), ("out_of_order", .int(k.outOfOrder)),
            ("gaps", .int(k.gaps)), ("gap_bytes", .int(Int64(k.gapBytes))),
        ])
    }

    static func frames(_ f: FrameCounts) -> JSON {
        .object([("method", .int(f.method)), ("header", .int(f.header)), ("body", .int(f.body)), ("heartbeat", .int(f.heartbeat))])
    }

    static func connectionJSON(_ r: ConnectionRecord, capture: Int, options: ReportOptions) -> JSON {
        var members: [(String, JSON)] = [
            ("id", .int(r.info.id.rawValue)),
            ("capture", .int(capture)),
            ("client", .string(r.info.client.description)),
            ("server", .string(r.info.server.description)),
            ("protocol", .string(protocolName(r.verdict))),
            ("opening", .string(r.info.opening.rawValue)),
            ("first_time", .string(Format.rfc3339(r.firstTime))),
            ("last_time", .string(Format.rfc3339(r.lastTime))),
            ("end", .optional(r.endReason?.rawValue)),
            ("tcp", .object([
                ("client_to_server", direction(r.counters[0])),
                ("server_to_client", direction(r.counters[1])),
                ("moments", .array(r.moments.map(momentJSON))),
            ])),
            ("frames", .object([("client_to_server", frames(r.frameCounts[0])), ("server_to_client", frames(r.frameCounts[1]))])),
        ]
        if options.showFrames {
            members.append(("frame_list", .array(r.frames.map { f in
                .object([
                    ("packet", .int(f.packetNumber)), ("time", .string(Format.rfc3339(f.time))),
                    ("direction", .string(f.direction == .clientToServer ? "client_to_server" : "server_to_client")),
                    ("channel", .int(Int64(f.frame.channel))), ("type", .int(Int64(f.frame.type))),
                    ("description", .string(Describe.frame(f.frame))),
                ])
            })))
        }
        return .object(members)
    }

    static func momentJSON(_ m: TCPMoment) -> JSON {
        var members: [(String, JSON)] = [
            ("packet", .int(m.packetNumber)), ("time", .string(Format.rfc3339(m.time))), ("side", .string(m.direction.sender.rawValue)),
        ]
        switch m.kind {
        case .syn: members.insert(("kind", .string("syn")), at: 0)
        case .synAck: members.insert(("kind", .string("syn-ack")), at: 0)
        case .fin: members.insert(("kind", .string("fin")), at: 0)
        case .reset(let info):
            members.insert(("kind", .string("rst")), at: 0)
            members.append(("in_window", .bool(info.inWindow)))
            members.append(("receiver_state", .string(info.receiverState.rawValue)))
        case .gap(let length, let reason):
            members.insert(("kind", .string("gap")), at: 0)
            members.append(("length", .int(Int64(length))))
            members.append(("reason", .string(reason.rawValue)))
        case .dataAfterFIN(let n):
            members.insert(("kind", .string("data-after-fin")), at: 0)
            members.append(("length", .int(n)))
        case .overlapConflict(let n):
            members.insert(("kind", .string("overlap-conflict")), at: 0)
            members.append(("length", .int(n)))
        }
        return .object(members)
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
