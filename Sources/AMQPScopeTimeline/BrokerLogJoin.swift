// The broker's log joined to the capture: each connection's log messages found by its client and server endpoints,
// and placed on the capture's clock by the offset between the two, estimated from the connections both saw open.
import AMQPScopeBrokerLog
import AMQPScopePackets
import AMQPScopeReassembly

/// One broker log message on a connection's timeline.
public struct BrokerLogEvent: Hashable, Sendable {
    /// When it happened on the capture's clock (the logged time less the clock offset).
    public var time: Timestamp
    /// The message as logged.
    public var line: BrokerLogLine
}

/// What joining a broker log to a capture found.
public struct BrokerLogSummary: Sendable {
    /// Messages about client connections in the log.
    public var lines = 0
    /// Connections of the capture that the log told about.
    public var matchedConnections = 0
    /// The broker's clock minus the capture's (nanoseconds): the median over the connections whose opening both
    /// saw; nil when there was none.
    public var clockOffset: Int64?
    /// How many connections that estimate rests on.
    public var offsetSamples = 0
    /// Connections the log names that the capture does not hold (the first 50), with their messages' count and
    /// first message.
    public var unmatched: [(client: Endpoint, server: Endpoint, lines: Int, first: BrokerLogLine)] = []
    /// All such connections.
    public var unmatchedCount = 0
}

/// Joins one broker log to the connections of one capture, as they are told.
public struct BrokerLogJoin: Sendable {
    struct Key: Hashable {
        var client: Endpoint
        var server: Endpoint
    }
    let log: BrokerLog
    /// Per connection named in the log, the indexes of its messages in time order.
    let byKey: [Key: [Int]]
    var claimed: [Bool]
    var offsets: [Int64] = []
    var matched = 0

    /// A log messages are joined from.
    public init(_ log: BrokerLog) {
        self.log = log
        var byKey: [Key: [Int]] = [:]
        for (i, line) in log.lines.enumerated() {
            byKey[Key(client: line.client, server: line.server), default: []].append(i)
        }
        for key in byKey.keys { byKey[key]!.sort { log.lines[$0].time < log.lines[$1].time } }
        self.byKey = byKey
        claimed = Array(repeating: false, count: log.lines.count)
    }

    /// The current estimate of the broker's clock less the capture's.
    var offset: Int64? {
        guard !offsets.isEmpty else { return nil }
        let sorted = offsets.sorted()
        return sorted[sorted.count / 2]
    }

    /// How far a connection's log messages may lie outside its span in the capture, on the capture's clock.
    static let slack: Int64 = 60_000_000_000

    /// The log's messages about this connection, on the capture's clock. A client port reused over the log's span is
    /// told apart by time: the messages from one "accepting" to the next are one connection.
    public mutating func events(for record: ConnectionRecord) -> [BrokerLogEvent] {
        let info = record.info
        guard let indexes = byKey[Key(client: info.client.unmappedEndpoint, server: info.server.unmappedEndpoint)]
        else { return [] }
        // Sessions: split at each "accepting".
        var sessions: [[Int]] = []
        for i in indexes {
            if log.lines[i].kind == .accepting || sessions.isEmpty { sessions.append([]) }
            sessions[sessions.count - 1].append(i)
        }
        let start = record.firstTime
        let end = record.endTime ?? record.lastTime
        var best: (session: [Int], offset: Int64, distance: Int64)?
        for session in sessions where !claimed[session[0]] {
            let first = log.lines[session[0]]
            let sessionOffset: Int64
            if first.kind == .accepting && info.opening == .handshake {
                // The broker accepted the connection within a few milliseconds of the SYN.
                sessionOffset = first.time.since(start)
            } else {
                sessionOffset = offset ?? 0
            }
            let expected = offset ?? sessionOffset
            // On the capture's clock the session must overlap the connection's span.
            let from = log.lines[session[0]].time.nanoseconds - sessionOffset
            let to = log.lines[session[session.count - 1]].time.nanoseconds - sessionOffset
            guard to >= start.nanoseconds - Self.slack, from <= end.nanoseconds + Self.slack else {
                // With no estimate yet, a time zone between the log's clock and the capture's is allowed.
                guard offset == nil, first.kind == .accepting, abs(sessionOffset) <= 14 * 3600 * 1_000_000_000
                else { continue }
                let distance = abs(sessionOffset - expected)
                if best == nil || distance < best!.distance { best = (session, sessionOffset, distance) }
                continue
            }
            let distance = abs(sessionOffset - expected)
            if best == nil || distance < best!.distance { best = (session, sessionOffset, distance) }
        }
        guard let best else { return [] }
        for i in best.session { claimed[i] = true }
        matched += 1
        if log.lines[best.session[0]].kind == .accepting && info.opening == .handshake, offsets.count < 100_000 {
            offsets.append(best.offset)
        }
        return best.session.map { i in
            BrokerLogEvent(
                time: Timestamp(nanoseconds: log.lines[i].time.nanoseconds - best.offset), line: log.lines[i])
        }
    }

    /// What the join found, once every connection has been told. Connections the capture does not hold are those
    /// the log names within the capture's span (`within`, on the capture's clock, a minute either side).
    public func summary(within span: (first: Timestamp, last: Timestamp)? = nil) -> BrokerLogSummary {
        var s = BrokerLogSummary()
        s.lines = log.lines.count
        s.matchedConnections = matched
        s.clockOffset = offset
        s.offsetSamples = offsets.count
        for (key, indexes) in byKey.sorted(by: { log.lines[$0.value[0]].number < log.lines[$1.value[0]].number })
        where indexes.contains(where: { !claimed[$0] }) {
            let shift = offset ?? 0
            let open = indexes.filter { i in
                guard !claimed[i] else { return false }
                guard let span else { return true }
                let t = log.lines[i].time.nanoseconds - shift
                return t >= span.first.nanoseconds - Self.slack && t <= span.last.nanoseconds + Self.slack
            }
            guard !open.isEmpty else { continue }
            s.unmatchedCount += 1
            if s.unmatched.count < 50 {
                s.unmatched.append((key.client, key.server, open.count, log.lines[open[0]]))
            }
        }
        return s
    }
}

extension Endpoint {
    /// The endpoint with an IPv4-mapped IPv6 address as IPv4 (RabbitMQ listening on both families logs either).
    var unmappedEndpoint: Endpoint { Endpoint(address: address.unmapped, port: port) }
}
