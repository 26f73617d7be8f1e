// The AMQP 1.0 part of a connection's story: what each side said in open, the SASL exchange, and the links, each
// with how it ended. A pure function of the record's key performatives.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets

/// What the two sides of an AMQP 1.0 connection said about themselves, and what became of its links.
public struct AMQP10Story: Hashable, Sendable {
    /// Each side's open, with where it was seen.
    public var opens: PerDirection<AMQP10FrameRecord?>
    /// The SASL mechanism the client chose, its user name (PLAIN) and the outcome.
    public var sasl: SASLExchange?
    /// The links, in the order they were first attached.
    public var links: [LinkSummary]
    /// Each session's end, in order.
    public var sessionEnds: [SessionEnd]

    /// The SASL exchange.
    public struct SASLExchange: Hashable, Sendable {
        /// The mechanisms the server offered.
        public var offered: [String]
        /// The client's choice.
        public var mechanism: String?
        /// PLAIN's user name.
        public var user: String?
        /// The server's outcome and where it was seen.
        public var outcome: SaslOutcome?
        /// The outcome's packet.
        public var outcomePacket: Int
        /// The outcome's time.
        public var outcomeTime: Timestamp?
    }

    /// A session's end: who ended it, on which channel, with which error.
    public struct SessionEnd: Hashable, Sendable {
        /// The side that sent end.
        public var side: Side
        /// The channel it was sent on.
        public var channel: UInt16
        /// The client's channel for the session (the one the client's begin used).
        public var clientChannel: UInt16?
        /// The error, if any.
        public var error: AMQP10Error?
        /// Its packet.
        public var packetNumber: Int
        /// Its time.
        public var time: Timestamp
    }

    /// One link: who attached it, its addresses, and how it ended.
    public struct LinkSummary: Hashable, Sendable {
        /// The link's name.
        public var name: String
        /// The client's role on it (sender: the client publishes; receiver: it consumes).
        public var clientRole: LinkRole
        /// The source address (where messages come from).
        public var source: String?
        /// The target address (where messages go).
        public var target: String?
        /// The client's channel for the link's session.
        public var clientChannel: UInt16?
        /// Each side's attach.
        public var attach: PerDirection<AMQP10FrameRecord?>
        /// Each side's detach.
        public var detach: PerDirection<AMQP10FrameRecord?>
        /// How it ended, in words: "detached by the client", "session ended by the server (amqp:not-found)", ...
        public var ending: String
        /// The error that ended it, and the side that sent it.
        public var error: AMQP10Error?
        /// The side that sent the error.
        public var errorSide: Side?
        /// Deliveries the client and the server sent on it.
        public var deliveries: PerDirection<Int>

        /// The address the link is about: the target for a sending client, the source for a receiving one.
        public var address: String? { clientRole == .sender ? target ?? source : source ?? target }
        /// Whether the peer of the side that attached first answered with its own attach.
        public var answered: Bool { attach.clientToServer != nil && attach.serverToClient != nil }
    }

    /// The open a side sent.
    public func open(sentBy side: Side) -> Open? {
        guard case .open(let o)? = opens[sentBy: side]?.frame.performative else { return nil }
        return o
    }

    /// The idle timeout a side advertised in its open, in milliseconds (nil: none, or 0).
    public func idleTimeOut(advertisedBy side: Side) -> UInt32? {
        open(sentBy: side)?.idleTimeOut.flatMap { $0 == 0 ? nil : $0 }
    }
}

extension AMQP10Story {
    init(_ record: ConnectionRecord) {
        opens = PerDirection(repeating: nil)
        sasl = nil
        links = []
        sessionEnds = []
        // Sessions: each side's channel for it.
        var sessions: [PerDirection<UInt16?>] = []
        func session(_ d: Direction, _ channel: UInt16) -> Int? {
            sessions.lastIndex { $0[d] == channel }
        }
        var linkSessions: [Int?] = []
        var handles: [PerDirection<UInt32?>] = []
        var ended = PerDirection<Set<Int>>(repeating: [])
        for f in record.keyPerformatives {
            let d = f.direction
            let channel = f.frame.channel
            switch f.frame.performative {
            case .open?:
                if opens[d] == nil { opens[d] = f }
            case .saslMechanisms(let offered)?:
                sasl = sasl ?? SASLExchange(offered: [], outcomePacket: 0)
                sasl?.offered = offered
            case .saslInit(let i)?:
                sasl = sasl ?? SASLExchange(offered: [], outcomePacket: 0)
                sasl?.mechanism = i.mechanism
                sasl?.user = i.user
            case .saslOutcome(let o)?:
                sasl = sasl ?? SASLExchange(offered: [], outcomePacket: 0)
                sasl?.outcome = o
                sasl?.outcomePacket = f.packetNumber
                sasl?.outcomeTime = f.time
            case .begin(let b)?:
                if let remote = b.remoteChannel, let s = session(d.reversed, remote), sessions[s][d] == nil {
                    sessions[s][d] = channel
                } else {
                    var s = PerDirection<UInt16?>(repeating: nil)
                    s[d] = channel
                    sessions.append(s)
                }
            case .attach(let a)?:
                let s = session(d, channel)
                // The peer's end of a link has its name and the other role (names are unique per direction: a
                // sender and a receiver may share one).
                let role = d == .clientToServer ? a.role : (a.role == .sender ? LinkRole.receiver : .sender)
                if let i = links.indices.last(where: {
                    links[$0].name == a.name && links[$0].clientRole == role && links[$0].attach[d] == nil
                        && linkSessions[$0] == s && links[$0].ending.isEmpty
                }) {
                    links[i].attach[d] = f
                    handles[i][d] = a.handle
                    if links[i].source == nil { links[i].source = a.source?.address }
                    if links[i].target == nil { links[i].target = a.target?.address }
                } else {
                    var attach = PerDirection<AMQP10FrameRecord?>(repeating: nil)
                    attach[d] = f
                    var h = PerDirection<UInt32?>(repeating: nil)
                    h[d] = a.handle
                    links.append(
                        LinkSummary(
                            name: a.name, clientRole: role,
                            source: a.source?.address, target: a.target?.address,
                            clientChannel: s.flatMap { sessions[$0].clientToServer },
                            attach: attach, detach: PerDirection(repeating: nil), ending: "", error: nil,
                            errorSide: nil, deliveries: PerDirection(repeating: 0)))
                    linkSessions.append(s)
                    handles.append(h)
                }
            case .detach(let detach)?:
                let s = session(d, channel)
                guard
                    let i = links.indices.last(where: {
                        handles[$0][d] == detach.handle && linkSessions[$0] == s && links[$0].detach[d] == nil
                    })
                else { break }
                links[i].detach[d] = f
                if let e = detach.error, links[i].error == nil {
                    links[i].error = e
                    links[i].errorSide = d.sender
                }
                if links[i].ending.isEmpty {
                    links[i].ending =
                        "detached by the \(d.sender)" + (detach.error.map { " with \(Self.describe($0))" } ?? "")
                }
            case .end(let error)?:
                let s = session(d, channel)
                sessionEnds.append(
                    SessionEnd(
                        side: d.sender, channel: channel, clientChannel: s.flatMap { sessions[$0].clientToServer },
                        error: error, packetNumber: f.packetNumber, time: f.time))
                guard let s, !ended[d].contains(s) else { break }
                ended[d].insert(s)
                for i in links.indices where linkSessions[i] == s && links[i].ending.isEmpty {
                    links[i].ending =
                        "its session was ended by the \(d.sender)" + (error.map { " with \(Self.describe($0))" } ?? "")
                    if let error, links[i].error == nil {
                        links[i].error = error
                        links[i].errorSide = d.sender
                    }
                    if !links[i].answered {
                        links[i].ending += " before the \(d.sender) answered the attach"
                    }
                }
            case .close(let error)?:
                for i in links.indices where links[i].ending.isEmpty {
                    links[i].ending =
                        "the connection was closed by the \(d.sender)"
                        + (error.map { " with \(Self.describe($0))" } ?? "")
                }
            default:
                break
            }
        }
        let endedTCP = record.moments.first { m in
            if case .reset = m.kind { return true }
            if case .fin = m.kind { return true }
            return false
        }
        for i in links.indices where links[i].ending.isEmpty {
            if let m = endedTCP {
                let how: String
                if case .reset = m.kind { how = "reset (RST)" } else { how = "closed (FIN)" }
                links[i].ending = "still attached when the \(m.direction.sender) \(how) the TCP connection"
            } else {
                links[i].ending = "still attached when the capture ended"
            }
        }
        // Deliveries per link, when they were kept.
        for m in record.deliveries {
            let d = m.direction
            guard let s = session(d, m.message.channel),
                let i = links.indices.last(where: { handles[$0][d] == m.message.handle && linkSessions[$0] == s })
            else { continue }
            links[i].deliveries[d] += 1
        }
    }

    /// "amqp:not-found \"NOT_FOUND - no queue ...\"".
    static func describe(_ e: AMQP10Error) -> String {
        e.condition + (e.description.map { " \"\($0)\"" } ?? "")
    }
}

extension PeerProperties {
    /// What an AMQP 1.0 peer says about itself in open: its properties (product, version, platform) and its
    /// container id.
    init?(open: Open?) {
        guard let open else { return nil }
        var table = FieldTable()
        for entry in open.properties {
            guard let key = entry.key.text else { continue }
            if let text = entry.value.text {
                table.entries.append(FieldTable.Entry(key: key, value: .longString(LongString(text))))
            } else if let n = entry.value.unsigned {
                table.entries.append(FieldTable.Entry(key: key, value: .int64(Int64(clamping: n))))
            }
        }
        self.init(table: table, containerID: open.containerID)
    }
}
