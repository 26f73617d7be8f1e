// Running totals of what a capture has seen, per server, for metrics: connections opened and closed (and how),
// heartbeats, frames and bytes by direction, resets by errno, capture gaps. The engine adds each connection's
// numbers when it ends; open connections are added as they stand when the totals are asked for, so nothing is
// counted on the packet path.
import AMQPScopePackets
import AMQPScopeReassembly

/// What the engine has seen so far, per server endpoint.
public struct TrafficTotals: Sendable {
    /// The numbers of one server (address:port), or of all servers past `maximumServers` ("other").
    public struct Server: Sendable {
        /// Connections open now.
        public var open = 0
        /// Connections opened since the start.
        public var opened = 0
        /// Connections ended, by how: "close" (an AMQP close was completed, then TCP closed), "fin", "rst",
        /// "evicted" (ended by amqpscope: idle, or too many connections).
        public var closed: [String: Int] = [:]
        /// Heartbeat frames (AMQP 1.0: empty frames) per direction.
        public var heartbeats = PerDirection(repeating: 0)
        /// Frames per direction and type (0-9-1: method, header, body, heartbeat; 1.0: the performative, empty,
        /// sasl).
        public var frames = PerDirection(repeating: [String: Int]())
        /// Bytes on the wire (TCP payload) per direction.
        public var bytes = PerDirection(repeating: 0)
        /// RSTs by the errno they give the receiving socket ("none" when no call sees one).
        public var resets: [String: Int] = [:]
        /// Capture gaps (bytes never captured) in its connections.
        public var gaps = 0
    }

    /// Per server ("address:port"), at most `maximumServers` of them and "other".
    public var servers: [String: Server] = [:]

    /// Servers named in labels, at most; the rest are added up under "other" (labels stay bounded).
    public static let maximumServers = 64

    /// An empty total.
    public init() {}

    /// The key a server's numbers go under: its own while fewer than `maximumServers` are named, else "other".
    func key(_ name: String) -> String {
        servers[name] != nil || servers.count < Self.maximumServers ? name : "other"
    }

    /// Adds one connection's numbers: `ended` when it is over (counted in `closed`), else counted as open.
    mutating func add(_ r: ConnectionRecord, ended: Bool) {
        // Changed in place: a copy of the server's numbers would copy its dictionaries on every change.
        Self.add(r, ended: ended, to: &servers[key(r.info.server.description), default: Server()])
    }

    private static func add(_ r: ConnectionRecord, ended: Bool, to s: inout Server) {
        s.opened += 1
        if ended {
            s.closed[how(r), default: 0] += 1
        } else {
            s.open += 1
        }
        for d in Direction.allCases {
            let f = r.frameCounts[d]
            let p = r.performativeCounts[d]
            s.heartbeats[d] += f.heartbeat + p.empty
            func count(_ type: String, _ n: Int) { if n > 0 { s.frames[d][type, default: 0] += n } }
            count("method", f.method)
            count("header", f.header)
            count("body", f.body)
            count("heartbeat", f.heartbeat)
            count("open", p.open)
            count("begin", p.begin)
            count("attach", p.attach)
            count("flow", p.flow)
            count("transfer", p.transfer)
            count("disposition", p.disposition)
            count("detach", p.detach)
            count("end", p.end)
            count("close", p.close)
            count("empty", p.empty)
            count("sasl", p.sasl)
            s.bytes[d] += r.counters[d].payloadBytes
            s.gaps += r.counters[d].gaps
        }
        for m in r.moments {
            guard case .reset(let info) = m.kind, !info.repeated else { continue }
            s.resets[ResetErrno.predict(info.receiverState).map { "\($0.errno)" } ?? "none", default: 0] += 1
        }
    }

    /// How a connection ended, for `closed`.
    static func how(_ r: ConnectionRecord) -> String {
        switch r.endReason {
        case .idle?, .evicted?, .replaced?: return "evicted"
        case .reset?: return "rst"
        default: break
        }
        let amqpClosed =
            r.keyFrames.contains { f in
                if case .method(.connectionCloseOk) = f.frame.content { return true }
                return false
            }
            || r.keyPerformatives.filter { if case .close? = $0.frame.performative { true } else { false } }.count >= 2
        return amqpClosed ? "close" : "fin"
    }

    /// Adds one server's numbers under `name` (under "other" once `maximumServers` are named).
    public mutating func add(_ s: Server, as name: String) {
        // Changed in place, like `add(_:ended:)`.
        func merge(into t: inout Server) {
            t.open += s.open
            t.opened += s.opened
            t.closed.merge(s.closed, uniquingKeysWith: +)
            for d in Direction.allCases {
                t.heartbeats[d] += s.heartbeats[d]
                t.frames[d].merge(s.frames[d], uniquingKeysWith: +)
                t.bytes[d] += s.bytes[d]
            }
            t.resets.merge(s.resets, uniquingKeysWith: +)
            t.gaps += s.gaps
        }
        merge(into: &servers[key(name), default: Server()])
    }

    /// The two totals added.
    public static func + (a: TrafficTotals, b: TrafficTotals) -> TrafficTotals {
        var out = a
        for (name, s) in b.servers { out.add(s, as: name) }
        return out
    }
}

extension Engine {
    /// The totals so far: every ended connection, and the open ones as they stand.
    public mutating func trafficTotals() -> TrafficTotals {
        var live = TrafficTotals()
        // Each open record is read where it lies (not copied, not sorted): this runs every second of a live capture.
        for slot in state.slots.values { state.entries[slot]?.entry.builder.addOpen(to: &live) }
        return state.endedTotals + live
    }
}

extension RecordBuilder {
    /// Adds this open connection's numbers as they stand. (Mutating only so that the caller reaches it in place: a
    /// read through an optional array element copies the whole builder.)
    mutating func addOpen(to totals: inout TrafficTotals) { totals.add(record, ended: false) }
}
