// The message-flow diagnoses: messages at risk when a connection died, consumers saturated at their prefetch,
// slow publisher confirms, redelivery loops and unroutable publishes.
import AMQPScopePackets

extension Diagnoser {
    func flowDiagnoses() -> [Diagnosis] {
        guard let flow = record.flow else { return [] }
        return messagesAtRisk(flow) + saturated(flow) + slowConfirms(flow) + redeliveryLoops(flow) + unroutable(flow)
    }

    static func milliseconds(_ ms: Double) -> String {
        ms >= 1000 ? seconds(Int64(ms * 1_000_000)) : ms >= 10 ? "\(Int(ms.rounded())) ms" : "\(ms) ms"
    }

    static func plural(_ n: Int, _ word: String) -> String {
        guard n != 1 else { return "1 \(word)" }
        if word.hasSuffix("sh") || word.hasSuffix("s") { return "\(n) \(word)es" }
        if word.hasSuffix("y") { return "\(n) \(word.dropLast())ies" }
        return "\(n) \(word)s"
    }

    func messagesAtRisk(_ flow: FlowRecord) -> [Diagnosis] {
        let risk = flow.atRisk
        guard !risk.isEmpty else { return [] }
        var parts: [String] = []
        if risk.lost > 0 {
            parts.append(
                "\(Self.plural(risk.lost, "publish")) written after the server had closed the connection: lost for "
                    + "certain")
        }
        if risk.unconfirmed > 0 {
            parts.append(
                "\(Self.plural(risk.unconfirmed, "publish")) not yet confirmed (or not yet complete) when it died: "
                    + "maybe lost")
        }
        if risk.unacked > 0 {
            parts.append(
                "\(Self.plural(risk.unacked, "delivery")) not yet acknowledged: the broker redelivers "
                    + "\(risk.unacked == 1 ? "it" : "them"), so consumers downstream see duplicates")
        }
        let channels = risk.channels.map(String.init).joined(separator: ", ")
        var evidence: [Evidence] = []
        if let first = risk.firstPacket, let time = risk.firstTime {
            evidence.append(Evidence(packetNumber: first, time: time, what: "the first of them"))
        }
        if let last = risk.lastPacket, let time = risk.lastTime, last != risk.firstPacket {
            evidence.append(Evidence(packetNumber: last, time: time, what: "the last of them"))
        }
        var details = [String]()
        if story.client?.product?.lowercased().contains("pika") == true {
            details.append(
                "pika does not republish on its own: what was not confirmed must be published again by the "
                    + "application after it reconnects (with confirm_delivery() it can know which)")
        }
        return [
            make(
                .messagesAtRisk, risk.lost > 0 ? .error : .warning,
                "when the connection died, messages were left in doubt on channel\(risk.channels.count == 1 ? "" : "s") "
                    + "\(channels): " + parts.joined(separator: "; ") + ".",
                side: .client, evidence: evidence, details: details)
        ]
    }

    func saturated(_ flow: FlowRecord) -> [Diagnosis] {
        let end = record.endTime ?? record.lastTime
        return flow.saturations.filter { ($0.to ?? end).since($0.from) >= options.saturationThreshold }.prefix(3).map {
            s in
            let length = (s.to ?? end).since(s.from)
            let who =
                s.consumerTag.map {
                    "consumer \"\($0)\"" + (s.queue.map { " of queue \"\($0)\"" } ?? "")
                }
                ?? "channel \(s.channel)"
            var evidence = [
                Evidence(packetNumber: s.fromPacket, time: s.from, what: "\(s.prefetch) of \(s.prefetch) unacked")
            ]
            if let to = s.to, let packet = s.toPacket {
                evidence.append(Evidence(packetNumber: packet, time: to, what: "an ack brought it below the limit"))
            }
            return make(
                .consumerSaturated, .warning,
                "the \(who) on channel \(s.channel) was saturated: \(s.prefetch) of \(s.prefetch) deliveries "
                    + "unacknowledged (prefetch \(s.prefetch)) for \(Self.seconds(length)) from \(clock(s.from))"
                    + (s.to == nil ? ", and still when the record ends" : "")
                    + ": the broker sent it nothing more until it acknowledged.",
                side: .client, evidence: evidence)
        }
    }

    func slowConfirms(_ flow: FlowRecord) -> [Diagnosis] {
        guard let latency = flow.confirmLatency, latency.p99 * 1_000_000 > Double(options.slowConfirmThreshold)
        else { return [] }
        var evidence: [Evidence] = []
        if let s = flow.slowestConfirm {
            evidence.append(Evidence(packetNumber: s.fromPacket, time: s.from, what: "the slowest publish"))
            evidence.append(Evidence(packetNumber: s.toPacket, time: s.to, what: "its confirm"))
        }
        let slowParts = flow.byChannel.compactMap { p -> String? in
            guard let l = p.confirmLatency else { return nil }
            return "\(p.name): p99 \(Self.milliseconds(l.p99))"
        }
        return [
            make(
                .slowConfirms, .warning,
                "publisher confirms were slow: p99 \(Self.milliseconds(latency.p99)), max "
                    + "\(Self.milliseconds(latency.max)) over \(Self.plural(latency.count, "confirm")) (median "
                    + "\(Self.milliseconds(latency.p50))).",
                side: .server, evidence: evidence, details: slowParts.isEmpty ? [] : [slowParts.joined(separator: "; ")]
            )
        ]
    }

    func redeliveryLoops(_ flow: FlowRecord) -> [Diagnosis] {
        flow.redeliveries.filter { $0.redeliveries >= options.redeliveryLoopCount }.prefix(3).map { r in
            make(
                .redeliveryLoop, .warning,
                "\(r.message) was delivered again \(Self.plural(r.redeliveries, "time")) "
                    + "on channel \(r.channel), sent back \(Self.plural(r.requeues, "time")) with requeue, from "
                    + "\(clock(r.firstTime)) to \(clock(r.lastTime)): a message the consumer cannot process goes "
                    + "round and round.",
                side: .client,
                evidence: [
                    Evidence(packetNumber: r.firstPacket, time: r.firstTime, what: "its first delivery"),
                    Evidence(packetNumber: r.lastPacket, time: r.lastTime, what: "its last redelivery"),
                ])
        }
    }

    func unroutable(_ flow: FlowRecord) -> [Diagnosis] {
        guard flow.returns > 0, let first = flow.returned.first else { return [] }
        let keys = Set(flow.returned.map { "exchange \"\($0.exchange)\" routing key \"\($0.routingKey)\"" })
        return [
            make(
                .unroutable, .warning,
                "the server returned \(Self.plural(flow.returns, "mandatory publish")) it could not route "
                    + "(\(first.replyCode) \(first.replyText)): "
                    + keys.sorted().prefix(3).joined(separator: "; ")
                    + (keys.count > 3 ? " and \(keys.count - 3) more" : "") + ".",
                side: .server,
                evidence: flow.returned.prefix(3).map {
                    Evidence(packetNumber: $0.packetNumber, time: $0.time, what: "basic.return \($0.replyCode)")
                })
        ]
    }
}
