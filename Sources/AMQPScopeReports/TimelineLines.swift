// The words for timeline entries, TCP moments and protocols that every report and live capture share.
import AMQPScopeBrokerLog
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS
import AMQPScopeTimeline

extension AnalyzeReport {
    /// One timeline entry as (time, packet, direction arrow, text): shared by reports and live capture.
    package static func entryLine(_ entry: TimelineEntry) -> (time: Timestamp, packet: Int, arrow: String, text: String)
    {
        switch entry {
        case .frame(let f): (f.time, f.packetNumber, f.direction.arrow, Describe.frame(f.frame))
        case .moment(let m): (m.time, m.packetNumber, m.direction.arrow, momentText(m))
        case .run(let run): (run.first, run.firstPacket, run.direction.arrow, runText(run))
        case .problem(let p): (p.time, p.packetNumber, p.direction.arrow, "\(p.kind.rawValue): \(p.reason)")
        case .tls(let t): (t.time, t.packetNumber, t.direction.arrow, tlsText(t))
        case .performative(let f): (f.time, f.packetNumber, f.direction.arrow, Describe.performative(f.frame))
        case .log(let l): (l.time, 0, "log", "broker logged (\(l.line.level), line \(l.line.number)): \(l.line.text)")
        }
    }

    /// What joining the broker log found: the clock offset, and the connections the capture does not hold.
    static func brokerLogText(_ s: BrokerLogSummary) -> String {
        var out = "  broker log: \(s.lines) message\(s.lines == 1 ? "" : "s") about client connections, "
        out += "\(s.matchedConnections) connection\(s.matchedConnections == 1 ? "" : "s") of this capture found in it\n"
        if let offset = s.clockOffset {
            let ms = Double(offset) / 1e6
            out +=
                "  broker log clock: \(Format.milliseconds(abs(ms))) \(ms >= 0 ? "ahead of" : "behind") the capture's "
                + "(from \(s.offsetSamples) connection\(s.offsetSamples == 1 ? "" : "s") both saw open); its lines are "
                + "placed on the capture's clock\n"
        }
        if s.unmatchedCount > 0 {
            out +=
                "  broker log names \(s.unmatchedCount) connection\(s.unmatchedCount == 1 ? "" : "s") not in this capture:\n"
            for u in s.unmatched.prefix(20) {
                out +=
                    "    \(u.client) -> \(u.server): \(u.lines) line\(u.lines == 1 ? "" : "s"), the first at "
                    + "\(Format.time(u.first.time)): \(Format.safe(u.first.text, limit: 200))\n"
            }
            if s.unmatchedCount > 20 { out += "    ... and \(s.unmatchedCount - 20) more\n" }
        }
        return out
    }

    /// A TLS moment in words; what is inferred says so.
    static func tlsText(_ t: TLSMoment) -> String {
        let side = t.direction.sender
        switch t.kind {
        case .clientHello(let serverName, let offered):
            return "TLS ClientHello from the \(side)" + (serverName.map { " for \"\($0)\"" } ?? "")
                + " (\(offered) cipher suites offered)"
        case .serverHello(let version, let suite, let resumed, let retry):
            if retry { return "TLS HelloRetryRequest from the \(side)" }
            return "TLS ServerHello: TLS \(TLSNames.version(version)), \(TLSNames.cipherSuite(suite))"
                + (resumed ? ", session resumed" : "")
        case .handshakeDone(let after):
            return "TLS handshake done" + (after.map { " in \(Format.duration(nanoseconds: $0))" } ?? "")
        case .alert(let level, let description):
            return "TLS alert \(TLSNames.alert(description)) (\(level == 2 ? "fatal" : "warning")) from the \(side)"
        case .encryptedAlert(let length, let inferred):
            return inferred
                ? "\(length)-byte TLS record from the \(side): an encrypted alert's length (probably close_notify; inferred)"
                : "encrypted TLS alert from the \(side) (\(length) bytes; its content is hidden)"
        case .malformed(let reason): return "not TLS: \(reason)"
        case .cutRecord(let length): return "TLS record of \(length) bytes cut by a capture gap"
        case .synchronized(let skipped): return "TLS record boundary found after skipping \(skipped) bytes"
        }
    }

    static func runText(_ run: Run) -> String {
        var text = ""
        writeRun(run, into: &text)
        return text
    }

    /// `runText`'s words, written into `s`.
    static func writeRun<S: TextSink & ~Copyable>(_ run: Run, into s: inout S) {
        s.write(run.count)
        if run.inferred {
            s.noun(run.isHeartbeat ? " heartbeat-sized TLS record" : " TLS record", count: run.count)
            if run.isHeartbeat {
                s.write(" (heartbeats, inferred)")
            } else {
                s.write(", ")
                s.write(run.bodyBytes)
                s.write(" bytes")
            }
            cadence(of: run, into: &s)
            return
        }
        if !run.isHeartbeat {
            s.write(" × ")
            s.write(run.kind)
        } else {
            s.noun(run.amqp10 ? " empty frame" : " heartbeat", count: run.count)
            if run.amqp10 { s.write(" (heartbeats)") }
        }
        cadence(of: run, into: &s)
        if run.bodyBytes > 0 {
            s.write(", ")
            s.write(run.bodyBytes)
            s.write(run.amqp10 ? " payload bytes" : " body bytes")
        }
    }

    /// ", every 2.0 s (to #812)": a run's spacing, when it has more than one entry.
    private static func cadence<S: TextSink & ~Copyable>(of run: Run, into s: inout S) {
        guard run.count > 1 else { return }
        s.write(", every ")
        Format.duration(nanoseconds: run.last.since(run.first) / Int64(run.count - 1), into: &s)
        s.write(" (to #")
        s.write(run.lastPacket)
        s.write(")")
    }

    static func packetLine(_ p: PacketInfo) -> String {
        var text = "TCP [\(p.flags)] seq=\(p.sequence) ack=\(p.acknowledgment) win=\(p.window) len=\(p.payloadLength)"
        if p.isRetransmission { text += " retransmission" }
        if p.isOutOfOrder { text += " out-of-order" }
        if p.isKeepalive { text += " keepalive" }
        if p.isZeroWindow { text += " zero-window" }
        return text
    }

    static func momentText(_ m: TCPMoment) -> String {
        let side = m.direction.sender
        switch m.kind {
        case .syn: return "SYN from the \(side)"
        case .synAck: return "SYN-ACK from the \(side)"
        case .fin: return "FIN from the \(side) (half-close)"
        case .reset(let info):
            var text = "RST from the \(side)"
            if info.repeated { return text + " (repeated)" }
            text += "; the \(side.peer) was \(info.receiverState.rawValue)"
            if let e = ResetErrno.predict(info.receiverState) {
                text += ": its next socket call gets \(e.name) (\(e.errno))"
            }
            if !info.inWindow { text += " (out of window: may be ignored)" }
            return text
        case .gap(let length, let reason): return "\(length) bytes missing (\(reason.rawValue))"
        case .dataAfterFIN(let n): return "\(n) bytes after its own FIN"
        case .overlapConflict(let n): return "retransmission of \(n) bytes differs from the first copy"
        case .lateWrite(let n, let afterReset):
            return "\(n) bytes written after the \(side.peer)'s \(afterReset ? "RST" : "FIN")"
        }
    }

    package static func protocolName(_ verdict: Verdict) -> String {
        switch verdict {
        case .amqp(let v): return v.rawValue
        case .amqpBySync: return "AMQP 0-9-1 (by frame sync)"
        case .amqp10: return ProtocolHeader.Version.amqp10.rawValue
        case .notAMQP: return "not AMQP"
        case .encrypted: return "TLS"
        case .undetermined: return "no payload"
        }
    }

    /// "SYN client (#1), SYN-ACK server (#2), FIN client (#89), RST server (#91); reset".
    package static func tcpStory(_ r: ConnectionRecord) -> String {
        var parts: [String] = []
        if r.info.opening == .midstream {
            parts.append("picked up mid-stream (server chosen by \(r.info.roleEvidence.rawValue))")
        }
        for m in r.moments {
            let side = m.direction.sender.rawValue
            switch m.kind {
            case .syn: parts.append("SYN \(side) (#\(m.packetNumber))")
            case .synAck: parts.append("SYN-ACK \(side) (#\(m.packetNumber))")
            case .fin: parts.append("FIN \(side) (#\(m.packetNumber))")
            case .reset(let info):
                let notes = (info.repeated ? ", repeated" : "") + (info.inWindow ? "" : ", out of window")
                parts.append("RST \(side) (#\(m.packetNumber)\(notes))")
            case .dataAfterFIN(let n): parts.append("\(n) bytes after own FIN \(side) (#\(m.packetNumber))")
            case .lateWrite(let n, _): parts.append("\(n) bytes late write \(side) (#\(m.packetNumber))")
            case .gap, .overlapConflict: break
            }
        }
        var text = parts.joined(separator: ", ")
        if let end = r.endReason { text += (text.isEmpty ? "" : "; ") + end.rawValue }
        return text
    }
}

extension Direction {
    /// "c>s" or "s>c".
    var arrow: String { self == .clientToServer ? "c>s" : "s>c" }
}
