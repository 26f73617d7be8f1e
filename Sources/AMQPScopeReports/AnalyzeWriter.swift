// Writes analyze's report connection by connection, as they end, so that memory never grows with the capture:
// each capture's summary and connection table come after its connections. Text and JSON.
import AMQPScopeTimeline

package struct AnalyzeWriter {
    package enum Kind: Sendable { case text, json }

    package let format: Kind
    package let options: ReportOptions
    private let output: (UnsafeRawBufferPointer) -> Void
    /// Rows of the connection table kept per capture; past it they are counted.
    package static let tableRowsKept = 1000

    private var rows: [[String]] = []
    private var connections = 0
    private var amqp = 0
    private var tableOnly = 0
    private var tally: [Diagnosis.Severity: Int] = [:]
    private var captures: [JSON] = []
    /// The broker log joined to the current capture's connections.
    private var brokerLog: BrokerLogJoin?
    /// The current capture's headlines, grouped into incidents at its end.
    private var finder = IncidentFinder()
    /// Incidents of the captures done, for JSON.
    private var incidents: [JSON] = []
    private var lastIncidents: [Incident] = []
    private var wroteConnection = false
    private var started = false
    package private(set) var worstSeverity: Diagnosis.Severity?

    /// A fragment writer writes only its connections (JSON: comma-separated objects, no document around them),
    /// so that files analysed in parallel can be joined in capture order by `joinFragments`.
    package let fragment: Bool

    /// `write` is given the report's UTF-8 bytes, piece by piece.
    package init(
        format: Kind, options: ReportOptions, fragment: Bool = false,
        write: @escaping (UnsafeRawBufferPointer) -> Void
    ) {
        self.format = format
        self.options = options
        self.fragment = fragment
        self.output = write
    }

    private func write(_ text: String) {
        var text = text
        text.withUTF8 { output(UnsafeRawBufferPointer($0)) }
    }

    /// What a fragment writer learned, for the writer that joins the fragments.
    package struct FragmentSummary: Sendable {
        package var captureJSON: JSON
        package var incidents: [Incident]
        package var wroteConnection: Bool
        package var worstSeverity: Diagnosis.Severity?
    }

    package func fragmentSummary() -> FragmentSummary {
        FragmentSummary(
            captureJSON: captures.last ?? .null, incidents: lastIncidents, wroteConnection: wroteConnection,
            worstSeverity: worstSeverity)
    }

    /// Joins the fragments of files analysed in parallel, in capture order: `copyFragment(i)` copies the i-th file's
    /// report, as the bytes its fragment writer wrote, to this writer's output. Text fragments are whole capture
    /// sections; JSON fragments are the connections of one capture.
    package mutating func joinFragments(_ summaries: [FragmentSummary], copyFragment: (Int) -> Void) {
        for (i, summary) in summaries.enumerated() {
            if let worst = summary.worstSeverity { worstSeverity = max(worstSeverity ?? worst, worst) }
            switch format {
            case .text:
                if started { write("\n") }
                started = true
                copyFragment(i)
            case .json:
                if !started { write("{\n  \"connections\": [") }
                started = true
                if summary.wroteConnection {
                    if wroteConnection { write(",") }
                    copyFragment(i)
                    wroteConnection = true
                }
                incidents += summary.incidents.map { AnalyzeReport.incidentJSON($0, capture: captures.count) }
                captures.append(summary.captureJSON)
            }
        }
    }

    package mutating func begin(capture path: String) {
        brokerLog = options.brokerLog.map(BrokerLogJoin.init)
        finder = IncidentFinder()
        rows = []
        connections = 0
        amqp = 0
        tableOnly = 0
        tally = [:]
        switch format {
        case .text:
            write((started ? "\n" : "") + "capture \(Format.safe(path))\n")
        case .json:
            if !started && !fragment { write("{\n  \"connections\": [") }
        }
        started = true
    }

    /// One connection, as it ends: its story if the filters keep it, and its row in the table.
    package mutating func connection(_ record: ConnectionRecord, capture: Int) {
        let events = brokerLog?.events(for: record) ?? []
        append(
            Self.render(
                record, capture: capture, row: connections < Self.tableRowsKept, format: format, options: options,
                brokerLog: events))
    }

    /// A connection worked out for the writer: its table row, and its story and its text unless the filters drop
    /// it. Working it out is pure, so connections can be rendered on other threads and appended in order.
    package struct Rendered: Sendable {
        var isAMQP: Bool
        /// Its row in the connection table, for the first `tableRowsKept` connections of a capture.
        var row: [String]?
        var story: Story?
        /// The UTF-8 text to write (JSON: the connection's object after a comma, which the first connection leaves
        /// out); nil when the connection is listed in the table only.
        var text: [UInt8]?
    }

    /// `render` with what it needs apart from the writer's running state, for the `index`-th connection (from 0) of
    /// capture `capture`; nil when a broker log is joined, because that join takes each log line once, in
    /// connection order.
    package var renderer: (@Sendable (_ record: ConnectionRecord, _ capture: Int, _ index: Int) -> Rendered)? {
        guard brokerLog == nil else { return nil }
        let format = format
        let options = options
        return { record, capture, index in
            Self.render(
                record, capture: capture, row: index < Self.tableRowsKept, format: format, options: options,
                brokerLog: [])
        }
    }

    static func render(
        _ record: ConnectionRecord, capture: Int, row: Bool, format: Kind, options: ReportOptions,
        brokerLog: [BrokerLogEvent]
    ) -> Rendered {
        var rendered = Rendered(isAMQP: record.isAMQP, row: row ? AnalyzeReport.tableRow(record) : nil)
        guard AnalyzeReport.passes(record, options) else { return rendered }
        let story = Story(record, options: options.story, brokerLog: brokerLog)
        rendered.story = story
        switch format {
        case .text:
            // Connections that carry no AMQP are listed in the table only, unless asked for.
            if !record.isAMQP && !options.verbose && options.connections == nil { return rendered }
            rendered.text = Array(("\n" + AnalyzeReport.storyText(story, options: options)).utf8)
        case .json:
            var text = JSONOutput(capacity: 16_384)
            text.append(",\n    ")
            AnalyzeReport.connectionJSON(story, capture: capture, options: options).write(into: &text, indent: 2)
            rendered.text = text.bytes
        }
        return rendered
    }

    /// Writes a rendered connection; connections must be appended in the order they ended.
    package mutating func append(_ rendered: Rendered) {
        connections += 1
        if rendered.isAMQP { amqp += 1 }
        if let row = rendered.row, rows.count < Self.tableRowsKept { rows.append(row) }
        guard let story = rendered.story else { return }
        finder.add(story)
        for d in story.diagnoses { tally[d.severity, default: 0] += 1 }
        if let worst = story.worstSeverity { worstSeverity = max(worstSeverity ?? worst, worst) }
        guard let text = rendered.text else {
            tableOnly += 1
            return
        }
        text.withUnsafeBytes { bytes in
            // JSON: the comma separates this connection from the one before.
            output(format == .json && !wroteConnection ? UnsafeRawBufferPointer(rebasing: bytes.dropFirst()) : bytes)
        }
        if format == .json { wroteConnection = true }
    }

    /// The capture is read: its summary and table.
    package mutating func end(capture result: CaptureResult) {
        lastIncidents = finder.incidents()
        switch format {
        case .text:
            var out = "\nsummary of \(Format.safe(result.path))\n"
            out += AnalyzeReport.incidentsText(lastIncidents)
            out += AnalyzeReport.summaryText(result, connections: connections, amqp: amqp, tally: tally)
            if tableOnly > 0 {
                out +=
                    "  \(tableOnly) connection\(tableOnly == 1 ? "" : "s") with no AMQP "
                    + "\(tableOnly == 1 ? "is" : "are") in the table only (--verbose or --connection ID shows "
                    + "them)\n"
            }
            if let log = brokerLog?.summary(within: result.span) { out += AnalyzeReport.brokerLogText(log) }
            if !rows.isEmpty {
                out += "\n" + AnalyzeReport.connectionTable(rows)
                if connections > rows.count { out += "  ... and \(connections - rows.count) more connections\n" }
            }
            write(out)
        case .json:
            incidents += lastIncidents.map { AnalyzeReport.incidentJSON($0, capture: captures.count) }
            captures.append(
                AnalyzeReport.captureJSON(
                    result, connections: connections, brokerLog: brokerLog?.summary(within: result.span)))
        }
    }

    /// All captures are done.
    package mutating func finish() {
        guard format == .json, !fragment else { return }
        if !started { write("{\n  \"connections\": [") }
        write(
            (wroteConnection ? "\n  " : "") + "],\n  \"incidents\": "
                + JSON.array(incidents).serialized(indent: true, level: 1) + ",\n  \"captures\": "
                + JSON.array(captures).serialized(indent: true, level: 1) + "\n}\n")
    }
}

extension AnalyzeReport {
    /// Whether a connection passes the --connection and time-window filters.
    static func passes(_ r: ConnectionRecord, _ options: ReportOptions) -> Bool {
        if let ids = options.connections, !ids.contains(r.info.id.rawValue) { return false }
        if let from = options.from, (r.endTime ?? r.lastTime) < from { return false }
        if let to = options.to, r.firstTime > to { return false }
        return true
    }
}
