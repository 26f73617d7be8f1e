// One outline of a connection's story, which every report follows: the heading, whether anything is wrong, the
// diagnoses (the cause first), the facts (who, what was agreed, how it ended, then the details by direction), and
// the key moments. Text, Markdown and HTML render this same outline in their own markup; each picks which facts fit
// its reader, but none decides on its own what a story says or in what order.
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS
import AMQPScopeTimeline

struct StoryOutline {
    /// The facts a story can state, in the order every report states them.
    enum FactKind: CaseIterable {
        case client, server, tls, sasl, negotiated, heartbeats, frames, links, flow, lastSent, silences, ended, span,
            tcp, sync
    }

    /// One fact: a label and its value, whose further lines (if any) continue it.
    struct Fact {
        var kind: FactKind
        var label: String
        var lines: [String]
    }

    let story: Story
    /// "1", "127.0.0.1:41836", "127.0.0.1:5672", "AMQP 0-9-1", and why it is not AMQP when it is not.
    let id: Int
    let client: String
    let server: String
    let protocolName: String
    let notAMQPReason: String?
    /// Nothing above info was found in a connection that carried AMQP.
    let healthy: Bool
    let facts: [Fact]

    init(_ story: Story) {
        self.story = story
        let r = story.record
        id = r.info.id.rawValue
        client = r.info.client.description
        server = r.info.server.description
        protocolName = AnalyzeReport.protocolName(r.verdict)
        if case .notAMQP(let why) = r.verdict { notAMQPReason = why } else { notAMQPReason = nil }
        healthy = r.isAMQP && story.diagnoses.allSatisfy { $0.severity == .info }
        facts = Self.facts(story)
    }

    var diagnoses: [Diagnosis] { story.diagnoses }

    /// The facts of these kinds, in outline order.
    func facts(_ kinds: Set<FactKind>) -> [Fact] { facts.filter { kinds.contains($0.kind) } }

    /// The key moments inside the report's time window.
    func moments(_ options: ReportOptions) -> [TimelineEntry] { Self.moments(of: story, options) }

    /// The key moments of a story, for a report that needs them without its facts (working those out costs more
    /// than writing the moments).
    static func moments(of story: Story, _ options: ReportOptions) -> [TimelineEntry] {
        let timeline = story.record.timeline.filter { options.includes($0.time) }
        guard !story.brokerLog.isEmpty else { return timeline }
        // The broker's log lines among the packets, by time (a line at a packet's time after it).
        let lines = story.brokerLog.filter { options.includes($0.time) }.map(TimelineEntry.log)
        return
            (timeline.enumerated().map { ($0.element, 0, $0.offset) }
            + lines.enumerated().map { ($0.element, 1, $0.offset) })
            .sorted { ($0.0.time, $0.1, $0.2) < ($1.0.time, $1.1, $1.2) }.map(\.0)
    }

    /// "TLS 1.3, TLS_AES_256_GCM_SHA384, SNI "localhost", handshake 12.1 ms; encrypted: heartbeats inferred from
    /// record sizes (25-byte records)".
    static func tlsLine(_ tls: TLSSummary, record r: ConnectionRecord) -> String {
        var parts: [String] = []
        if let version = tls.versionName {
            parts.append("TLS \(version), \(tls.cipherName ?? "unknown cipher")")
        } else {
            parts.append("TLS (no ServerHello in the capture: version and cipher unknown)")
        }
        if let name = tls.serverName { parts.append("SNI \"\(Format.safe(name, limit: 120))\"") }
        if tls.resumed { parts.append("session resumed") }
        if let hello = tls.helloTime, let done = tls.handshakeDoneTime {
            parts.append("handshake \(Format.duration(nanoseconds: done.since(hello)))")
        }
        var text = parts.joined(separator: ", ")
        if tls.decrypted {
            text += "; decrypted with the key log"
        } else if let length = tls.heartbeatRecordLength {
            text += "; encrypted: heartbeats inferred from record sizes (\(length)-byte records)"
        } else {
            text += "; encrypted: heartbeats cannot be inferred (cipher unknown or CBC)"
        }
        if let error = tls.decryptError { text += "; could not decrypt: \(Format.safe(error, limit: 300))" }
        if tls.alerts.isEmpty && r.endReason != nil && r.endReason != .captureEnded {
            text += "; no TLS alert (no close_notify) seen from either side before the connection ended"
        }
        return text
    }

    /// "40 publishes, 40 confirmed (p50 0.4 ms, p99 3.2 ms), 5 returned; 43 deliveries ...": the flow in a few lines.
    static func flowLines(_ f: FlowRecord) -> [String] {
        func latency(_ l: LatencySummary?) -> String {
            guard let l else { return "" }
            return " (p50 \(Format.milliseconds(l.p50)), p90 \(Format.milliseconds(l.p90)), p99 "
                + "\(Format.milliseconds(l.p99)), max \(Format.milliseconds(l.max)))"
        }
        var lines: [String] = []
        if f.publishes > 0 || f.returns > 0 {
            var text = "\(f.publishes) publish\(f.publishes == 1 ? "" : "es")"
            if f.confirmed + f.nacked + f.unconfirmedAtEnd > 0 {
                text += ", \(f.confirmed) confirmed\(latency(f.confirmLatency))"
                if f.nacked > 0 { text += ", \(f.nacked) nacked" }
                if f.unconfirmedAtEnd > 0 { text += ", \(f.unconfirmedAtEnd) unconfirmed at the end" }
            }
            if f.returns > 0 { text += ", \(f.returns) returned unroutable" }
            lines.append(text)
        }
        if f.deliveries > 0 || f.gets > 0 {
            var text = "\(f.deliveries) deliver\(f.deliveries == 1 ? "y" : "ies")"
            if f.gets > 0 { text += " (\(f.gets) basic.get, \(f.getEmpty) empty)" }
            text += ", \(f.ackedMessages) acked\(latency(f.ackLatency))"
            if f.nacks > 0 { text += ", \(f.nacks) nacks" }
            if f.rejects > 0 { text += ", \(f.rejects) rejects" }
            if f.redelivered > 0 { text += ", \(f.redelivered) redelivered" }
            text += "; at most \(f.maxUnacked) unacked" + (f.prefetch.map { " (prefetch \($0))" } ?? " (no prefetch)")
            lines.append(text)
        }
        if !f.atRisk.isEmpty {
            lines.append(
                "at risk when it died: \(f.atRisk.lost) lost, \(f.atRisk.unconfirmed) unconfirmed, "
                    + "\(f.atRisk.unacked) unacked")
        }
        if lines.isEmpty { lines.append("no messages") }
        return lines
    }

    private static func facts(_ story: Story) -> [Fact] {
        let r = story.record
        var out: [Fact] = []
        func add(_ kind: FactKind, _ label: String, _ lines: String...) {
            out.append(Fact(kind: kind, label: label, lines: lines))
        }
        if let client = story.client { add(.client, "client", AnalyzeReport.peerLine(client)) }
        if let server = story.server { add(.server, "server", AnalyzeReport.peerLine(server)) }
        let encrypted = r.tls.map { !$0.decrypted } ?? false
        if let tls = r.tls { add(.tls, "tls", Self.tlsLine(tls, record: r)) }
        if let s10 = story.amqp10, let sasl = s10.sasl {
            var text = sasl.mechanism.map { "mechanism \(Format.safe($0, limit: 40))" } ?? "no sasl-init seen"
            if let user = sasl.user { text += ", user \"\(Format.safe(user, limit: 60))\"" }
            if let o = sasl.outcome { text += "; outcome \(o.codeName) (\(o.code))" }
            if !sasl.offered.isEmpty {
                text += "; offered \(sasl.offered.map { Format.safe($0, limit: 40) }.joined(separator: ", "))"
            }
            add(.sasl, "sasl", text)
        }
        if let s10 = story.amqp10 {
            add(.negotiated, "negotiated", Describe.negotiated10(s10))
        } else if let n = story.negotiated {
            add(.negotiated, "negotiated", Describe.negotiated(n))
        } else if r.isAMQP {
            add(.negotiated, "negotiated", "unknown (no Tune/Tune-Ok in the capture, and no heartbeats to infer from)")
        }
        if r.isAMQP {
            let beats = Direction.allCases.map { d -> String in
                let cadence = story.heartbeatCadence[d].map { ", every \(Format.duration(nanoseconds: $0))" } ?? ""
                let count =
                    encrypted
                    ? r.tls?.inferredHeartbeats.map { "\($0[d])" } ?? "unknown" : "\(r.frameCounts[d].heartbeat)"
                return "\(d) \(count)\(cadence)"
            }
            let beats10 = Direction.allCases.map { d -> String in
                let cadence = story.heartbeatCadence[d].map { ", every \(Format.duration(nanoseconds: $0))" } ?? ""
                return "\(d) \(r.performativeCounts[d].empty) empty frames\(cadence)"
            }
            if story.amqp10 != nil {
                add(.heartbeats, "heartbeats", beats10.joined(separator: "; "))
            } else {
                add(
                    .heartbeats, "heartbeats",
                    beats.joined(separator: "; ")
                        + (encrypted ? " (inferred from the lengths of encrypted records)" : ""))
            }
            if let tls = r.tls, encrypted {
                let records = Direction.allCases.map { d in "\(d) \(tls.applicationRecords[d]) application data" }
                add(.frames, "records", records.joined(separator: "; ") + " (encrypted: no frames decoded)")
            } else if let s10 = story.amqp10 {
                let frames = Direction.allCases.map { d -> String in
                    let f = r.performativeCounts[d]
                    let named: [(String, Int)] = [
                        ("open", f.open), ("begin", f.begin), ("attach", f.attach), ("flow", f.flow),
                        ("transfer", f.transfer), ("disposition", f.disposition), ("detach", f.detach), ("end", f.end),
                        ("close", f.close), ("empty", f.empty), ("sasl", f.sasl),
                    ]
                    return "\(d) "
                        + named.filter { $0.1 > 0 }.map { "\($0.1) \($0.0)" }.joined(separator: ", ")
                        + ", \(f.messages) messages"
                }
                add(.frames, "frames", frames.joined(separator: "; "))
                for link in s10.links.prefix(20) {
                    let address =
                        link.address.map {
                            " \(link.clientRole == .sender ? "to" : "from") \(Format.safe($0, limit: 120))"
                        } ?? ""
                    add(
                        .links, "link",
                        "\"\(Format.safe(link.name, limit: 120))\" client \(link.clientRole)\(address): "
                            + Format.safe(link.ending, limit: 400))
                }
                if s10.links.count > 20 { add(.links, "link", "and \(s10.links.count - 20) more") }
            } else {
                let frames = Direction.allCases.map { d -> String in
                    let f = r.frameCounts[d]
                    return "\(d) \(f.method) method, \(f.header) header, \(f.body) body, \(f.messages) messages"
                }
                add(.frames, "frames", frames.joined(separator: "; "))
            }
            let unit = encrypted ? "record" : "frame"
            let last = Direction.allCases.map { d -> String in
                var parts: [String] = []
                if let t = r.lastFrameTime[d] {
                    parts.append("\(unit) #\(r.lastFramePacket[d]) at \(Format.time(t).suffix(15))")
                }
                if let t = r.lastPacketTime[d] { parts.append("packet at \(Format.time(t).suffix(15))") }
                return "\(d) " + (parts.isEmpty ? "nothing" : parts.joined(separator: ", "))
            }
            add(.lastSent, "last sent", last.joined(separator: "; "))
            for d in Direction.allCases where !story.silences[d].isEmpty {
                let list = story.silences[d].prefix(3).map { g in
                    "\(Format.duration(nanoseconds: g.length)) from #\(g.fromPacket)"
                        + (g.toPacket > 0 ? " to #\(g.toPacket)" : " to the end")
                }
                let more = story.silences[d].count > 3 ? " and \(story.silences[d].count - 3) more" : ""
                add(.silences, "silences", "\(d): \(list.joined(separator: ", "))\(more)")
            }
        }
        if let flow = r.flow, !flow.isEmpty {
            out.append(Fact(kind: .flow, label: "flow", lines: Self.flowLines(flow)))
        }
        add(.ended, "ended", story.ending)
        let end = r.endTime ?? r.lastTime
        add(
            .span, "span",
            "\(Format.time(r.firstTime)) to \(Format.time(end)) "
                + "(\(Format.duration(nanoseconds: end.since(r.firstTime))))"
        )
        var tcp = [AnalyzeReport.tcpStory(r)]
        for d in Direction.allCases {
            let k = r.counters[d]
            var extras: [String] = []
            if k.retransmissions > 0 { extras.append("\(k.retransmissions) retransmitted") }
            if k.outOfOrder > 0 { extras.append("\(k.outOfOrder) out of order") }
            if k.gaps > 0 { extras.append("\(k.gaps) gaps (\(k.gapBytes) bytes missing)") }
            if k.keepalives > 0 { extras.append("\(k.keepalives) keepalives") }
            if k.zeroWindows > 0 { extras.append("\(k.zeroWindows) zero-window") }
            if k.overlapConflicts > 0 { extras.append("\(k.overlapConflicts) conflicting overlaps") }
            tcp.append(
                "\(d): \(k.packets) packets, \(k.payloadBytes) payload bytes"
                    + (extras.isEmpty ? "" : ", " + extras.joined(separator: ", ")))
        }
        out.append(Fact(kind: .tcp, label: "tcp", lines: tcp))
        for sync in r.synchronizations.prefix(3) {
            add(
                .sync, "sync",
                "\(sync.direction) frames found at packet \(sync.packetNumber) after skipping \(sync.skipped) bytes")
        }
        return out
    }
}
