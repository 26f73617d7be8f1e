// The diagnoses: each a stable code, a severity, one sentence, and the packets that show it.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

struct Diagnoser {
    let story: Story
    let options: StoryOptions
    var record: ConnectionRecord { story.record }

    /// Codes in the order a reader wants them within one severity: causes before their consequences.

    func run() -> [Diagnosis] {
        var out: [Diagnosis] = []
        if record.isAMQP, story.amqp10 != nil {
            let idle = idleTimeouts10()
            out += idle
            out += errors10(explained: Set(idle.flatMap { d in d.evidence.map(\.packetNumber) }))
            out += idleTimeoutInPath()
            out += abruptClose10()
            out += protocolViolations()
        } else if record.isAMQP {
            out += missedHeartbeats()
            out += idleTimeoutInPath()
            out += connectionErrors()
            out += channelErrors()
            out += blocked()
            out += heartbeatsDisabled()
            out += abruptClose()
            out += protocolViolations()
        }
        out += flowDiagnoses()
        out += writeAfterClose()
        out += resets()
        out += captureIncomplete()
        return attachBrokerLog(Self.chained(out))
    }

    /// The broker's own words, from `--broker-log`: its warnings and errors (and its closing message) go into the
    /// evidence of the diagnosis they explain, a channel error to the channel-error, the rest to the cause that
    /// ended the connection (or the first diagnosis). The log line a diagnosis said to look for is then not needed.
    func attachBrokerLog(_ diagnoses: [Diagnosis]) -> [Diagnosis] {
        let said = story.brokerLog.filter { e in
            e.line.kind == .closing || e.line.kind == .missedHeartbeats || e.line.kind == .unexpectedClose
                || e.line.kind == .channelError
                || ["warning", "error", "critical", "alert", "emergency"].contains(e.line.level)
        }
        guard !said.isEmpty, !diagnoses.isEmpty else { return diagnoses }
        var out = diagnoses
        let root = out.firstIndex { $0.consequenceOf == nil && $0.severity > .info } ?? 0
        for event in said {
            let target = event.line.kind == .channelError ? out.firstIndex { $0.code == .channelError } ?? root : root
            let text =
                "the broker logged at \(clock(event.time)) (\(event.line.level), log line \(event.line.number)): "
                + event.line.text
            out[target].details.removeAll { $0.hasPrefix("RabbitMQ's log should have") }
            out[target].details.append(text)
            out[target].evidence.append(
                Evidence(packetNumber: 0, time: event.time, what: "broker log line \(event.line.number)"))
        }
        return out
    }

    /// Codes that follow from a connection-ending cause when one is found: the TCP aftermath and the messages.
    static let consequenceCodes: Set<DiagnosisCode> = [.writeAfterClose, .reset, .abruptClose, .messagesAtRisk]

    /// One chain per connection: the earliest connection-ending cause as the headline, its consequences under it
    /// in the order they happened, each fact said once; then the other findings, worst first.
    static func chained(_ all: [Diagnosis]) -> [Diagnosis] {
        let byRank = all.sorted { a, b in
            if a.severity != b.severity { return a.severity > b.severity }
            return (a.code.rank, a.evidence.first?.packetNumber ?? 0) < (
                b.code.rank, b.evidence.first?.packetNumber ?? 0
            )
        }
        guard
            let root = all.filter(\.endsConnection).min(by: {
                ($0.evidence.first?.time ?? Timestamp(nanoseconds: 0))
                    < ($1.evidence.first?.time ?? Timestamp(nanoseconds: 0))
            })
        else { return byRank }
        var consequences = all.filter { consequenceCodes.contains($0.code) }
        // An RST or FIN the cause already tells needs no abrupt-close of its own.
        if root.code == .missedHeartbeats || root.code == .idleTimeoutInPath {
            consequences.removeAll { $0.code == .abruptClose }
        }
        // The idle timeout says the heartbeats were off: no separate heartbeats-disabled.
        let dropped: Set<DiagnosisCode> = root.code == .idleTimeoutInPath ? [.heartbeatsDisabled] : []
        // A late write told with the RST it drew and the errno leaves nothing for that reset to add.
        let lateWrites = consequences.filter { $0.code == .writeAfterClose && $0.errno != nil }
        consequences.removeAll { r in
            r.code == .reset
                && lateWrites.contains { w in
                    w.errno == r.errno
                        && r.evidence.allSatisfy { e in w.evidence.contains { $0.packetNumber == e.packetNumber } }
                }
        }
        // In the order they happened: by the first packet each rests on.
        consequences.sort {
            ($0.evidence.map(\.packetNumber).filter { $0 > 0 }.min() ?? 0, $0.code.rank)
                < ($1.evidence.map(\.packetNumber).filter { $0 > 0 }.min() ?? 0, $1.code.rank)
        }
        let head = root
        var out = byRank.filter { $0 != root && !consequenceCodes.contains($0.code) && !dropped.contains($0.code) }
        let at =
            out.firstIndex {
                $0.severity < head.severity || ($0.severity == head.severity && $0.code.rank > head.code.rank)
            } ?? out.endIndex
        out.insert(head, at: at)
        for (i, var c) in consequences.enumerated() {
            c.consequenceOf = at
            out.insert(c, at: at + 1 + i)
        }
        return out
    }

    /// A diagnosis with the advice table's lines for its code (none for a reset that harmed nobody).
    func make(
        ending: Bool = false, _ code: DiagnosisCode, _ severity: Diagnosis.Severity, _ summary: String, side: Side?,
        errno: ErrnoPrediction? = nil,
        evidence: [Evidence], details: [String] = [], productHint: String? = nil
    ) -> Diagnosis {
        let harmless = (code == .reset || code == .writeAfterClose) && severity == .info
        let product = [story.client?.product, productHint].compactMap { $0 }.joined(separator: " ")
        var d = Diagnosis(
            code: code, severity: severity, summary: summary, side: side, errno: errno,
            evidence: evidence, details: details,
            advice: harmless
                ? []
                : AdviceTable.advice(
                    for: code, clientProduct: product.isEmpty ? nil : product, amqp10: story.amqp10 != nil))
        d.endsConnection = ending
        return d
    }

    /// "404 \"NOT_FOUND - no queue ...\"": RabbitMQ's texts start with the code's name; others get it added.
    static func reply(_ code: UInt16, _ text: String) -> String {
        let name = AMQPSpec.replyCodes[code]?.name ?? "UNKNOWN"
        return text.hasPrefix(name) ? "\(code) \"\(text)\"" : "\(code) \(name) \"\(text)\""
    }

    /// "35 µs" under a millisecond, "1.2 ms" under a second (to a tenth of a millisecond), "4 s" or "4.5 s" from a
    /// second on.
    static func shortDuration(_ ns: Int64) -> String {
        guard ns < 1_000_000_000 else { return seconds(ns) }
        if ns < 999_500 { return "\((ns + 500) / 1000) µs" }
        let tenths = (ns + 50_000) / 100_000
        return "\(tenths / 10).\(tenths % 10) ms"
    }

    static func seconds(_ ns: Int64) -> String {
        let tenths = (ns + 50_000_000) / 100_000_000
        return tenths % 10 == 0 ? "\(tenths / 10) s" : "\(tenths / 10).\(tenths % 10) s"
    }

    func clock(_ t: Timestamp) -> String { t.clock }

    // MARK: - Close events

    /// The first event after `time` by which `side` ended the connection: its RST, its FIN or its Connection.Close.
    func closeEvent(by side: Side, after time: Timestamp) -> (what: String, time: Timestamp, packet: Int)? {
        var best: (String, Timestamp, Int)?
        for m in record.moments where m.direction.sender == side && m.time >= time {
            switch m.kind {
            case .reset: if best == nil || m.time < best!.1 { best = ("reset the connection", m.time, m.packetNumber) }
            case .fin:
                if best == nil || m.time < best!.1 { best = ("closed the connection (FIN)", m.time, m.packetNumber) }
            default: break
            }
        }
        // By index: a `for` over the frames would copy every frame (and retain its strings) to look at two fields.
        let frames = record.keyFrames
        for i in frames.indices where frames[i].direction.sender == side && frames[i].time >= time {
            guard best == nil || frames[i].time < best!.1,
                case .method(.connectionClose(let c)) = frames[i].frame.content
            else { continue }
            best = ("closed the connection (Connection.Close \(c.replyCode))", frames[i].time, frames[i].packetNumber)
        }
        for f in record.keyPerformatives where f.direction.sender == side && f.time >= time {
            if case .close(let e)? = f.frame.performative, best == nil || f.time < best!.1 {
                best = (
                    "closed the connection (close" + (e.map { " with \(AMQP10Story.describe($0))" } ?? "") + ")",
                    f.time, f.packetNumber
                )
            }
        }
        return best
    }

    /// When a close was an RST from `peer`, the error the RST gives the other side's next socket call.
    func errnoOfClose(_ close: (what: String, time: Timestamp, packet: Int), by peer: Side) -> ErrnoPrediction? {
        guard let rst = record.moments.first(where: { $0.packetNumber == close.packet && $0.direction.sender == peer }),
            case .reset(let info) = rst.kind
        else { return nil }
        return ResetErrno.predict(info.receiverState)
    }

    // MARK: - missed-heartbeats

    func missedHeartbeats() -> [Diagnosis] {
        guard let negotiated = story.negotiated, negotiated.heartbeat > 0 else { return [] }
        let interval = Int64(negotiated.heartbeat) * 1_000_000_000
        var out: [Diagnosis] = []
        for side in Side.allCases {
            let peer = side.peer
            var silentFrom = record.lastFrameTime[sentBy: side] ?? record.firstTime
            // A side that wrote again only after its peer had closed (a late write on a dead connection) was silent
            // from its last frame before that close: the silence, not the late write, is the story.
            if let peerClose = closeEvent(by: peer, after: record.firstTime), peerClose.time < silentFrom,
                let gap = record.idleGaps[sentBy: side].first(where: {
                    $0.from < peerClose.time && $0.to > peerClose.time
                })
            {
                silentFrom = gap.from
            }
            // The trailing silence: from this side's last frame to the peer's close, or to the end of the capture.
            let close = closeEvent(by: peer, after: silentFrom)
            let ownClose = closeEvent(by: side, after: silentFrom)
            let silentTo = close?.time ?? record.endTime ?? record.lastTime
            let peerBeats = record.heartbeatTimes[sentBy: peer].filter { $0 > silentFrom && $0 <= silentTo }
            let peerSpoke = (record.lastFrameTime[sentBy: peer] ?? silentFrom) > silentFrom
            if silentTo.since(silentFrom) >= 2 * interval && peerSpoke
                && (ownClose == nil || ownClose!.time >= silentTo)
            {
                let fromPacket =
                    silentFrom == record.lastFrameTime[sentBy: side]
                    ? record.lastFramePacket[sentBy: side]
                    : record.idleGaps[sentBy: side].first { $0.from == silentFrom }?.fromPacket ?? 0
                // What the side's TCP stack did after its last frame is known only when nothing came after.
                out.append(
                    silence(
                        side: side, from: silentFrom, fromPacket: fromPacket, to: silentTo,
                        peerBeats: peerBeats, close: close, negotiated: negotiated,
                        trailing: silentFrom == record.lastFrameTime[sentBy: side]))
                continue
            }
            // A silence inside the connection that it survived: the longest one.
            if let gap = record.idleGaps[sentBy: side].filter({ $0.length >= 2 * interval }).max(by: {
                $0.length < $1.length
            }) {
                let beats = record.heartbeatTimes[sentBy: peer].filter { $0 > gap.from && $0 < gap.to }
                guard !beats.isEmpty else { continue }
                out.append(
                    silence(
                        side: side, from: gap.from, fromPacket: gap.fromPacket, to: gap.to, peerBeats: beats,
                        close: nil,
                        negotiated: negotiated, trailing: false))
            }
        }
        return out
    }

    func silence(
        side: Side, from: Timestamp, fromPacket: Int, to: Timestamp, peerBeats: [Timestamp],
        close: (what: String, time: Timestamp, packet: Int)?, negotiated: Negotiated, trailing: Bool
    ) -> Diagnosis {
        let peer = side.peer
        let length = to.since(from)
        var summary =
            "\(story.describe(side)) sent nothing for \(Self.seconds(length)) though a \(negotiated.heartbeat) s "
            + "heartbeat was "
            + "\(negotiated.inferred ? "in use (inferred from the cadence)" : "negotiated"), while the \(peer) kept "
            + "sending"
            + (peerBeats.isEmpty ? "" : " (\(peerBeats.count) heartbeat\(peerBeats.count == 1 ? "" : "s"))")
        var errno: ErrnoPrediction?
        if let close {
            summary += "; then the \(peer) \(close.what) at \(clock(close.time))"
            // When that close was an RST landing on the silent side: the errno (the reset under it tells it).
            if let predicted = errnoOfClose(close, by: peer) {
                errno = predicted
            }
            summary += "."
            if let late = record.lastFrameTime[sentBy: side], late > close.time {
                summary +=
                    " The \(side) wrote again only at \(clock(late)), on the connection the \(peer) had already "
                    + "closed."
            }
        } else if trailing {
            summary += "; the capture ends before anyone closed the connection."
        } else {
            summary += "; it spoke again at \(clock(to))."
        }
        let evidence = silenceEvidence(
            side: side, from: from, fromPacket: fromPacket, peerBeats: peerBeats, beat: "heartbeats", close: close)
        var details: [String] = []
        if side == .client, story.server?.product?.lowercased().contains("rabbitmq") == true, close != nil {
            details.append(
                "RabbitMQ's log should have: \"missed heartbeats from client, timeout: \(negotiated.heartbeat)s\"")
        }
        if trailing { details.append(afterLastFrame(side)) }
        return make(
            ending: close != nil, .missedHeartbeats, close != nil ? .error : .warning, summary, side: side,
            errno: errno, evidence: evidence, details: details)
    }

    /// A silence's evidence: the silent side's last frame, the beats its peer sent meanwhile, and the peer's close.
    func silenceEvidence(
        side: Side, from: Timestamp, fromPacket: Int, peerBeats: [Timestamp], beat: String,
        close: (what: String, time: Timestamp, packet: Int)?
    ) -> [Evidence] {
        var evidence = [Evidence(packetNumber: fromPacket, time: from, what: "last \(unit) from the \(side)")]
        if let first = peerBeats.first, let last = peerBeats.last {
            evidence.append(
                Evidence(
                    packetNumber: 0, time: first,
                    what: "first of \(peerBeats.count) \(beat) from the \(side.peer) (last at \(clock(last)))"))
        }
        if let close {
            evidence.append(
                Evidence(packetNumber: close.packet, time: close.time, what: "the \(side.peer) \(close.what)"))
        }
        return evidence
    }

    /// What a silent side's TCP stack did after its last frame: still ACKing (the application did not service the
    /// connection), or nothing at all (host or network down).
    func afterLastFrame(_ side: Side) -> String {
        let acks = record.packetsSinceLastFrame[sentBy: side]
        return acks > 0
            ? "the \(side)'s TCP stack still sent \(acks) packet\(acks == 1 ? "" : "s") (ACKs) after its last \(unit): "
                + "the host was up and the socket open, but the application did not service the connection"
            : "the \(side) sent no TCP packet at all after its last \(unit): the host, or the network to it, may "
                + "have been down"
    }

    // MARK: - resets and late writes

    func resets() -> [Diagnosis] {
        var out: [Diagnosis] = []
        var seen = Set<Side>()
        let cleanlyClosedAt = amqpCloseCompleted()
        for m in record.moments {
            guard case .reset(let info) = m.kind, !info.repeated, !seen.contains(m.direction.sender) else { continue }
            seen.insert(m.direction.sender)
            let sender = m.direction.sender
            let receiver = sender.peer
            let errno = ResetErrno.predict(info.receiverState)
            let evidence = [Evidence(packetNumber: m.packetNumber, time: m.time, what: "RST from the \(sender)")]
            let afterCleanClose = cleanlyClosedAt.map { $0 <= m.time } ?? false
            if let errno, let fallback = record.fallback, info.receiverState == .synSent {
                out.append(
                    make(
                        .reset, .info,
                        "the \(sender) refused the connection to \(record.info.server) (an RST to the SYN: "
                            + "\(errno.name) (\(errno.errno)) in the client), and the client connected to "
                            + "\(fallback.server) \(Self.shortDuration(fallback.after)) later (connection "
                            + "\(fallback.connection.rawValue)), which the server accepted: an address fallback (happy "
                            + "eyeballs, or a client trying each address of a name), harmless.",
                        side: receiver, errno: errno, evidence: evidence,
                        details: ["rule: " + errno.rule]))
                continue
            }
            // The resetting side had closed with an AMQP close (a broker shutting down closes every connection
            // this way without waiting for Close-Ok): the application was told by the close before the RST.
            let toldFirst = record.keyFrames.first { f in
                guard f.direction.sender == sender, f.time <= m.time, case .method(.connectionClose) = f.frame.content
                else { return false }
                return true
            }
            if let errno, !afterCleanClose, let toldFirst {
                out.append(
                    make(
                        .reset, .warning,
                        "the \(sender) reset the connection at \(clock(m.time)), \(Self.shortDuration(m.time.since(toldFirst.time))) "
                            + "after its Connection.Close and before the \(receiver)'s Close-Ok: the \(receiver) was "
                            + "told by the close; a socket call it still makes gets \(errno.name) (\(errno.errno)).",
                        side: receiver, errno: errno, evidence: evidence,
                        details: ["rule: " + errno.rule]))
                continue
            }
            if let errno, !afterCleanClose {
                out.append(
                    make(
                        .reset, .error,
                        "the \(sender) reset the connection at \(clock(m.time)) while the \(receiver) was "
                            + "\(info.receiverState.rawValue): "
                            + "the \(receiver)'s next socket call gets \(errno.name) (\(errno.errno)).",
                        side: receiver, errno: errno, evidence: evidence,
                        details: ["rule: " + errno.rule] + tlsErrorDetails(resetBy: sender, at: m.time)))
            } else {
                let why =
                    afterCleanClose
                    ? "after the AMQP close handshake"
                    : "after the \(receiver) had already closed its side (\(info.receiverState.rawValue))"
                var summary =
                    "the \(sender) reset the connection at \(clock(m.time)) \(why): no application call sees an error."
                if sender == .server, story.server?.product?.lowercased().contains("rabbitmq") == true {
                    summary += " RabbitMQ closes connections this way by default (linger 0)."
                }
                out.append(make(.reset, .info, summary, side: receiver, evidence: evidence))
            }
        }
        return out
    }

    /// Over TLS the application sees its TLS library's report of the reset, not only the socket's errno: what the
    /// recorded runs showed, and the alert the resetting side sent first, if any.
    /// What a direction's "speaking" is: decoded frames, or, over TLS without keys, encrypted records.
    var unit: String { record.tls.map { $0.decrypted ? "frame" : "record" } ?? "frame" }

    func tlsErrorDetails(resetBy sender: Side, at time: Timestamp) -> [String] {
        guard let tls = record.tls else { return [] }
        var out: [String] = []
        if let alert = tls.alerts.last(where: { $0.direction.sender == sender && $0.time <= time }) {
            let what =
                alert.description.map { "a TLS \(TLSNames.alert($0)) alert" }
                ?? (alert.inferred
                    ? "a record of an encrypted alert's length (probably close_notify; inferred)"
                    : "an encrypted TLS alert (probably close_notify)")
            out.append(
                "the \(sender) sent \(what) at \(clock(alert.time)) (packet \(alert.packetNumber)) before the RST")
        }
        out.append(
            "over TLS the application sees its TLS library's error rather than the errno: in recorded runs against "
                + "RabbitMQ 3.10 (close_notify, then RST), pika 1.3.2 on Python's ssl module raised "
                + "SSLEOFError(8, 'EOF occurred in violation of protocol') on its next publish, over TLS 1.3 and 1.2 alike"
        )
        return out
    }

    /// When both Connection.Close and Close-Ok were seen: the close handshake's end.
    func amqpCloseCompleted() -> Timestamp? {
        // AMQP 1.0: each side sends close; the second one completes the handshake.
        let closes = record.keyPerformatives.filter {
            if case .close? = $0.frame.performative { return true }
            return false
        }
        if let first = closes.first, let answer = closes.first(where: { $0.direction != first.direction }) {
            return answer.time
        }
        var closeSeen = false
        for f in record.keyFrames {
            guard case .method(let m) = f.frame.content else { continue }
            if case .connectionClose = m { closeSeen = true }
            if case .connectionCloseOk = m, closeSeen { return f.time }
        }
        return nil
    }

    func writeAfterClose() -> [Diagnosis] {
        var out: [Diagnosis] = []
        for m in record.moments {
            guard case .lateWrite(let length, let afterReset) = m.kind else { continue }
            let writer = m.direction.sender
            let peer = writer.peer
            let peerClose = record.moments.first { p in
                guard p.direction.sender == peer, p.time <= m.time else { return false }
                if case .fin = p.kind { return true }
                if case .reset = p.kind { return true }
                return false
            }
            var evidence: [Evidence] = []
            if let peerClose {
                evidence.append(
                    Evidence(
                        packetNumber: peerClose.packetNumber, time: peerClose.time,
                        what: "the \(peer)'s \(afterReset ? "RST" : "FIN")"))
            }
            evidence.append(
                Evidence(packetNumber: m.packetNumber, time: m.time, what: "\(length) bytes from the \(writer)"))
            let answer = record.moments.first { r in
                if case .reset = r.kind { return r.direction.sender == peer && r.time >= m.time }
                return false
            }
            var summary =
                "the \(writer) wrote \(length) bytes at \(clock(m.time)) after the \(peer) had "
                + (afterReset
                    ? "reset the connection" : "closed it (FIN at \(peerClose.map { clock($0.time) } ?? "?"))")
            var errno: ErrnoPrediction?
            if let answer, case .reset(let info) = answer.kind {
                errno = ResetErrno.predict(info.receiverState)
                evidence.append(
                    Evidence(packetNumber: answer.packetNumber, time: answer.time, what: "RST from the \(peer)"))
                summary += "; the \(peer) answered with an RST at \(clock(answer.time))"
                if let errno { summary += ": the \(writer)'s next socket call gets \(errno.name) (\(errno.errno))" }
            }
            // After the AMQP close handshake both applications are done: a TLS close_notify written into the peer's
            // FIN, and the RST it draws, harm no call.
            let afterCleanClose = amqpCloseCompleted().map { $0 <= m.time } ?? false
            if afterCleanClose { summary += ", after the AMQP close handshake: no application call sees an error" }
            out.append(
                make(
                    .writeAfterClose, afterCleanClose ? .info : .error, summary + ".", side: writer,
                    errno: afterCleanClose ? nil : errno, evidence: evidence,
                    details: errno.map { ["rule: " + $0.rule] } ?? []))
        }
        return out
    }

    // MARK: - AMQP closes

    func abruptClose() -> [Diagnosis] {
        guard record.verdict.isAMQP091 else { return [] }  // 1.0 has its own; 0-10 is not decoded
        let hasClose = record.keyFrames.contains {
            if case .method(.connectionClose) = $0.frame.content { return true }
            return false
        }
        return hasClose ? [] : tcpCloseWithout("Connection.Close")
    }

    /// abrupt-close: the first FIN or RST, when no AMQP close (`closeName`) came before it and the closing side's
    /// close cannot have been lost in the capture.
    func tcpCloseWithout(_ closeName: String) -> [Diagnosis] {
        guard
            let first = record.moments.first(where: { m in
                if case .fin = m.kind { return true }
                if case .reset = m.kind { return true }
                return false
            }), !closeMayBeLost(by: first.direction.sender)
        else { return [] }
        let how: String
        if case .reset = first.kind { how = "reset it (RST)" } else { how = "closed it (FIN)" }
        return [
            make(
                .abruptClose, .warning,
                "the TCP connection ended without \(closeName): the \(first.direction.sender) \(how) at "
                    + "\(clock(first.time)).",
                side: first.direction.sender,
                evidence: [Evidence(packetNumber: first.packetNumber, time: first.time, what: "first TCP close")])
        ]
    }

    /// Whether bytes the side sent after its last frame were never captured: its close may be among them, so a TCP
    /// close without one is not evidence of an abrupt end (capture-incomplete tells of the gap).
    func closeMayBeLost(by side: Side) -> Bool {
        let last = record.lastFrameTime[sentBy: side] ?? record.firstTime
        return record.moments.contains { m in
            if case .gap = m.kind { return m.direction.sender == side && m.time >= last }
            return false
        }
    }

    func connectionErrors() -> [Diagnosis] {
        record.keyFrames.compactMap { f in
            guard case .method(.connectionClose(let c)) = f.frame.content, c.replyCode >= 300 else { return nil }
            return make(
                ending: true, .connectionError, .error,
                "the \(f.direction.sender) closed the connection: "
                    + "\(Self.reply(c.replyCode, c.replyText))\(Self.cause(c.classId, c.methodId)).",
                side: f.direction.sender,
                evidence: [Evidence(packetNumber: f.packetNumber, time: f.time, what: "Connection.Close")])
        }
    }

    func channelErrors() -> [Diagnosis] {
        record.keyFrames.compactMap { f in
            guard case .method(.channelClose(let c)) = f.frame.content, c.replyCode >= 300 else { return nil }
            return make(
                .channelError, .warning,
                "the \(f.direction.sender) closed channel \(f.frame.channel): "
                    + "\(Self.reply(c.replyCode, c.replyText))\(Self.cause(c.classId, c.methodId)).",
                side: f.direction.sender,
                evidence: [Evidence(packetNumber: f.packetNumber, time: f.time, what: "Channel.Close")])
        }
    }

    static func cause(_ classID: UInt16, _ methodID: UInt16) -> String {
        classID == 0 ? "" : " (caused by \(AMQPSpec.methodName(classID: classID, methodID: methodID)))"
    }

    func blocked() -> [Diagnosis] {
        var out: [Diagnosis] = []
        var open: (FrameRecord, String)?
        func finish(until: Timestamp, packet: Int?, unblocked: Bool) {
            guard let (f, reason) = open else { return }
            var evidence = [Evidence(packetNumber: f.packetNumber, time: f.time, what: "Connection.Blocked")]
            if let packet { evidence.append(Evidence(packetNumber: packet, time: until, what: "Connection.Unblocked")) }
            out.append(
                make(
                    .blocked, .warning,
                    "the \(f.direction.sender) blocked the \(f.direction.receiver)'s publishing at \(clock(f.time)) "
                        + "(\"\(reason)\") for "
                        + Self.seconds(until.since(f.time))
                        + (unblocked ? "" : ", and it was still blocked when the record ends") + ".",
                    side: f.direction.receiver, evidence: evidence))
            open = nil
        }
        for f in record.keyFrames {
            guard case .method(let m) = f.frame.content else { continue }
            if case .connectionBlocked(let b) = m, open == nil { open = (f, b.reason) }
            if case .connectionUnblocked = m { finish(until: f.time, packet: f.packetNumber, unblocked: true) }
        }
        finish(until: record.endTime ?? record.lastTime, packet: nil, unblocked: false)
        return out
    }

    /// With heartbeats off, a TCP close without an AMQP close after the connection sat idle: something in the path
    /// closed it. With the other leg of a proxied pair found, the proxy is named.
    func idleTimeoutInPath() -> [Diagnosis] {
        let off: Bool
        if let s10 = story.amqp10 {
            off =
                [Side.client, .server].allSatisfy { (s10.idleTimeOut(advertisedBy: $0) ?? 0) == 0 }
                && s10.open(sentBy: .client) != nil
        } else {
            off = story.negotiated.map { $0.heartbeat == 0 && !$0.inferred } ?? false
        }
        guard off,
            let close = record.moments.first(where: { m in
                switch m.kind {
                case .fin, .reset: true
                default: false
                }
            })
        else { return [] }
        let amqpClosedBefore =
            record.keyFrames.contains { f in
                if case .method(.connectionClose) = f.frame.content { return f.time <= close.time }
                return false
            }
            || record.keyPerformatives.contains { f in
                if case .close? = f.frame.performative { return f.time <= close.time }
                return false
            }
        guard !amqpClosedBefore else { return [] }
        // The stretch with no frame either way that the close fell into.
        var candidates = record.connectionIdleGaps
        if let last = record.lastAnyFrame {
            candidates.append(
                IdleGap(from: last.time, to: record.endTime ?? record.lastTime, fromPacket: last.packet, toPacket: 0))
        }
        guard let idle = candidates.first(where: { $0.from < close.time && close.time <= $0.to }),
            close.time.since(idle.from) >= 1_000_000_000
        else { return [] }
        let closer = close.direction.sender
        let how = close.kind == .fin ? "FIN" : "RST"
        let length = Self.seconds(close.time.since(idle.from))
        let heartbeat = story.amqp10 != nil ? "no idle-time-out in either open" : "heartbeat 0 negotiated"
        var summary: String
        var evidence = [
            Evidence(packetNumber: idle.fromPacket, time: idle.from, what: "last frame before the silence"),
            Evidence(packetNumber: close.packetNumber, time: close.time, what: "\(how) from the \(closer)"),
        ]
        if let p = record.proxied {
            let other =
                p.leg == .clientSide
                ? "the leg to the server, connection \(p.peerConnection.rawValue)"
                : "the client's leg, connection \(p.peerConnection.rawValue)"
            summary =
                "the proxy at \(p.proxy) closed the connection after \(length) idle: nothing crossed it with heartbeats "
                + "disabled (\(heartbeat)), then at \(clock(close.time)) it closed this \(p.leg.rawValue) leg (\(how) "
                + "to the \(closer.peer)) and \(other), together, without an AMQP close."
            evidence.append(
                Evidence(packetNumber: 0, time: p.closedAt ?? close.time, what: "\(other) closed"))
        } else {
            summary =
                "nothing crossed the connection for \(length) with heartbeats disabled (\(heartbeat)), then the "
                + "\(closer) side closed it (\(how)) at \(clock(close.time)) without an AMQP close: an idle timeout in the "
                + "path (a proxy, load balancer, NAT or firewall) most likely closed it."
        }
        return [
            make(
                ending: true, .idleTimeoutInPath, .error, summary, side: closer, evidence: evidence,
                details: [
                    "with heartbeats off nothing keeps an idle connection alive through an intermediary, and neither "
                        + "peer notices it is gone until it writes"
                ])
        ]
    }

    func heartbeatsDisabled() -> [Diagnosis] {
        guard let n = story.negotiated, n.heartbeat == 0, !n.inferred else { return [] }
        // The connection is idle when neither direction sends a frame: between frames, or after the last one.
        var candidates = record.connectionIdleGaps
        if let last = record.lastAnyFrame {
            candidates.append(
                IdleGap(from: last.time, to: record.endTime ?? record.lastTime, fromPacket: last.packet, toPacket: 0))
        }
        let longest = candidates.filter { $0.length >= options.idleThreshold }.max { $0.length < $1.length }
        guard let longest else { return [] }
        return [
            make(
                .heartbeatsDisabled, .warning,
                "heartbeats are off (heartbeat 0 negotiated) and the connection was idle for "
                    + "\(Self.seconds(longest.length)) "
                    + "from \(clock(longest.from)): nothing would notice a dead peer or a dropped connection.",
                side: nil,
                evidence: [
                    Evidence(
                        packetNumber: longest.fromPacket, time: longest.from, what: "last frame before the silence"),
                    Evidence(packetNumber: longest.toPacket, time: longest.to, what: "end of the silence"),
                ])
        ]
    }

    func protocolViolations() -> [Diagnosis] {
        guard let first = record.problems.first else { return [] }
        let malformed = record.problems.contains { $0.kind == .malformed }
        return [
            make(
                .protocolViolation, malformed ? .error : .warning,
                "\(record.problemCount) protocol problem\(record.problemCount == 1 ? "" : "s"); the first, from the "
                    + "\(first.direction.sender) "
                    + "at \(clock(first.time)): \(first.reason).",
                side: first.direction.sender,
                evidence: record.problems.prefix(5).map {
                    Evidence(packetNumber: $0.packetNumber, time: $0.time, what: $0.reason)
                })
        ]
    }

    func captureIncomplete() -> [Diagnosis] {
        var reasons: [String] = []
        var evidence: [Evidence] = []
        if record.info.opening == .midstream {
            let negotiation =
                story.negotiated == nil
                ? ", no Tune: negotiated values unknown"
                : story.negotiated?.inferred == true ? ", heartbeat inferred from its cadence" : ""
            reasons.append("the capture joined the connection after it opened (no handshake\(negotiation))")
        }
        for d in Direction.allCases where record.counters[d].gaps > 0 {
            let k = record.counters[d]
            if k.snapCuts > 0 {
                reasons.append(
                    "\(k.snapCutBytes) bytes \(d) cut off by the capture's snap length (\(k.snapCuts) packet"
                        + "\(k.snapCuts == 1 ? "" : "s"))")
            }
            if k.gaps > k.snapCuts {
                reasons.append("\(k.gapBytes - k.snapCutBytes) bytes \(d) never captured (\(k.gaps - k.snapCuts) gaps)")
            }
        }
        for m in record.moments.prefix(200) {
            if case .gap(let length, let reason) = m.kind, evidence.count < 5 {
                evidence.append(
                    Evidence(packetNumber: m.packetNumber, time: m.time, what: "\(length) bytes \(reason.rawValue)"))
            }
        }
        guard !reasons.isEmpty else { return [] }
        let cut = Direction.allCases.contains { record.counters[$0].snapCuts > 0 }
        return [
            make(
                .captureIncomplete, .info,
                "part of the story is not in the capture: " + reasons.joined(separator: "; ") + "."
                    + (cut ? " Every frame whose header was captured is decoded as far as its captured bytes go." : ""),
                side: nil, evidence: evidence)
        ]
    }
}

extension DiagnosisCode {
    /// Where diagnoses of this code come in a story: the order of the cases.
    var rank: Int { Self.allCases.firstIndex(of: self) ?? 0 }
}
