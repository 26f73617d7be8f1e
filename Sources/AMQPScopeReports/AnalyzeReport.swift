import AMQPScopeBrokerLog
// `amqpscope analyze`: per capture file, what was read; per TCP connection, how it went and what AMQP it carried.
// The text report is in TextReport.swift, the JSON one in JSONReport.swift, and the timeline lines both (and the
// review reports) share in TimelineLines.swift.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

/// One capture file's results, as the reports need them.
public struct CaptureResult: Sendable {
    /// The capture file's path, as given.
    public var path: String
    /// The capture's link-layer type, when the file could be opened.
    public var linkType: LinkType?
    /// What the packet layers counted.
    public var counts: PacketCounts
    /// The connections, in id order (empty when they were streamed to a callback).
    public var records: [ConnectionRecord]
    /// Why reading stopped early, or why the file could not be read at all.
    public var error: String?
    /// True when nothing could be read (exit 3); false with an error means read in part (exit 4).
    public var unreadable: Bool
    /// The files read as one capture (rotated parts), in the order read; empty for a single file.
    public var parts: [CapturePart]

    /// The first and last packets' times, when it had packets.
    public var span: (first: Timestamp, last: Timestamp)? {
        guard let first = counts.firstTime, let last = counts.lastTime else { return nil }
        return (first, last)
    }

    /// A capture's results.
    public init(
        path: String, linkType: LinkType?, counts: PacketCounts, records: [ConnectionRecord], error: String?,
        unreadable: Bool, parts: [CapturePart] = []
    ) {
        self.path = path
        self.linkType = linkType
        self.counts = counts
        self.records = records
        self.error = error
        self.unreadable = unreadable
        self.parts = parts
    }
}

/// What a report shows: filters, detail, secrets, colour.
public struct ReportOptions: Sendable {
    /// Every frame and packet instead of the collapsed timeline (needs records made with frames and packets).
    public var verbose = false
    /// List decoded frames (`--frames`): implied by `verbose`.
    public var showFrames = false
    /// Show message bodies (`--show-bodies`); never in review reports.
    public var showBodies = false
    /// Only these connection ids (per file).
    public var connections: Set<Int>?
    /// Only timeline entries in this window.
    public var from: Timestamp?
    /// Only timeline entries up to this time.
    public var to: Timestamp?
    /// How stories are told (thresholds).
    public var story = StoryOptions()
    /// The broker's log (`--broker-log`), joined to each capture's connections.
    public var brokerLog: BrokerLog?
    /// ANSI colour for severities in the text report (the CLI sets it only for a terminal without NO_COLOR).
    public var colour = false
    /// The defaults.
    public init() {}

    func includes(_ t: Timestamp) -> Bool { (from.map { t >= $0 } ?? true) && (to.map { t <= $0 } ?? true) }
}

/// The text and JSON reports of `analyze`.
public enum AnalyzeReport {
    /// The stories of a capture's connections that pass the filters.
    public static func stories(_ result: CaptureResult, options: ReportOptions) -> [Story] {
        storiesWithLog(result, options: options).stories
    }

    /// The stories, and what joining the broker log (if any) to the capture found.
    public static func storiesWithLog(_ result: CaptureResult, options: ReportOptions) -> (
        stories: [Story], log: BrokerLogSummary?
    ) {
        var join = options.brokerLog.map(BrokerLogJoin.init)
        // A connection is in a time window when any of its life falls inside it.
        let stories = result.records.filter { passes($0, options) }.map { record in
            Story(record, options: options.story, brokerLog: join?.events(for: record) ?? [])
        }
        return (stories, join?.summary(within: result.span))
    }

    package static func render(_ results: [CaptureResult], format: AnalyzeWriter.Kind, options: ReportOptions) -> String
    {
        var out = ""
        var writer = AnalyzeWriter(format: format, options: options) { out += String(decoding: $0, as: UTF8.self) }
        for (index, r) in results.enumerated() {
            writer.begin(capture: r.path)
            for record in r.records { writer.connection(record, capture: index) }
            writer.end(capture: r)
        }
        writer.finish()
        return out
    }
}

/// One file of a capture that was rotated into several.
public struct CapturePart: Sendable {
    /// The file's path, as given.
    public var path: String
    /// Its packets.
    public var packets = 0
    /// Its first and last packets' times.
    public var firstTime: Timestamp?
    /// Its last packet's time.
    public var lastTime: Timestamp?
    /// Why reading it stopped early, or why it could not be read.
    public var error: String?
    /// Nothing of it could be read.
    public var unreadable = false

    /// A part not yet read.
    public init(path: String) { self.path = path }
}
