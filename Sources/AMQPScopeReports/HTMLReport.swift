// `amqpscope report`: one self-contained HTML file for an incident review. No scripts, no fonts, no network
// (a Content-Security-Policy forbids them); everything taken from the capture is escaped.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

package enum HTML {
    /// Escapes text for HTML element content and attribute values; control characters become visible escapes.
    package static func escape(_ text: String, limit: Int = 500) -> String {
        var out = ""
        for scalar in Format.safe(text, limit: limit).unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// Maps capture time to x: linear, except quiet stretches, which are squeezed to a fixed width with a visible break.
struct TimeScale {
    struct Segment {
        var from: Int64
        var to: Int64
        var x: Double
        var width: Double
        var compressed: Bool
    }
    let start: Timestamp
    let segments: [Segment]
    static let breakWidth = 36.0

    init(start: Timestamp, end: Timestamp, events: [Timestamp], x: Double, width: Double) {
        self.start = start
        // Positions are relative nanoseconds; the proportions are worked out in Double so that no span, however
        // absurd a capture's timestamps, can overflow.
        let total = max(end.since(start), 1_000_000)
        let threshold = max(Int64(10_000_000_000), Int64(Double(total) * 0.15))
        let times = ([Int64(0), total] + events.map { min(max($0.since(start), 0), total) }).sorted()
        var quiet: [(Int64, Int64)] = []
        for (a, b) in zip(times, times.dropFirst()) where b - a > threshold { quiet.append((a, b)) }
        let compressedTotal = quiet.reduce(0.0) { $0 + Double($1.1 - $1.0) }
        let linearWidth = max(width - Double(quiet.count) * Self.breakWidth, width * 0.3)
        let perNano = linearWidth / max(Double(total) - compressedTotal, 1)
        var segments: [Segment] = []
        var cursor: Int64 = 0
        var cx = x
        for (a, b) in quiet {
            if a > cursor {
                let w = Double(a - cursor) * perNano
                segments.append(Segment(from: cursor, to: a, x: cx, width: w, compressed: false))
                cx += w
            }
            segments.append(Segment(from: a, to: b, x: cx, width: Self.breakWidth, compressed: true))
            cx += Self.breakWidth
            cursor = b
        }
        segments.append(
            Segment(from: cursor, to: total, x: cx, width: Double(total - cursor) * perNano, compressed: false))
        self.segments = segments
    }

    func x(_ t: Timestamp) -> Double {
        let r = t.since(start)
        for s in segments where r <= s.to {
            let fraction = s.to == s.from ? 0 : Double(max(r - s.from, 0)) / Double(s.to - s.from)
            return s.x + fraction * s.width
        }
        let last = segments[segments.count - 1]
        return last.x + last.width
    }
}

/// The self-contained HTML incident-review report.
public enum HTMLReport {
    /// The whole page for these captures; `version` is amqpscope's, for the header.
    public static func render(_ results: [CaptureResult], options: ReportOptions = ReportOptions(), version: String)
        -> String
    {
        let stories = results.map { AnalyzeReport.stories($0, options: options) }
        let all = stories.flatMap { $0 }
        let diagnoses = all.flatMap(\.diagnoses)
        var out = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>AMQP incident review</title>
            <style>\(css)</style></head><body>
            <header><h1>AMQP incident review</h1><p class="meta">amqpscope \(HTML.escape(version)) · times in \
            UTC</p></header>

            """
        // The summary.
        out += "<section class=\"summary\"><h2>Summary</h2><table><thead><tr><th>capture</th><th>packets</th>"
        out += "<th>from</th><th>to</th><th>connections</th><th>AMQP</th><th>read</th></tr></thead><tbody>"
        for r in results {
            let c = r.counts
            out += "<tr><td class=\"name\">\(HTML.escape(r.path))</td><td>\(c.packets)</td>"
            let first = c.firstTime.map { Format.time($0) } ?? ""
            let last = c.lastTime.map { Format.time($0) } ?? ""
            out += "<td>\(first)</td><td>\(last)</td>"
            out += "<td>\(r.records.count)</td><td>\(r.records.filter(\.isAMQP).count)</td>"
            let read = r.error.map { "<span class=\"sev error\">stopped early</span> " + HTML.escape($0) } ?? "complete"
            out += "<td>\(read)</td></tr>"
        }
        out += "</tbody></table><p class=\"tally\">"
        for severity in [Diagnosis.Severity.error, .warning, .info] {
            let n = diagnoses.filter { $0.severity == severity }.count
            out +=
                "<span class=\"sev \(severity.rawValue)\">\(n) "
                + "\(severity.rawValue)\(n == 1 ? "" : severity == .info ? "" : "s")</span> "
        }
        out += "</p>"
        // Many connections, one incident: the waves first, then every connection on one time axis.
        let incidents = stories.map(IncidentFinder.incidents(of:))
        if incidents.contains(where: { !$0.isEmpty }) {
            out += "<h3>Incidents</h3><ul class=\"incidents\">"
            for (c, list) in incidents.enumerated() {
                let byID = Dictionary(stories[c].map { ($0.record.info.id, $0) }, uniquingKeysWith: { a, _ in a })
                for i in list {
                    out += "<li>\(HTML.escape(i.summary, limit: 600))<br><span class=\"members\">connections "
                    out += i.connections.prefix(200).map { id in
                        byID[id].map { "<a href=\"#\(anchor($0))\">\(id.rawValue)</a>" } ?? "\(id.rawValue)"
                    }.joined(separator: ", ")
                    if i.connections.count > 200 { out += " and \(i.connections.count - 200) more" }
                    out += "</span></li>"
                }
            }
            out += "</ul>"
        }
        if all.count > OverviewSVG.minimumConnections {
            out += OverviewSVG.render(all, incidents: incidents.flatMap { $0 })
        }
        // The connections with problems that no incident already names; a long list folds.
        let inIncidents = Set(
            incidents.enumerated().flatMap { c, list in list.flatMap { $0.connections.map { "\(c) \($0.rawValue)" } } })
        let flagged = stories.enumerated().flatMap { c, list in
            list.filter {
                ($0.worstSeverity ?? .info) > .info && !inIncidents.contains("\(c) \($0.record.info.id.rawValue)")
            }
        }
        if !flagged.isEmpty {
            let fold = flagged.count > 20
            if fold { out += "<details><summary>\(flagged.count) more connections with problems</summary>" }
            out += "<ul class=\"index\">"
            for s in flagged {
                out += "<li><a href=\"#\(anchor(s))\">connection \(s.record.info.id.rawValue)</a>: "
                out += s.diagnoses.filter { $0.severity > .info }.map {
                    "<span class=\"sev \($0.severity.rawValue)\">\($0.code)</span>"
                }.joined(separator: " ")
                out += "</li>"
            }
            out += "</ul>"
            if fold { out += "</details>" }
        }
        out += "</section>\n"
        // The connections: the ones with problems open, healthy ones folded when there are many.
        let fold = all.count > 3
        for (fileIndex, list) in stories.enumerated() {
            for story in list {
                let healthy = (story.worstSeverity ?? .info) == .info
                out += connection(
                    story, file: results.count > 1 ? results[fileIndex].path : nil, folded: fold && healthy,
                    options: options)
            }
        }
        out += "</body></html>\n"
        return out
    }

    static func anchor(_ s: Story) -> String { "c\(s.record.info.id.rawValue)-\(s.record.firstTime.nanoseconds)" }

    /// The facts the review page states.
    static let facts: Set<StoryOutline.FactKind> = [
        .client, .server, .tls, .sasl, .negotiated, .links, .flow, .ended, .span,
    ]

    static func connection(_ story: Story, file: String?, folded: Bool, options: ReportOptions) -> String {
        let outline = StoryOutline(story)
        var head = "connection \(outline.id): \(HTML.escape(outline.client)) → \(HTML.escape(outline.server))"
        head += " <span class=\"proto\">\(HTML.escape(outline.protocolName))</span>"
        if let worst = story.worstSeverity, worst > .info {
            head += " <span class=\"sev \(worst.rawValue)\">\(worst.rawValue)</span>"
        }
        var out = "<section class=\"connection\" id=\"\(anchor(story))\">"
        out +=
            folded
            ? "<details><summary><h2>\(head) <span class=\"healthy\">healthy</span></h2></summary>" : "<h2>\(head)</h2>"
        if let file { out += "<p class=\"meta\">\(HTML.escape(file))</p>" }
        // Diagnoses first.
        if outline.healthy { out += "<p class=\"ok\">No problems found.</p>" }
        out += "<ol class=\"diagnoses\">"
        for d in outline.diagnoses {
            out +=
                "<li class=\"\(d.severity.rawValue)\(d.consequenceOf == nil ? "" : " consequence")\"><p>"
                + (d.consequenceOf == nil ? "" : "then ") + "<span class=\"sev "
                + "\(d.severity.rawValue)\">\(d.severity.rawValue)</span> "
            out += "<code>\(d.code)</code> \(HTML.escape(d.summary, limit: 3000))</p>"
            if !d.details.isEmpty {
                out += "<ul>" + d.details.map { "<li>\(HTML.escape($0, limit: 3000))</li>" }.joined() + "</ul>"
            }
            if !d.evidence.isEmpty {
                out +=
                    "<p class=\"evidence\">evidence: "
                    + d.evidence.map { HTML.escape(Describe.evidence($0)) }.joined(separator: "; ") + "</p>"
            }
            for advice in d.advice { out += "<p class=\"advice\">\(HTML.escape(advice, limit: 3000))</p>" }
            out += "</li>"
        }
        out += "</ol>"
        // Who, what was agreed, how it ended.
        out += "<dl class=\"facts\">"
        for fact in outline.facts(facts) {
            out += "<dt>\(fact.label)</dt><dd>\(HTML.escape(fact.lines.joined(separator: " ")))</dd>"
        }
        out += "</dl>"
        out +=
            "<figure>" + TimelineSVG.render(story, options: options) + "<figcaption>" + legend
            + "</figcaption></figure>"
        if let flow = story.record.flow, !flow.isEmpty { out += FlowSVG.render(flow, story: story) }
        // Key moments as a table.
        let entries = outline.moments(options)
        if !entries.isEmpty {
            out +=
                "<details class=\"moments\"><summary>key moments "
                + "(\(entries.count))</summary><table><thead><tr><th>time</th><th>+s</th>"
            out += "<th>dir</th><th>packet</th><th>what</th></tr></thead><tbody>"
            for entry in entries.prefix(1000) {
                let line = AnalyzeReport.entryLine(entry)
                let since = Format.relative(line.time, from: story.record.firstTime)
                out += "<tr><td>\(Format.time(line.time).suffix(15))</td><td>\(since)</td>"
                out +=
                    "<td>\(line.arrow)</td><td>\(line.packet)</td><td>\(HTML.escape(line.text, limit: 400))</td></tr>"
            }
            out += "</tbody></table></details>"
        }
        out += folded ? "</details></section>\n" : "</section>\n"
        return out
    }

    static let legend = """
        <span class="key"><svg width="10" height="12"><line x1="5" y1="0" x2="5" y2="12" class="hb"/></svg> \
        heartbeat</span>
        <span class="key"><svg width="12" height="12"><circle cx="6" cy="6" r="4" class="m-conn"/></svg> \
        connection/channel method</span>
        <span class="key"><svg width="12" height="12"><rect x="1" y="3" width="10" height="6" class="run"/></svg> \
        routine traffic</span>
        <span class="key"><svg width="12" height="12"><circle cx="6" cy="6" r="4" class="m-err"/></svg> error \
        close</span>
        <span class="key"><svg width="12" height="12"><path d="M2 10 L6 2 L10 10 Z" class="fin"/></svg> FIN</span>
        <span class="key"><svg width="12" height="12"><path d="M2 2 L10 10 M10 2 L2 10" class="rst"/></svg> RST</span>
        <span class="key"><svg width="14" height="12"><rect x="0" y="2" width="14" height="8" class="idle"/></svg> \
        silence</span>
        <span class="key"><svg width="10" height="12"><line x1="5" y1="0" x2="5" y2="12" class="deadline"/></svg> \
        heartbeat deadline</span>
        """

    static let css = """
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1180px;\
        padding:16px;color:#1d2330;background:#fff}
        h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 8px;display:inline}
        .meta{color:#667;margin:0 0 8px}section{border:1px solid #d8dce6;border-radius:6px;padding:12px 14px;\
        margin:14px 0;overflow-wrap:anywhere}
        table{border-collapse:collapse;width:100%;table-layout:fixed}td,th{border-bottom:1px solid #eceef3;\
        padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
        th{background:#f5f6f9;font-weight:600}td.name{font-family:ui-monospace,monospace}
        .sev{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;\
        text-transform:uppercase}
        .sev.error{background:#c62828;color:#fff}.sev.warning{background:#f0a020;color:#221}\
        .sev.info{background:#dfe6f3;color:#223}
        .proto{color:#556;font-weight:400;font-size:13px}.healthy{color:#2e7d32;font-size:13px;font-weight:400}
        ol.diagnoses{padding-left:20px}ol.diagnoses>li{margin:6px 0}ol.diagnoses>li.consequence{margin-left:28px;list-style:none}ol.diagnoses p{margin:2px 0}
        .evidence{color:#445;font-size:13px}.advice{color:#1b5e20;font-size:13px}.ok{color:#2e7d32}
        dl.facts{display:grid;grid-template-columns:110px 1fr;gap:2px 10px;margin:8px 0}dt{color:#667}dd{margin:0}
        figure{margin:8px 0}figcaption{font-size:12px;color:#556}.key{margin-right:12px;white-space:nowrap}
        svg.timeline{width:100%;height:auto;background:#fafbfd;border:1px solid #e4e7ee;border-radius:4px}
        .lane-bg{fill:#f0f2f7}.lane-label{font-size:11px;fill:#445}.axis{stroke:#99a}.tick{font-size:10px;fill:#556}
        .hb{stroke:#5c7cfa;stroke-width:1}.run{fill:#9fb3e6;opacity:.7}.m-conn{fill:#2b6cb0}.m-chan{fill:#0f766e}\
        .m-other{fill:#6b7280}
        .m-err{fill:#c62828}.m-block{fill:#f0a020}.fin{fill:#374151}.rst{stroke:#c62828;stroke-width:2.5;fill:none}
        .idle{fill:#f0a020;opacity:.18}.deadline{stroke:#c62828;stroke-width:1.2;stroke-dasharray:4 3}\
        .break{stroke:#99a;fill:none}
        .errno{font-size:11px;fill:#c62828;font-weight:600}.deadline-label{font-size:10px;fill:#c62828}\
        .gap{fill:#7c3aed;opacity:.5}
        details>summary{cursor:pointer}details>summary h2{display:inline}
        .flowcharts{display:flex;gap:12px;flex-wrap:wrap}svg.chart{width:360px;height:auto;background:#fafbfd;\
        border:1px solid #e4e7ee;border-radius:4px}.bar{fill:#5c7cfa}.step{stroke:#0f766e;stroke-width:1.5;fill:none}\
        .limit{stroke:#c62828;stroke-dasharray:4 3}.chart-title{font-size:11px;fill:#334}
        ul.incidents li{margin:4px 0}.members{font-size:12px;color:#445}
        svg.overview{width:100%;height:auto;background:#fafbfd;border:1px solid #e4e7ee;border-radius:4px}
        .ov-lane{stroke:#b8c0d0}.ov-open{fill:#2b6cb0}.ov-fin{fill:#374151}.ov-rst{fill:#c62828}\
        .ov-error{fill:#c62828}.ov-warning{fill:#f0a020}.wave{fill:#c62828;opacity:.10}
        """
}

/// The SVG timeline of one connection: one lane per direction.
enum TimelineSVG {
    static let width = 1100.0, left = 120.0, right = 20.0
    static let laneHeight = 44.0, top = 14.0

    static func render(_ story: Story, options: ReportOptions) -> String {
        let r = story.record
        let from = options.from.map { max($0, r.firstTime) } ?? r.firstTime
        let to = options.to.map { min($0, r.endTime ?? r.lastTime) } ?? (r.endTime ?? r.lastTime)
        func inside(_ t: Timestamp) -> Bool { t >= from && t <= to }
        var times: [Timestamp] =
            r.timeline.map(\.time) + r.heartbeatTimes.clientToServer + r.heartbeatTimes.serverToClient
            + r.moments.map(\.time)
        times += r.timeline.compactMap { if case .run(let run) = $0 { return run.last } else { return nil } }
        times = times.filter(inside)
        let scale = TimeScale(start: from, end: to, events: times, x: left, width: width - left - right)
        let height = top + 2 * laneHeight + 34
        var out =
            "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) "
            + "\(Int(height))\" role=\"img\" aria-label=\"timeline of connection \(r.info.id.rawValue)\">"
        func laneY(_ d: Direction) -> Double { top + (d == .clientToServer ? 0 : laneHeight) }
        let f = format1
        for d in Direction.allCases {
            let y = laneY(d)
            out += "<g class=\"lane\" data-direction=\"\(AnalyzeReport.directionName(d))\">"
            out +=
                "<rect class=\"lane-bg\" x=\"\(f(left))\" y=\"\(f(y + 4))\" width=\"\(f(width - left - right))\" "
                + "height=\"\(f(laneHeight - 8))\"/>"
            let lane = d == .clientToServer ? "client → server" : "server → client"
            out += "<text class=\"lane-label\" x=\"4\" y=\"\(f(y + laneHeight / 2 + 4))\">\(lane)</text>"
            // Silences.
            for gap in story.silences[d] where gap.to >= from && gap.from <= to {
                let x1 = scale.x(max(gap.from, from))
                let x2 = scale.x(min(gap.to, to))
                out +=
                    "<rect class=\"idle\" x=\"\(f(x1))\" y=\"\(f(y + 4))\" width=\"\(f(max(x2 - x1, 1)))\" "
                    + "height=\"\(f(laneHeight - 8))\"><title>silent for "
                    + "\(Format.duration(nanoseconds: gap.length))</title></rect>"
            }
            // Heartbeat ticks.
            for t in r.heartbeatTimes[d] where inside(t) {
                let x = scale.x(t)
                out +=
                    "<line class=\"hb\" x1=\"\(f(x))\" y1=\"\(f(y + 8))\" x2=\"\(f(x))\" "
                    + "y2=\"\(f(y + laneHeight - 8))\"/>"
            }
            out += "</g>"
        }
        // Runs, frames, problems and TCP moments.
        let mid: (Direction) -> Double = { laneY($0) + laneHeight / 2 }
        for entry in r.timeline where inside(entry.time) {
            switch entry {
            case .run(let run) where !run.isHeartbeat:
                let x1 = scale.x(run.first)
                let x2 = scale.x(min(run.last, to))
                out +=
                    "<rect class=\"run\" x=\"\(f(x1))\" y=\"\(f(mid(run.direction) - 4))\" "
                    + "width=\"\(f(max(x2 - x1, 3)))\" "
                    + "height=\"8\"><title>\(HTML.escape(AnalyzeReport.runText(run)))</title></rect>"
            case .frame(let frame):
                out +=
                    "<circle class=\"\(frameClass(frame))\" cx=\"\(f(scale.x(frame.time)))\" "
                    + "cy=\"\(f(mid(frame.direction)))\" "
                    + "r=\"4\"><title>"
                    + HTML.escape(
                        Format.time(frame.time).suffix(15) + " #\(frame.packetNumber) " + Describe.frame(frame.frame))
                    + "</title></circle>"
            case .performative(let frame):
                // AMQP 1.0: an error in close, end or detach is an error close; any other key performative a
                // lifecycle dot.
                let error = frame.frame.performative?.error != nil
                out +=
                    "<circle class=\"\(error ? "m-err" : "m-conn")\" cx=\"\(f(scale.x(frame.time)))\" "
                    + "cy=\"\(f(mid(frame.direction)))\" r=\"4\"><title>"
                    + HTML.escape(
                        Format.time(frame.time).suffix(15) + " #\(frame.packetNumber) "
                            + Describe.performative(frame.frame))
                    + "</title></circle>"
            case .problem(let p):
                out +=
                    "<circle class=\"m-err\" cx=\"\(f(scale.x(p.time)))\" cy=\"\(f(mid(p.direction)))\" "
                    + "r=\"3\"><title>\(HTML.escape(p.reason))</title></circle>"
            case .moment(let m):
                let x = scale.x(m.time)
                let y = mid(m.direction)
                let title =
                    "<title>"
                    + HTML.escape(Format.time(m.time).suffix(15) + " #\(m.packetNumber) " + AnalyzeReport.momentText(m))
                    + "</title>"
                switch m.kind {
                case .fin:
                    out +=
                        "<path class=\"fin\" d=\"M\(f(x - 6)) \(f(y + 7)) L\(f(x)) \(f(y - 7)) L\(f(x + 6)) "
                        + "\(f(y + 7)) Z\">\(title)</path>"
                case .reset(let info):
                    out +=
                        "<path class=\"rst\" d=\"M\(f(x - 7)) \(f(y - 7)) L\(f(x + 7)) \(f(y + 7)) M\(f(x + 7)) "
                        + "\(f(y - 7)) L\(f(x - 7)) \(f(y + 7))\">\(title)</path>"
                    if !info.repeated, let e = ResetErrno.predict(info.receiverState) {
                        // The errno goes on the receiver's lane: it is the receiver's socket that gets it.
                        let ry = mid(m.direction.reversed)
                        let anchor = x > width - 200 ? "end" : "start"
                        out +=
                            "<text class=\"errno\" x=\"\(f(anchor == "end" ? x - 10 : x + 10))\" y=\"\(f(ry + 4))\" "
                            + "text-anchor=\"\(anchor)\">\(e.name) (\(e.errno))</text>"
                    }
                case .gap:
                    out +=
                        "<rect class=\"gap\" x=\"\(f(x - 2))\" y=\"\(f(y - 10))\" width=\"4\" "
                        + "height=\"20\">\(title)</rect>"
                default:
                    break
                }
            default:
                break
            }
        }
        // Where a side went silent, the deadline its heartbeat set (AMQP 1.0: the idle timeout its peer advertised).
        for d in story.diagnoses where d.code == .missedHeartbeats {
            guard let side = d.side, let last = d.evidence.first?.time else { continue }
            let interval: Int64
            if let s10 = story.amqp10 {
                guard let ms = s10.idleTimeOut(advertisedBy: side.peer) else { continue }
                interval = Int64(ms) * 1_000_000
            } else if let n = story.negotiated, n.heartbeat > 0 {
                interval = Int64(n.heartbeat) * 1_000_000_000
            } else {
                continue
            }
            do {
                let y = laneY(side.sending)
                let unit = story.amqp10 == nil ? "interval" : "idle timeout"
                for (k, label) in [(1, "1 \(unit)"), (2, "2 \(unit)s")] {
                    let t = last.adding(nanoseconds: Int64(k) * interval)
                    guard inside(t) else { continue }
                    let x = scale.x(t)
                    out +=
                        "<line class=\"deadline\" x1=\"\(f(x))\" y1=\"\(f(y + 2))\" x2=\"\(f(x))\" "
                        + "y2=\"\(f(y + laneHeight - 2))\"><title>\(story.amqp10 == nil ? "heartbeat" : "idle-timeout") "
                        + "deadline: \(label) after the last frame</title></line>"
                    out += "<text class=\"deadline-label\" x=\"\(f(x + 3))\" y=\"\(f(y + 12))\">\(label)</text>"
                }
            }
        }
        // The axis, with breaks where quiet time was squeezed.
        let axisY = top + 2 * laneHeight + 6
        out +=
            "<line class=\"axis\" x1=\"\(f(left))\" y1=\"\(f(axisY))\" x2=\"\(f(width - right))\" y2=\"\(f(axisY))\"/>"
        for segment in scale.segments {
            if segment.compressed {
                let x = segment.x
                out +=
                    "<path class=\"break\" d=\"M\(f(x + 8)) \(f(axisY - 6)) l6 12 M\(f(x + 16)) \(f(axisY - 6)) l6 "
                    + "12\"/>"
                out +=
                    "<text class=\"tick\" x=\"\(f(x + 2))\" "
                    + "y=\"\(f(axisY + 24))\">\(Format.duration(nanoseconds: segment.to - segment.from)) "
                    + "quiet</text>"
            }
        }
        for (t, label) in ticks(scale: scale, from: from, to: to) {
            let x = scale.x(t)
            out += "<line class=\"axis\" x1=\"\(f(x))\" y1=\"\(f(axisY))\" x2=\"\(f(x))\" y2=\"\(f(axisY + 4))\"/>"
            out += "<text class=\"tick\" x=\"\(f(x))\" y=\"\(f(axisY + 14))\" text-anchor=\"middle\">\(label)</text>"
        }
        out += "</svg>"
        return out
    }

    static func frameClass(_ frame: FrameRecord) -> String {
        guard case .method(let m) = frame.frame.content else { return "m-other" }
        switch m {
        case .connectionClose(let c) where c.replyCode >= 300: return "m-err"
        case .channelClose(let c) where c.replyCode >= 300: return "m-err"
        case .connectionBlocked, .connectionUnblocked: return "m-block"
        default: return m.classID == 10 ? "m-conn" : m.classID == 20 ? "m-chan" : "m-other"
        }
    }

    /// About six ticks over the linear parts, labelled in seconds from the start and with the UTC clock at the ends.
    static func ticks(scale: TimeScale, from: Timestamp, to: Timestamp) -> [(Timestamp, String)] {
        var out: [(Timestamp, String)] = [(from, String(Format.time(from).suffix(15).prefix(12)))]
        let span = to.since(from)
        let steps: [Int64] = [
            1_000_000, 10_000_000, 100_000_000, 1_000_000_000, 5_000_000_000, 10_000_000_000, 60_000_000_000,
            300_000_000_000, 600_000_000_000, 3_600_000_000_000,
        ]
        let step = steps.first { span / $0 <= 8 } ?? 3_600_000_000_000
        var t = step
        while t < span {
            let stamp = from.adding(nanoseconds: t)
            if !scale.segments.contains(where: { $0.compressed && t > $0.from && t < $0.to }) {
                out.append((stamp, "+" + Format.duration(nanoseconds: t)))
            }
            t += step
        }
        return out
    }

    /// A coordinate with at most one decimal: short, and the same on every machine.
    static func format1(_ v: Double) -> String {
        let tenths = Int((v * 10).rounded())
        let sign = tenths < 0 ? "-" : ""
        let magnitude = abs(tenths)
        return magnitude % 10 == 0 ? "\(sign)\(magnitude / 10)" : "\(sign)\(magnitude / 10).\(magnitude % 10)"
    }
}

/// Message-flow charts: latency histograms (confirms, acks) and a step chart of unacknowledged deliveries over time,
/// as inline SVG made of numbers only (nothing from the capture but counts and times).
enum FlowSVG {
    static let width = 360.0, height = 150.0, left = 36.0, bottom = 24.0, top = 18.0

    static func f(_ v: Double) -> String { String(format1(v)) }
    static func format1(_ v: Double) -> String { String((v * 10).rounded() / 10) }

    static func render(_ flow: FlowRecord, story: Story) -> String {
        var charts: [String] = []
        if !flow.confirmBuckets.isEmpty {
            charts.append(histogram(flow.confirmBuckets, title: "publish to confirm latency (ms)", kind: "confirm"))
        }
        if !flow.ackBuckets.isEmpty {
            charts.append(histogram(flow.ackBuckets, title: "delivery to ack latency (ms)", kind: "ack"))
        }
        if flow.unackedSamples.count >= 2 { charts.append(unacked(flow, story: story)) }
        guard !charts.isEmpty else { return "" }
        return "<div class=\"flowcharts\">" + charts.joined() + "</div>"
    }

    static func histogram(_ buckets: [LatencyBucket], title: String, kind: String) -> String {
        let peak = Double(buckets.map(\.count).max() ?? 1)
        let plotWidth = width - left - 8
        let barWidth = plotWidth / Double(max(buckets.count, 1))
        var out =
            "<svg class=\"chart\" data-chart=\"\(kind)-latency\" xmlns=\"http://www.w3.org/2000/svg\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
        out += "<text class=\"chart-title\" x=\"\(f(left))\" y=\"12\">\(title)</text>"
        for (i, b) in buckets.enumerated() {
            let h = (height - top - bottom) * Double(b.count) / max(peak, 1)
            let x = left + Double(i) * barWidth
            out +=
                "<rect class=\"bar\" x=\"\(f(x + 1))\" y=\"\(f(height - bottom - h))\" "
                + "width=\"\(f(max(barWidth - 2, 1)))\" height=\"\(f(h))\"><title>\(b.count) up to "
                + "\(Format.milliseconds(b.upToMilliseconds))</title></rect>"
            if i % max(1, buckets.count / 5) == 0 {
                out +=
                    "<text class=\"tick\" x=\"\(f(x + barWidth / 2))\" y=\"\(f(height - 8))\" "
                    + "text-anchor=\"middle\">\(Format.milliseconds(b.upToMilliseconds))</text>"
            }
        }
        out += "<text class=\"tick\" x=\"4\" y=\"\(f(top + 8))\">\(Int(peak))</text></svg>"
        return out
    }

    static func unacked(_ flow: FlowRecord, story: Story) -> String {
        let samples = flow.unackedSamples
        let start = samples.first!.time
        let end = max(samples.last!.time, story.record.endTime ?? story.record.lastTime)
        let span = max(Double(end.since(start)), 1)
        let peak = Double(max(samples.map(\.unacked).max() ?? 1, flow.prefetch ?? 1, 1))
        let plotWidth = width - left - 8
        let plotHeight = height - top - bottom
        func x(_ t: Timestamp) -> Double { left + plotWidth * Double(t.since(start)) / span }
        func y(_ n: Int) -> Double { height - bottom - plotHeight * Double(n) / peak }
        var path = "M\(f(x(start))) \(f(y(0)))"
        var last = 0
        for s in samples {
            path += " L\(f(x(s.time))) \(f(y(last))) L\(f(x(s.time))) \(f(y(s.unacked)))"
            last = s.unacked
        }
        path += " L\(f(x(end))) \(f(y(last)))"
        var out =
            "<svg class=\"chart\" data-chart=\"unacked\" xmlns=\"http://www.w3.org/2000/svg\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
        out += "<text class=\"chart-title\" x=\"\(f(left))\" y=\"12\">unacknowledged deliveries over time</text>"
        if let prefetch = flow.prefetch {
            out +=
                "<line class=\"limit\" x1=\"\(f(left))\" y1=\"\(f(y(prefetch)))\" x2=\"\(f(width - 8))\" "
                + "y2=\"\(f(y(prefetch)))\"><title>prefetch \(prefetch)</title></line>"
        }
        out += "<path class=\"step\" d=\"\(path)\"/>"
        out += "<text class=\"tick\" x=\"4\" y=\"\(f(top + 8))\">\(Int(peak))</text>"
        out += "<text class=\"tick\" x=\"4\" y=\"\(f(height - bottom))\">0</text>"
        out +=
            "<text class=\"tick\" x=\"\(f(left))\" y=\"\(f(height - 8))\">"
            + "\(Format.time(start).suffix(15).prefix(12))</text>"
        out +=
            "<text class=\"tick\" x=\"\(f(width - 8))\" y=\"\(f(height - 8))\" text-anchor=\"end\">+"
            + "\(Format.duration(nanoseconds: end.since(start)))</text></svg>"
        return out
    }
}

/// The overview of many connections: one thin lane per connection on a shared time axis, with each one's open,
/// FIN, RST and the moment of its first problem marked, and the incidents shaded, so that a wave stands out. Only
/// numbers and times go into it; titles are escaped.
enum OverviewSVG {
    static let minimumConnections = 5
    static let width = 1100.0, left = 70.0, right = 20.0, top = 24.0

    static func f(_ v: Double) -> String { String((v * 10).rounded() / 10) }

    static func render(_ stories: [Story], incidents: [Incident]) -> String {
        let ordered = stories.sorted {
            ($0.record.firstTime, $0.record.info.id) < ($1.record.firstTime, $1.record.info.id)
        }
        guard let start = ordered.map(\.record.firstTime).min(),
            let end = ordered.map(\.record.lastTime).max()
        else { return "" }
        let span = Double(max(end.since(start), 1))
        // Thin lanes: 1,000 connections fit in 1,500 pixels.
        let lane = max(1.5, min(10, 1500 / Double(ordered.count)))
        let height = top + lane * Double(ordered.count) + 8
        func x(_ t: Timestamp) -> Double { left + (width - left - right) * Double(t.since(start)) / span }
        var out =
            "<figure><svg class=\"overview\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" "
            + "aria-label=\"every connection on one time axis\">"
        for i in incidents {
            out +=
                "<rect class=\"wave\" x=\"\(f(x(i.first) - 2))\" y=\"\(f(top))\" "
                + "width=\"\(f(max(x(i.last) - x(i.first) + 4, 4)))\" height=\"\(f(lane * Double(ordered.count)))\">"
                + "<title>\(HTML.escape(i.summary, limit: 600))</title></rect>"
        }
        // The axis: five times.
        for k in 0...4 {
            let t = Timestamp(nanoseconds: start.nanoseconds + Int64(span * Double(k) / 4))
            out +=
                "<text class=\"tick\" x=\"\(f(x(t)))\" y=\"14\" text-anchor=\"\(k == 0 ? "start" : k == 4 ? "end" : "middle")\">"
                + "\(Format.time(t).suffix(15))</text>"
        }
        let mark = max(1.5, lane - 0.5)
        for (n, s) in ordered.enumerated() {
            let r = s.record
            let y = top + lane * Double(n)
            let mid = y + lane / 2
            let last = r.lastTime  // its last packet (reassembly may keep a closed connection until the capture's end)
            let problem = s.diagnoses.first { $0.severity > .info && $0.consequenceOf == nil }
            out += "<a href=\"#\(HTMLReport.anchor(s))\"><g><title>"
            out += HTML.escape(
                "connection \(r.info.id.rawValue): \(r.info.client) -> \(r.info.server)"
                    + (problem.map { " · \($0.code)" } ?? ""))
            out += "</title>"
            out +=
                "<line class=\"ov-lane\" x1=\"\(f(x(r.firstTime)))\" y1=\"\(f(mid))\" x2=\"\(f(max(x(last), x(r.firstTime) + 1)))\" "
                + "y2=\"\(f(mid))\" stroke-width=\"\(f(max(0.6, lane / 3)))\"/>"
            if r.info.opening == .handshake {
                out +=
                    "<rect class=\"ov-open\" x=\"\(f(x(r.firstTime)))\" y=\"\(f(y))\" width=\"1.5\" height=\"\(f(mark))\"/>"
            }
            var closes = 0
            for m in r.moments where closes < 4 {
                let kind: String
                switch m.kind {
                case .fin: kind = "ov-fin"
                case .reset: kind = "ov-rst"
                default: continue
                }
                closes += 1
                out +=
                    "<rect class=\"\(kind)\" x=\"\(f(x(m.time) - 1))\" y=\"\(f(y))\" width=\"2\" height=\"\(f(mark))\"/>"
            }
            if let problem {
                let t = problem.evidence.filter { $0.packetNumber > 0 }.map(\.time).max() ?? last
                out +=
                    "<circle class=\"ov-\(problem.severity.rawValue)\" cx=\"\(f(x(t)))\" cy=\"\(f(mid))\" "
                    + "r=\"\(f(max(1.2, min(4, lane / 2))))\"/>"
            }
            out += "</g></a>"
        }
        out +=
            "</svg><figcaption>Every connection on one time axis (\(ordered.count), by first packet): "
            + "<span class=\"key\">blue tick: opened</span><span class=\"key\">grey: FIN</span>"
            + "<span class=\"key\">red bar: RST</span><span class=\"key\">dot: its first problem</span>"
            + "<span class=\"key\">shaded: an incident</span></figcaption></figure>"
        return out
    }
}
