// The text report of `analyze`: each connection's story in the outline every report follows, its timeline, the
// capture's summary and its table of connections.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

extension AnalyzeReport {
    /// The whole report of captures analysed in memory (the CLI streams the same through `AnalyzeWriter`).
    public static func text(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> String {
        render(results, format: .text, options: options)
    }

    /// The capture's summary: packets, time span, link type, tally of connections and diagnoses.
    static func summaryText(_ r: CaptureResult, connections: Int, amqp: Int, tally: [Diagnosis.Severity: Int]) -> String
    {
        if r.unreadable { return "  error: \(Format.safe(r.error ?? "unreadable"))\n" }
        let c = r.counts
        var out = "  \(c.packets) packets"
        if let first = c.firstTime, let last = c.lastTime {
            out +=
                " from \(Format.time(first)) to \(Format.time(last)) UTC "
                + "(\(Format.duration(nanoseconds: last.since(first))))"
        }
        out += ", link type \(r.linkType?.name ?? "unknown")\n"
        if !r.parts.isEmpty {
            out += "  read as one capture: \(r.parts.count) rotated files, in time order\n"
            for p in r.parts {
                out += "    \(Format.safe(p.path)): \(p.packets) packets"
                if let first = p.firstTime, let last = p.lastTime {
                    out += " from \(Format.time(first)) to \(Format.time(last))"
                }
                if let error = p.error { out += "; \(Format.safe(error))" }
                out += "\n"
            }
        }
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
            out +=
                "  \(c.evictedConnections) connections were ended early: more were open at once than "
                + "--max-connections allows\n"
        }
        if let error = r.error { out += "  reading stopped early: \(Format.safe(error))\n" }
        return out
    }

    /// The facts the text report states: all of them but the span (its timeline gives the times).
    static let textFacts = Set(StoryOutline.FactKind.allCases).subtracting([.span])

    static func storyText(_ story: Story, options: ReportOptions) -> String {
        let outline = StoryOutline(story)
        var out = "connection \(outline.id): \(outline.client) -> \(outline.server), \(outline.protocolName)"
        if let why = outline.notAMQPReason { out += " (\(why))" }
        out += "\n"
        // The diagnoses first, in plain words.
        if outline.healthy { out += "  no problems found\n" }
        for d in outline.diagnoses {
            // A consequence sits under its cause: "-> " and its own lines two columns further in.
            let (head, body) = d.consequenceOf == nil ? ("  ", "      ") : ("    -> ", "          ")
            out +=
                "\(head)\(severityLabel(d.severity, colour: options.colour)) \(d.code): "
                + "\(Format.safe(d.summary, limit: 2000))\n"
            for detail in d.details { out += "\(body)\(Format.safe(detail, limit: 2000))\n" }
            let evidence = d.evidence.map { e in
                (e.packetNumber > 0 ? "#\(e.packetNumber) " : "")
                    + "\(Format.time(e.time).suffix(15)) \(Format.safe(e.what))"
            }
            if !evidence.isEmpty { out += "\(body)evidence: " + evidence.joined(separator: "; ") + "\n" }
            for advice in d.advice { out += "\(body)advice: \(advice)\n" }
        }
        // Who, what was agreed, how it ended, and the details by direction.
        for fact in outline.facts(textFacts) {
            out += "  " + Format.column(fact.label, 10) + " " + fact.lines[0] + "\n"
            for line in fact.lines.dropFirst() { out += "             \(line)\n" }
        }
        out += timelineText(story, options: options)
        if options.showBodies { out += messagesText(story.record) }
        return out
    }

    /// Messages with their bodies: only with --show-bodies, escaped, at most 2000 characters each.
    static func messagesText(_ r: ConnectionRecord) -> String {
        if !r.deliveries.isEmpty {
            var out = "  deliveries (sections shown because --show-bodies was given)\n"
            for m in r.deliveries {
                let d = m.message
                out +=
                    "    #\(m.packetNumber)  \(m.direction.arrow)  ch \(d.channel) handle \(d.handle)"
                    + (d.deliveryID.map { " delivery \($0)" } ?? "")
                    + "  \(d.payloadBytes) bytes in \(d.frames) transfer\(d.frames == 1 ? "" : "s")"
                    + (d.settled ? ", settled" : "") + (d.aborted ? ", aborted" : "")
                    + (d.incomplete ? " (incomplete)" : "") + "\n"
                for section in d.sections {
                    let value = Describe.json(section.value).serialized()
                    out += "      \(section.name): \(Format.safe(value, limit: 2000))\n"
                }
            }
            return out
        }
        guard !r.messages.isEmpty else { return "" }
        var out = "  messages (bodies shown because --show-bodies was given)\n"
        for m in r.messages {
            out +=
                "    #\(m.packetNumber)  \(m.direction.arrow)  ch \(m.message.channel)  "
                + "\(Describe.method(m.message.method))  "
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
        if p.name == nil, let id = p.containerID { text = "container-id \"\(Format.safe(id, limit: 120))\"" }
        if let platform = p.platform { text += " (\(Format.safe(platform, limit: 60)))" }
        if let name = p.connectionName { text += ", connection_name \"\(Format.safe(name, limit: 120))\"" }
        return text
    }

    /// The timeline as lines: UTC time, seconds since the connection's first packet, direction, packet, what.
    static func timelineText(_ story: Story, options: ReportOptions) -> String {
        let r = story.record
        var lines: [(Timestamp, Int, String, String)] = []  // time, packet, direction, text
        if options.verbose {
            for p in r.packets where options.includes(p.time) {
                lines.append((p.time, p.packetNumber, p.direction.arrow, packetLine(p.info)))
            }
            for f in r.frames where options.includes(f.time) {
                lines.append(
                    (
                        f.time, f.packetNumber, f.direction.arrow,
                        "  AMQP ch \(f.frame.channel) \(Describe.frame(f.frame))"
                    ))
            }
            for m in r.moments where options.includes(m.time) {
                if case .syn = m.kind { continue }
                if case .synAck = m.kind { continue }
                lines.append((m.time, m.packetNumber, m.direction.arrow, "  " + momentText(m)))
            }
            for l in story.brokerLog where options.includes(l.time) {
                let line = entryLine(.log(l))
                lines.append((line.time, line.packet, line.arrow, line.text))
            }
            lines.sort { ($0.0, $0.1) < ($1.0, $1.1) }
        } else {
            for entry in StoryOutline.moments(of: story, options) {
                let line = entryLine(entry)
                lines.append((line.time, line.packet, line.arrow, line.text))
            }
        }
        guard !lines.isEmpty else { return "" }
        var out = "  timeline (UTC, seconds since the connection's first packet, packet number)\n"
        for (time, packet, arrow, text) in lines {
            out +=
                "    \(Format.time(time).suffix(15))  "
                + "\(Format.column(Format.relative(time, from: r.firstTime), 12, right: true))  "
            out += "\(arrow)  \(Format.column(packet > 0 ? "#\(packet)" : "", 7))  \(Format.safe(text, limit: 300))\n"
        }
        if r.timelineDropped > 0 && !options.verbose { out += "    ... \(r.timelineDropped) more entries not kept\n" }
        return out
    }

    static let tableHeader = [
        "id", "client", "server", "pkts c>s", "bytes c>s", "pkts s>c", "bytes s>c", "first", "last", "protocol",
    ]

    static func tableRow(_ r: ConnectionRecord) -> [String] {
        [
            "\(r.info.id.rawValue)", r.info.client.description, r.info.server.description,
            "\(r.counters.clientToServer.packets)", "\(r.counters.clientToServer.wireBytes)",
            "\(r.counters.serverToClient.packets)", "\(r.counters.serverToClient.wireBytes)",
            Format.time(r.firstTime), Format.time(r.lastTime), protocolName(r.verdict),
        ]
    }

    static func connectionTable(_ body: [[String]]) -> String {
        let rows = [tableHeader] + body
        let widths = (0..<tableHeader.count).map { col in rows.map { $0[col].count }.max() ?? 0 }
        let numeric: Set<Int> = [0, 3, 4, 5, 6]
        return rows.map { row in
            "  "
                + row.enumerated().map { Format.column($1, widths[$0], right: numeric.contains($0)) }.joined(
                    separator: "  "
                )
                .trimmingTrailingSpaces()
        }.joined(separator: "\n") + "\n"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
