// Many connections, one incident: a broker restart or a network blip ends hundreds of connections within seconds,
// and each story tells only its own part. Connections whose stories are headed by the same cause, against the same
// server, close together in time, are one incident, told once with its members.
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

/// Several connections that ended the same way at about the same time.
public struct Incident: Sendable {
    /// One sentence: how many, what, when, and the likely cause.
    public var summary: String
    /// The diagnosis code that heads each member's story.
    public var code: DiagnosisCode
    /// The first and last member's moment.
    public var first: Timestamp
    /// The last member's moment.
    public var last: Timestamp
    /// The server the members spoke to.
    public var server: Endpoint
    /// The members' connection ids, in time order.
    public var connections: [ConnectionID]
}

/// Collects each story's headline as it is told, then groups them.
public struct IncidentFinder: Sendable {
    struct Headline {
        var id: ConnectionID
        var server: Endpoint
        var code: DiagnosisCode
        var side: Side?
        var detail: String
        var time: Timestamp
    }
    var headlines: [Headline] = []

    /// Members closer together than this in time belong to one incident.
    public static let gap: Int64 = 5_000_000_000
    /// Fewer connections than this are not called an incident.
    public static let minimumMembers = 3
    /// Headlines kept, at most (one per connection with a problem).
    static let maximumHeadlines = 1_000_000

    /// An empty finder.
    public init() {}

    /// Notes a story's headline: its first warning or error, at the moment it happened (the last packet it rests on).
    public mutating func add(_ story: Story) {
        guard headlines.count < Self.maximumHeadlines,
            let head = story.diagnoses.first(where: { $0.severity > .info && $0.consequenceOf == nil }),
            Self.groupable.contains(head.code)
        else { return }
        let time = head.evidence.filter { $0.packetNumber > 0 }.map(\.time).max() ?? story.record.lastTime
        headlines.append(
            Headline(
                id: story.record.info.id, server: story.record.info.server, code: head.code, side: head.side,
                detail: Self.detail(head), time: time))
    }

    /// Codes that end connections, which a shared cause ends many of at once.
    static let groupable: Set<DiagnosisCode> = [
        .missedHeartbeats, .idleTimeoutInPath, .writeAfterClose, .reset, .connectionError, .abruptClose,
    ]

    /// What tells members apart beyond their code: the reply code of an error close ("320"), the side that reset.
    static func detail(_ d: Diagnosis) -> String {
        switch d.code {
        case .connectionError:
            // "the server closed the connection: 320 ..." → the side and the first word after the colon.
            let after = d.summary.split(separator: ":", maxSplits: 1).dropFirst().first ?? ""
            return "\(d.side?.rawValue ?? "") " + (after.split(separator: " ").first.map(String.init) ?? "")
        default:
            return d.side?.rawValue ?? ""
        }
    }

    /// The incidents among one capture's stories.
    public static func incidents(of stories: [Story]) -> [Incident] {
        var finder = IncidentFinder()
        for s in stories { finder.add(s) }
        return finder.incidents()
    }

    /// The incidents: members grouped by code, detail and server, split where more than `gap` passes between two.
    public func incidents() -> [Incident] {
        var groups: [String: [Headline]] = [:]
        for h in headlines { groups["\(h.code)|\(h.detail)|\(h.server)", default: []].append(h) }
        var out: [Incident] = []
        for (_, members) in groups {
            let sorted = members.sorted { ($0.time, $0.id) < ($1.time, $1.id) }
            var run: [Headline] = []
            func close() {
                if run.count >= Self.minimumMembers { out.append(Self.incident(run)) }
                run = []
            }
            for h in sorted {
                if let last = run.last, h.time.since(last.time) > Self.gap { close() }
                run.append(h)
            }
            close()
        }
        return out.sorted {
            ($0.first, $0.connections.first ?? ConnectionID(rawValue: 0)) < (
                $1.first, $1.connections.first ?? ConnectionID(rawValue: 0)
            )
        }
    }

    static func incident(_ run: [Headline]) -> Incident {
        let first = run.first!.time
        let last = run.last!.time
        let h = run[0]
        let n = run.count
        let when =
            last.since(first) < 1_000_000_000
            ? "within \(Format.duration(nanoseconds: last.since(first))) at \(Format.time(first).suffix(15))"
            : "between \(Format.time(first).suffix(15)) and \(Format.time(last).suffix(15))"
        let broker = "the server at \(h.server)"
        let summary: String
        switch h.code {
        case .connectionError:
            let code = h.detail.split(separator: " ").last.map(String.init) ?? ""
            summary =
                "\(n) connections closed by the \(h.side?.rawValue ?? "server") with \(code) \(when)"
                + (code == "320"
                    ? "; \(broker) was probably shutting down or restarting (or an operator closed them)."
                    : ": one cause at \(broker).")
        case .reset where h.side == .client:
            summary = "\(n) connections reset by the server \(when); \(broker) was probably restarting or crashed."
        case .reset:
            summary = "\(n) connections reset by their clients \(when): the clients' host or network went away at once."
        case .abruptClose:
            summary =
                "\(n) connections ended without an AMQP close \(when): a network blip, or \(broker) or the "
                + "clients' host restarting."
        case .missedHeartbeats:
            summary =
                "\(n) connections' \(h.side?.rawValue ?? "peer")s stopped heartbeating and were dropped \(when): a "
                + "shared cause (a paused host, a network partition, an overloaded \(h.side?.rawValue ?? "peer")) "
                + "rather than \(n) separate bugs."
        case .idleTimeoutInPath:
            summary = "\(n) idle connections to \(h.server) closed by an intermediary \(when)."
        case .writeAfterClose:
            summary = "\(n) connections wrote after \(broker) had closed them \(when)."
        default:
            summary = "\(n) connections: \(h.code) \(when) (\(broker))."
        }
        return Incident(
            summary: summary, code: h.code, first: first, last: last, server: h.server, connections: run.map(\.id))
    }
}

extension AnalyzeReport {
    /// The incidents of a capture, for the text summary: each with its members.
    static func incidentsText(_ incidents: [Incident]) -> String {
        guard !incidents.isEmpty else { return "" }
        var out = "  incidents (connections that ended the same way at about the same time):\n"
        for i in incidents {
            out += "    \(Format.safe(i.summary, limit: 400))\n"
            out += "      connections " + members(i.connections) + "\n"
        }
        return out
    }

    /// "1, 2, 3, ... and 40 more" (the first 50 ids).
    static func members(_ ids: [ConnectionID]) -> String {
        ids.prefix(50).map { "\($0.rawValue)" }.joined(separator: ", ")
            + (ids.count > 50 ? " and \(ids.count - 50) more" : "")
    }

    /// An incident as JSON: `summary`, `code`, `first`, `last`, `server`, `connections` (ids), `capture`.
    static func incidentJSON(_ i: Incident, capture: Int) -> JSON {
        .object([
            ("summary", .string(i.summary)), ("code", .string(i.code.rawValue)),
            ("first", .string(Format.rfc3339(i.first))), ("last", .string(Format.rfc3339(i.last))),
            ("server", .string(i.server.description)), ("capture", .int(capture)),
            ("connections", .array(i.connections.map { .int($0.rawValue) })),
        ])
    }
}
