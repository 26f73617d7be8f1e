// The AMQP 1.0 diagnoses. The codes are 0-9-1's where the meaning is the same (missed-heartbeats for an idle
// timeout, connection-error for close with an error, abrupt-close); session-error and link-error are 1.0's own.
import AMQPScopeAMQP10
import AMQPScopePackets
import AMQPScopeReassembly

extension Diagnoser {
    var story10: AMQP10Story? { story.amqp10 }

    static func milliseconds(_ ms: UInt32) -> String {
        ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }

    /// The close frames with their error, in order.
    var closes10: [(AMQP10FrameRecord, AMQP10Error?)] {
        record.keyPerformatives.compactMap { f in
            if case .close(let e)? = f.frame.performative { return (f, e) }
            return nil
        }
    }

    /// Frame times of a side (kept: the heartbeat ring holds empty frames only, so frames are read from the last
    /// frame times and the key performatives).
    func frames10(sentBy side: Side, from: Timestamp, to: Timestamp) -> [Timestamp] {
        record.heartbeatTimes[sentBy: side].filter { $0 > from && $0 <= to }
    }

    // MARK: - missed-heartbeats: the idle timeout

    /// A side silent past the idle timeout its peer advertised, and who then closed; and a side whose own idle
    /// timeout fired although its peer's frames were arriving (they sat unread: the application did not service the
    /// connection).
    func idleTimeouts10() -> [Diagnosis] {
        guard let s10 = story10 else { return [] }
        var out: [Diagnosis] = []
        var explained = Set<Int>()
        // A side closing with resource-limit-exceeded while its peer's frames kept arriving within its own timeout.
        for (close, error) in closes10 {
            guard let error, error.condition == "amqp:resource-limit-exceeded" else { continue }
            let closer = close.direction.sender
            let peer = closer.peer
            guard let timeout = s10.idleTimeOut(advertisedBy: closer) else { continue }
            let window = Int64(timeout) * 1_000_000
            let peerFrames = frameTimes10(sentBy: peer, before: close.time)
            guard let lastPeer = peerFrames.last, close.time.since(lastPeer) < window else { continue }
            explained.insert(close.packetNumber)
            out.append(unreadFrames(close: close, error: error, timeout: timeout, peerFrames: peerFrames))
        }
        for side in Side.allCases {
            let peer = side.peer
            guard let timeout = s10.idleTimeOut(advertisedBy: peer) else { continue }
            let interval = Int64(timeout) * 1_000_000
            // The peer's first close (close, FIN or RST), and this side's last frame before it: a silence longer than
            // the peer's idle timeout there is what the peer gave up on (the side may speak again later, as a frozen
            // process does when it resumes). With no close, the silence that runs to the end of the capture.
            let peerClose = closeEvent(by: peer, after: record.firstTime)
            let until = peerClose?.time ?? record.endTime ?? record.lastTime
            guard let silentFrom = frameTimes10(sentBy: side, before: until).last(where: { $0 < until }) else {
                continue
            }
            let ownClose = closeEvent(by: side, after: silentFrom)
            guard until.since(silentFrom) > interval, ownClose == nil || ownClose!.time >= until,
                !(peerClose.map { explained.contains($0.packet) } ?? false)
            else { continue }
            // Not a silence that matters when the connection had already been closed cleanly.
            if let completed = amqpCloseCompleted(), completed <= silentFrom { continue }
            out.append(
                silence10(
                    side: side, from: silentFrom, to: until, timeout: timeout, close: peerClose,
                    trailing: peerClose == nil || record.lastFrameTime[sentBy: side].map { $0 <= silentFrom } ?? true))
        }
        return out
    }

    /// Every frame time of a side up to `time`: its empty frames, its key frames and its last frame.
    func frameTimes10(sentBy side: Side, before time: Timestamp) -> [Timestamp] {
        var times = record.heartbeatTimes[sentBy: side].filter { $0 <= time }
        times += record.keyPerformatives.filter { $0.direction.sender == side && $0.time <= time }.map(\.time)
        if let last = record.lastFrameTime[sentBy: side], last <= time { times.append(last) }
        for entry in record.timeline {
            if case .run(let run) = entry, run.amqp10, run.direction.sender == side, run.last <= time {
                times.append(run.last)
            }
        }
        return times.sorted()
    }

    func unreadFrames(close: AMQP10FrameRecord, error: AMQP10Error, timeout: UInt32, peerFrames: [Timestamp])
        -> Diagnosis
    {
        let closer = close.direction.sender
        let peer = closer.peer
        let window = Int64(timeout) * 1_000_000
        let lastPeer = peerFrames.last!
        let recent = peerFrames.filter { close.time.since($0) <= 4 * window }
        let ownLast = frameTimes10(sentBy: closer, before: close.time).last { $0 < close.time }
        var summary =
            "\(story.describe(closer)) closed the connection at \(clock(close.time)) with "
            + "\(AMQP10Story.describe(error)), yet the \(peer) had kept sending: its last frame came "
            + "\(Self.seconds(close.time.since(lastPeer))) before, within the \(closer)'s own "
            + "\(Self.milliseconds(timeout)) idle timeout"
        if !recent.isEmpty {
            summary += " (\(recent.count) frame\(recent.count == 1 ? "" : "s") in the last \(Self.seconds(4 * window)))"
        }
        summary +=
            ". The frames reached the \(closer)'s host but its application did not read them: it did not service "
            + "the connection"
        if let ownLast {
            summary += " (the \(closer) itself sent nothing for \(Self.seconds(close.time.since(ownLast))))"
        }
        summary += ". This is AMQP 1.0's twin of a client starving its heartbeats."
        var evidence: [Evidence] = []
        if let ownLast {
            evidence.append(
                Evidence(packetNumber: 0, time: ownLast, what: "last frame from the \(closer) before the close"))
        }
        evidence.append(Evidence(packetNumber: 0, time: lastPeer, what: "last frame from the \(peer) before the close"))
        evidence.append(
            Evidence(
                packetNumber: close.packetNumber, time: close.time,
                what: "close from the \(closer): \(AMQP10Story.describe(error))"))
        var details = [
            "the \(closer) advertised idle-time-out \(timeout) ms in its open: the \(peer) must send something at "
                + "least that often, and did"
        ]
        if error.description?.contains("local-idle-timeout expired") == true {
            details.append(
                "\"local-idle-timeout expired\" is Qpid Proton's own text: Proton checks its idle timer when its "
                    + "event loop next runs, before it reads what waited in the socket, so a stalled application "
                    + "makes it give up on a peer that was alive")
        }
        let acks = record.packetsSinceLastFrame[sentBy: closer]
        if acks > 0 {
            details.append(
                "the \(closer)'s TCP stack acknowledged the \(peer)'s frames (\(acks) packet\(acks == 1 ? "" : "s") "
                    + "after its last frame): the host was up and the socket open")
        }
        return make(
            ending: true, .missedHeartbeats, .error, summary, side: closer, evidence: evidence, details: details,
            productHint: "proton")
    }

    func silence10(
        side: Side, from: Timestamp, to: Timestamp, timeout: UInt32,
        close: (what: String, time: Timestamp, packet: Int)?, trailing: Bool
    ) -> Diagnosis {
        let peer = side.peer
        let length = to.since(from)
        let empties = record.heartbeatTimes[sentBy: peer].filter { $0 > from && $0 <= to }
        var summary =
            "\(story.describe(side)) sent nothing for \(Self.seconds(length)) though the \(peer) advertised an idle "
            + "timeout of \(Self.milliseconds(timeout)) in its open"
            + (empties.isEmpty
                ? ""
                : ", while the \(peer) kept sending (\(empties.count) empty frame\(empties.count == 1 ? "" : "s"))")
        var errno: ErrnoPrediction?
        if let close {
            summary += "; then the \(peer) \(close.what) at \(clock(close.time))"
            if let predicted = errnoOfClose(close, by: peer) {
                errno = predicted
            }
            summary += "."
        } else {
            summary += "; the capture ends before anyone closed the connection."
        }
        let fromPacket = from == record.lastFrameTime[sentBy: side] ? record.lastFramePacket[sentBy: side] : 0
        let evidence = silenceEvidence(
            side: side, from: from, fromPacket: fromPacket, peerBeats: empties, beat: "empty frames", close: close)
        var details = [
            "idle-time-out \(timeout) ms in the \(peer)'s open: the \(side) must send a frame (an empty one at least) "
                + "within it; peers usually allow twice that before giving up"
        ]
        let peerProduct = story.peer(peer)?.product?.lowercased() ?? ""
        if peerProduct.contains("rabbitmq"), peer == .server {
            details.append(
                "RabbitMQ's log should have: \"closing AMQP connection ... missed heartbeats from client\"; its AMQP "
                    + "1.0 plugin closes such a connection with an RST and no close performative")
        }
        if let advertised = s10Timeout(side), advertised < 1000,
            story.peer(side)?.product?.lowercased().contains("rabbitmq") == true,
            record.heartbeatTimes[sentBy: side].isEmpty
        {
            details.append(
                "the \(side) (RabbitMQ) sent no empty frame at all: its AMQP 1.0 plugin counts the peer's idle-time-out "
                    + "in whole seconds and sends nothing when it is under one second (\(advertised) ms here)")
        }
        if trailing { details.append(afterLastFrame(side)) }
        return make(
            ending: close != nil, .missedHeartbeats, close != nil ? .error : .warning, summary, side: side,
            errno: errno, evidence: evidence, details: details)
    }

    /// The idle timeout the peer of `side` advertised (what `side` had to honour).
    func s10Timeout(_ side: Side) -> UInt32? { story10?.idleTimeOut(advertisedBy: side.peer) }

    // MARK: - errors

    /// close with an error, and a failed SASL outcome: connection-error. end with an error: session-error. detach
    /// with an error: link-error.
    func errors10(explained: Set<Int>) -> [Diagnosis] {
        guard let s10 = story10 else { return [] }
        var out: [Diagnosis] = []
        if let sasl = s10.sasl, let outcome = sasl.outcome, outcome.code != 0 {
            let who = [sasl.mechanism, sasl.user.map { "user \"\($0)\"" }].compactMap { $0 }.joined(separator: ", ")
            out.append(
                make(
                    ending: true, .connectionError, .error,
                    "the server refused the client's SASL authentication\(who.isEmpty ? "" : " (\(who))"): "
                        + "sasl-outcome \(outcome.codeName) (\(outcome.code)) at \(clock(sasl.outcomeTime ?? record.firstTime)).",
                    side: .server,
                    evidence: [
                        Evidence(
                            packetNumber: sasl.outcomePacket, time: sasl.outcomeTime ?? record.firstTime,
                            what: "sasl-outcome \(outcome.codeName)")
                    ],
                    details: [
                        outcome.code == 1
                            ? "code 1 (auth) means the credentials were wrong or the mechanism was refused"
                            : "codes 2-4 (sys, sys-perm, sys-temp) mean the server could not authenticate: a system "
                                + "error, permanent or temporary"
                    ]))
        }
        for (close, error) in closes10 {
            guard let error, !explained.contains(close.packetNumber) else { continue }
            out.append(
                make(
                    ending: true, .connectionError, .error,
                    "the \(close.direction.sender) closed the connection with \(AMQP10Story.describe(error)).",
                    side: close.direction.sender,
                    evidence: [Evidence(packetNumber: close.packetNumber, time: close.time, what: "close")],
                    details: conditionDetails(error)))
        }
        for end in s10.sessionEnds {
            guard let error = end.error else { continue }
            let links = s10.links.filter { $0.clientChannel != nil && $0.clientChannel == end.clientChannel }
            var summary =
                "the \(end.side) ended the session on channel \(end.channel) with \(AMQP10Story.describe(error))"
            var evidence = [Evidence(packetNumber: end.packetNumber, time: end.time, what: "end from the \(end.side)")]
            let unanswered = links.filter { !$0.answered }
            if let link = unanswered.first {
                let attacher = link.attach.clientToServer != nil ? Side.client : .server
                summary +=
                    "; the \(attacher)'s \(link.clientRole) link \"\(link.name)\""
                    + (link.address.map { " (\(link.clientRole == .sender ? "target" : "source") \($0))" } ?? "")
                    + " got no attach in reply: the \(end.side) refused the link by ending its whole session"
                if let a = link.attach[attacher == .client ? .clientToServer : .serverToClient] {
                    evidence.insert(
                        Evidence(packetNumber: a.packetNumber, time: a.time, what: "attach \"\(link.name)\""), at: 0)
                }
            } else if !links.isEmpty {
                summary +=
                    "; its link\(links.count == 1 ? "" : "s") "
                    + links.prefix(3).map { "\"\($0.name)\"" + ($0.address.map { " (\($0))" } ?? "") }.joined(
                        separator: ", ")
                    + " ended with it"
            }
            out.append(
                make(
                    .sessionError, .warning, summary + ".", side: end.side, evidence: evidence,
                    details: conditionDetails(error)))
        }
        for link in s10.links {
            for d in Direction.allCases {
                guard let f = link.detach[d], case .detach(let detach)? = f.frame.performative,
                    let error = detach.error
                else { continue }
                out.append(
                    make(
                        .linkError, .warning,
                        "the \(d.sender) detached the client's \(link.clientRole) link \"\(link.name)\""
                            + (link.address.map { " (\(link.clientRole == .sender ? "target" : "source") \($0))" } ?? "")
                            + " with \(AMQP10Story.describe(error)).",
                        side: d.sender,
                        evidence: [Evidence(packetNumber: f.packetNumber, time: f.time, what: "detach")],
                        details: conditionDetails(error)))
            }
        }
        return out
    }

    /// What a condition means, from the specification (the restricted type it belongs to) and from recorded runs.
    func conditionDetails(_ error: AMQP10Error) -> [String] {
        var out: [String] = []
        if let family = AMQP10Conditions.family(of: error.condition) {
            out.append("\(error.condition) is one of the specification's \(family) conditions")
        } else {
            out.append("\(error.condition) is not a condition of the specification: the peer's own")
        }
        switch error.condition {
        case "amqp:not-found":
            out.append(
                "the node (queue, exchange or address) the link named does not exist, and the peer does not "
                    + "create it")
        case "amqp:unauthorized-access":
            out.append("the user may not use this node or this vhost: check its permissions")
        case "amqp:connection:forced":
            out.append("an operator or a shutting-down broker closed the connection")
        case "amqp:resource-limit-exceeded":
            out.append("a limit was reached: an idle timeout, or a limit on links, sessions or message size")
        case "amqp:link:detach-forced":
            out.append("the peer detached the link on its own (an operator, a deleted queue, a broker failover)")
        default: break
        }
        return out
    }

    func abruptClose10() -> [Diagnosis] {
        // Before both opens (a refused SASL login, say) a TCP close is the only way to end.
        guard closes10.isEmpty, story10?.opens.clientToServer != nil, story10?.opens.serverToClient != nil else {
            return []
        }
        return tcpCloseWithout("a close performative")
    }
}
