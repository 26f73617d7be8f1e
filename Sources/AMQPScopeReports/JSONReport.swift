// The JSON report of `analyze` (schema: docs/json.md).
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS
import AMQPScopeTimeline

extension AnalyzeReport {
    /// The JSON document of captures analysed in memory (the CLI streams the same through `AnalyzeWriter`).
    public static func json(_ results: [CaptureResult], options: ReportOptions = ReportOptions()) -> String {
        render(results, format: .json, options: options)
    }

    static func captureJSON(_ r: CaptureResult, connections: Int, brokerLog: BrokerLogSummary? = nil) -> JSON {
        let c = r.counts
        var members: [(String, JSON)] = [
            ("file", .string(r.path)),
            ("link_type", r.linkType.map { .int(Int64($0.rawValue)) } ?? .null),
            ("link_type_name", .optional(r.linkType?.name)),
            ("packets", .int(c.packets)),
            ("truncated_packets", .int(c.truncated)),
            ("tcp_packets", .int(c.tcp)),
            ("malformed_packets", .int(c.malformed)),
            ("ip_fragments", .int(c.fragments)),
            ("first_time", c.firstTime.map { .string(Format.rfc3339($0)) } ?? .null),
            ("last_time", c.lastTime.map { .string(Format.rfc3339($0)) } ?? .null),
            ("connections", .int(connections)),
            ("evicted_connections", .int(c.evictedConnections)),
            ("complete", .bool(r.error == nil)),
            ("error", .optional(r.error)),
            (
                "parts",
                .array(
                    r.parts.map { p in
                        .object([
                            ("file", .string(p.path)), ("packets", .int(p.packets)),
                            ("first_time", p.firstTime.map { .string(Format.rfc3339($0)) } ?? .null),
                            ("last_time", p.lastTime.map { .string(Format.rfc3339($0)) } ?? .null),
                            ("error", .optional(p.error)),
                        ])
                    })
            ),
        ]
        if let log = brokerLog {
            members.append(
                (
                    "broker_log",
                    .object([
                        ("lines", .int(log.lines)), ("matched_connections", .int(log.matchedConnections)),
                        ("clock_offset_ms", log.clockOffset.map { .double(Double($0) / 1e6) } ?? .null),
                        ("offset_samples", .int(log.offsetSamples)),
                        ("unmatched_connections", .int(log.unmatchedCount)),
                        (
                            "unmatched",
                            .array(
                                log.unmatched.map { u in
                                    .object([
                                        ("client", .string(u.client.description)),
                                        ("server", .string(u.server.description)), ("lines", .int(u.lines)),
                                        ("first_time", .string(Format.rfc3339(u.first.time))),
                                        ("first_line", .string(u.first.text)),
                                    ])
                                })
                        ),
                    ])
                ))
        }
        return .object(members)
    }

    static func writeDirection(_ k: DirectionCounters, _ o: inout JSONObjectWriter, _ out: inout JSONOutput) {
        o.int("packets", k.packets, &out)
        o.int("bytes", k.wireBytes, &out)
        o.int("payload_bytes", k.payloadBytes, &out)
        o.int("retransmissions", k.retransmissions, &out)
        o.int("out_of_order", k.outOfOrder, &out)
        o.int("gaps", k.gaps, &out)
        o.int("gap_bytes", Int(k.gapBytes), &out)
    }

    /// The connection's TLS, as docs/json.md describes it.
    static func tlsJSON(_ t: TLSSummary) -> JSON {
        func perDirection(_ v: PerDirection<Int>) -> JSON {
            .object(Direction.allCases.map { (directionName($0), .int(v[$0])) })
        }
        return .object([
            ("version", .optional(t.versionName)),
            ("cipher", .optional(t.cipherName)),
            ("sni", .optional(t.serverName)),
            ("alpn", .array(t.alpn.map(JSON.string))),
            ("resumed", .bool(t.resumed)),
            (
                "handshake_seconds",
                t.helloTime.flatMap { hello in
                    t.handshakeDoneTime.map { .double(Double($0.since(hello)) / 1e9) }
                } ?? .null
            ),
            ("decrypted", .bool(t.decrypted)),
            ("decrypt_error", .optional(t.decryptError)),
            ("records", perDirection(t.records)),
            ("application_records", perDirection(t.applicationRecords)),
            ("inferred_heartbeats", t.inferredHeartbeats.map(perDirection) ?? .null),
            ("heartbeat_record_length", .optional(t.heartbeatRecordLength)),
            (
                "alerts",
                .array(
                    t.alerts.map { a in
                        .object([
                            ("direction", .string(directionName(a.direction))), ("packet", .int(a.packetNumber)),
                            ("time", .string(Format.rfc3339(a.time))),
                            ("alert", a.description.map { .string(TLSNames.alert($0)) } ?? .null),
                            ("level", a.level.map { .int(Int64($0)) } ?? .null),
                            ("inferred", .bool(a.inferred)),
                        ])
                    })
            ),
            ("malformed_records", .int(t.malformedRecords)),
        ])
    }

    static func writeFrames(_ f: FrameCounts, _ o: inout JSONObjectWriter, _ out: inout JSONOutput) {
        o.int("method", f.method, &out)
        o.int("header", f.header, &out)
        o.int("body", f.body, &out)
        o.int("heartbeat", f.heartbeat, &out)
    }

    static func directionName(_ d: Direction) -> String { directionKey(d).description }

    /// `directionName` as a constant, for writers that copy it as it is.
    static func directionKey(_ d: Direction) -> StaticString {
        d == .clientToServer ? "client_to_server" : "server_to_client"
    }

    static func writeLatency(
        _ key: StaticString, _ l: LatencySummary?, _ o: inout JSONObjectWriter, _ out: inout JSONOutput
    ) {
        guard let l else { return o.null(key, &out) }
        o.object(key, &out) { o, out in
            o.int("count", l.count, &out)
            o.double("p50", l.p50, &out)
            o.double("p90", l.p90, &out)
            o.double("p99", l.p99, &out)
            o.double("max", l.max, &out)
        }
    }

    static func writeFlowParts(
        _ key: StaticString, _ parts: [FlowPart], _ o: inout JSONObjectWriter, _ out: inout JSONOutput
    ) {
        o.objects(key, parts.count, &out) { i, o, out in
            let p = parts[i]
            o.string("name", p.name, &out)
            o.int("publishes", p.publishes, &out)
            o.int("confirmed", p.confirmed, &out)
            o.int("nacked", p.nacked, &out)
            o.int("deliveries", p.deliveries, &out)
            o.int("acked", p.acked, &out)
            o.int("max_unacked", p.maxUnacked, &out)
            o.int("prefetch", p.prefetch, &out)
            writeLatency("confirm_latency_ms", p.confirmLatency, &o, &out)
            writeLatency("ack_latency_ms", p.ackLatency, &o, &out)
        }
    }

    /// The connection's message flow, as docs/json.md describes it.
    static func writeFlow(_ f: FlowRecord, _ o: inout JSONObjectWriter, _ out: inout JSONOutput) {
        o.int("publishes", f.publishes, &out)
        o.int("confirmed", f.confirmed, &out)
        o.int("nacked", f.nacked, &out)
        o.int("server_acks", f.serverAcks, &out)
        o.int("server_nacks", f.serverNacks, &out)
        o.int("unconfirmed_at_end", f.unconfirmedAtEnd, &out)
        o.int("returns", f.returns, &out)
        o.int("deliveries", f.deliveries, &out)
        o.int("gets", f.gets, &out)
        o.int("get_empty", f.getEmpty, &out)
        o.int("acks", f.acks, &out)
        o.int("acked_messages", f.ackedMessages, &out)
        o.int("nacks", f.nacks, &out)
        o.int("rejects", f.rejects, &out)
        o.int("redelivered", f.redelivered, &out)
        o.int("max_unacked", f.maxUnacked, &out)
        o.int("prefetch", f.prefetch, &out)
        writeLatency("confirm_latency_ms", f.confirmLatency, &o, &out)
        writeLatency("ack_latency_ms", f.ackLatency, &o, &out)
        o.object("at_risk", &out) { o, out in
            o.int("lost", f.atRisk.lost, &out)
            o.int("unconfirmed", f.atRisk.unconfirmed, &out)
            o.int("unacked", f.atRisk.unacked, &out)
            o.value("channels", .array(f.atRisk.channels.map { .int(Int64($0)) }), &out)
            o.int("first_packet", f.atRisk.firstPacket, &out)
            o.int("last_packet", f.atRisk.lastPacket, &out)
        }
        writeFlowParts("by_channel", f.byChannel, &o, &out)
        writeFlowParts("by_queue", f.byQueue, &o, &out)
        o.objects("saturations", f.saturations.count, &out) { i, o, out in
            let s = f.saturations[i]
            o.int("channel", Int(s.channel), &out)
            o.string("consumer_tag", s.consumerTag, &out)
            o.string("queue", s.queue, &out)
            o.int("prefetch", s.prefetch, &out)
            o.time("from", s.from, &out)
            o.int("from_packet", s.fromPacket, &out)
            o.time("to", s.to, &out)
            o.int("to_packet", s.toPacket, &out)
        }
        o.objects("returned", f.returned.count, &out) { i, o, out in
            let r = f.returned[i]
            o.int("channel", Int(r.channel), &out)
            o.int("reply_code", Int(r.replyCode), &out)
            o.string("reply_text", r.replyText, &out)
            o.string("exchange", r.exchange, &out)
            o.string("routing_key", r.routingKey, &out)
            o.int("packet", r.packetNumber, &out)
        }
        o.objects("redeliveries", f.redeliveries.count, &out) { i, o, out in
            let r = f.redeliveries[i]
            o.string("message", r.message, &out)
            o.int("redeliveries", r.redeliveries, &out)
            o.int("requeues", r.requeues, &out)
            o.int("channel", Int(r.channel), &out)
            o.int("first_packet", r.firstPacket, &out)
            o.int("last_packet", r.lastPacket, &out)
        }
        o.value("server_cancels", .array(f.serverCancels.map(JSON.string)), &out)
        o.int("flow_pauses", f.flowPauses, &out)
        o.int("untracked", f.untracked, &out)
    }

    /// AMQP 1.0 frame counts by performative.
    static func performativesJSON(_ f: PerformativeCounts) -> JSON {
        .object([
            ("open", .int(f.open)), ("begin", .int(f.begin)), ("attach", .int(f.attach)), ("flow", .int(f.flow)),
            ("transfer", .int(f.transfer)), ("disposition", .int(f.disposition)), ("detach", .int(f.detach)),
            ("end", .int(f.end)), ("close", .int(f.close)), ("empty", .int(f.empty)), ("sasl", .int(f.sasl)),
        ])
    }

    /// AMQP 1.0's negotiation: what each side said in open.
    static func negotiated10JSON(_ s: AMQP10Story) -> JSON {
        func pair(_ get: (Open) -> JSON) -> JSON {
            .object(Side.allCases.map { side in (side.rawValue, s.open(sentBy: side).map(get) ?? .null) })
        }
        return .object([
            (
                "idle_timeout",
                pair { o in o.idleTimeOut.flatMap { $0 == 0 ? nil : JSON.double(Double($0) / 1000) } ?? .null }
            ),
            ("max_frame_size", pair { o in o.maxFrameSize.map { .int(Int64($0)) } ?? .null }),
            ("channel_max", pair { o in o.channelMax.map { .int(Int64($0)) } ?? .null }),
            ("container_id", pair { o in .string(o.containerID) }),
        ])
    }

    /// AMQP 1.0's links, with how each ended.
    static func linksJSON(_ s: AMQP10Story) -> JSON {
        .array(
            s.links.map { l in
                .object([
                    ("name", .string(l.name)),
                    ("role", .string(l.clientRole.rawValue)),
                    ("source", .optional(l.source)),
                    ("target", .optional(l.target)),
                    ("channel", l.clientChannel.map { .int(Int64($0)) } ?? .null),
                    (
                        "attached_by",
                        .string(l.attach.clientToServer != nil ? "client" : "server")
                    ),
                    (
                        "attach_packet",
                        (l.attach.clientToServer ?? l.attach.serverToClient).map { .int($0.packetNumber) } ?? .null
                    ),
                    ("answered", .bool(l.answered)),
                    ("ended", .string(l.ending)),
                    (
                        "error",
                        l.error.map { e in
                            .object([
                                ("condition", .string(e.condition)), ("description", .optional(e.description)),
                                ("side", .optional(l.errorSide?.rawValue)),
                            ])
                        } ?? .null
                    ),
                ])
            })
    }

    /// A connection's JSON object (docs/json.md), written straight to bytes when the tree is written.
    package static func connectionJSON(_ story: Story, capture: Int, options: ReportOptions) -> JSON {
        .written(ConnectionObject(story: story, capture: capture, options: options))
    }

    /// A connection's object: written member by member, as a tree for each of a thousand connections cost as much
    /// to build and to free as to write. Subtrees that few connections have (TLS, AMQP 1.0, bodies, frame lists)
    /// are still trees.
    struct ConnectionObject: JSONWritable {
        let story: Story
        let capture: Int
        let options: ReportOptions

        func write(into out: inout JSONOutput, indent: Int?) {
            var o = JSONObjectWriter(&out, indent: indent)
            AnalyzeReport.writeConnection(story, capture: capture, options: options, &o, &out)
            o.end(&out)
        }
    }

    /// The members of a connection's object (docs/json.md), after any that `o` already has.
    package static func writeConnection(
        _ story: Story, capture: Int, options: ReportOptions, _ o: inout JSONObjectWriter, _ out: inout JSONOutput
    ) {
        let r = story.record
        let negotiated: JSON =
            story.amqp10.map(negotiated10JSON)
            ?? story.negotiated.map { n in
                .object([
                    ("heartbeat", .int(n.heartbeat)), ("frame_max", .optional(n.frameMax)),
                    ("channel_max", .optional(n.channelMax)),
                    ("inferred", .bool(n.inferred)),
                ])
            } ?? .null
        o.int("id", r.info.id.rawValue, &out)
        o.int("capture", capture, &out)
        o.string("client", r.info.client.description, &out)
        o.string("server", r.info.server.description, &out)
        o.string("protocol", protocolName(r.verdict), &out)
        o.value("tls", r.tls.map(tlsJSON) ?? .null, &out)
        o.value(
            "fallback",
            r.fallback.map { f in
                .object([
                    ("connection", .int(f.connection.rawValue)), ("server", .string(f.server.description)),
                    ("after_us", .int(f.after / 1000)),
                ])
            } ?? .null, &out)
        o.value(
            "proxied",
            r.proxied.map { p in
                .object([
                    ("peer_connection", .int(p.peerConnection.rawValue)), ("proxy", .string(p.proxy.description)),
                    ("leg", .string(p.leg.rawValue)),
                ])
            } ?? .null, &out)
        o.value("negotiated", negotiated, &out)
        o.value("client_properties", story.client.map { Describe.json($0.table) } ?? .null, &out)
        o.value("server_properties", story.server.map { Describe.json($0.table) } ?? .null, &out)
        if story.amqp10 != nil {
            o.value(
                "frames",
                .object(Direction.allCases.map { (directionName($0), performativesJSON(r.performativeCounts[$0])) }),
                &out)
        } else {
            o.object("frames", &out) { o, out in
                for d in Direction.allCases {
                    o.object(directionKey(d), &out) { o, out in writeFrames(r.frameCounts[d], &o, &out) }
                }
            }
        }
        o.string("opening", r.info.opening.rawValue, &out)
        o.time("first_time", r.firstTime, &out)
        o.time("last_time", r.lastTime, &out)
        o.string("ended", story.ending, &out)
        o.object("tcp", &out) { o, out in
            for d in Direction.allCases {
                o.object(directionKey(d), &out) { o, out in writeDirection(r.counters[d], &o, &out) }
            }
        }
        o.object("heartbeat_cadence_seconds", &out) { o, out in
            for d in Direction.allCases {
                o.double(directionKey(d), story.heartbeatCadence[d].map { Double($0) / 1e9 }, &out)
            }
        }
        o.object("last_sent", &out) { o, out in
            for d in Direction.allCases {
                o.object(directionKey(d), &out) { o, out in
                    o.time("frame", r.lastFrameTime[d], &out)
                    o.int("frame_packet", r.lastFrameTime[d] == nil ? nil : r.lastFramePacket[d], &out)
                    o.time("packet", r.lastPacketTime[d], &out)
                }
            }
        }
        o.object("silences", &out) { o, out in
            for d in Direction.allCases {
                let gaps = story.silences[d]
                o.objects(directionKey(d), gaps.count, &out) { i, o, out in
                    let g = gaps[i]
                    o.time("from", g.from, &out)
                    o.time("to", g.to, &out)
                    o.double("seconds", Double(g.length) / 1e9, &out)
                    o.int("from_packet", g.fromPacket, &out)
                    o.int("to_packet", g.toPacket > 0 ? g.toPacket : nil, &out)
                }
            }
        }
        o.value("links", story.amqp10.map(linksJSON) ?? .null, &out)
        if let flow = r.flow {
            o.object("flow", &out) { o, out in writeFlow(flow, &o, &out) }
        } else {
            o.null("flow", &out)
        }
        o.value("events", eventsJSON(story, options: options), &out)
        o.objects("diagnoses", story.diagnoses.count, &out) { i, o, out in
            writeDiagnosis(story.diagnoses[i], &o, &out)
        }
        if options.showBodies {
            o.value(
                "messages",
                .array(
                    r.messages.map { m in
                        .object([
                            ("packet", .int(m.packetNumber)), ("time", .string(Format.rfc3339(m.time))),
                            ("direction", .string(directionName(m.direction))),
                            ("channel", .int(Int64(m.message.channel))),
                            ("method", .string(Describe.method(m.message.method))),
                            ("body_size", .int(Int64(m.message.bodySize))),
                            (
                                "properties",
                                .object(m.message.properties.present.map { ($0.name, Describe.json($0.value)) })
                            ),
                            ("body", m.message.body.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null),
                            ("incomplete", .bool(m.message.incomplete)),
                        ])
                    }), &out)
        }
        if options.showBodies && story.amqp10 != nil {
            o.value(
                "deliveries",
                .array(
                    r.deliveries.map { m in
                        .object([
                            ("packet", .int(m.packetNumber)), ("time", .string(Format.rfc3339(m.time))),
                            ("direction", .string(directionName(m.direction))),
                            ("channel", .int(Int64(m.message.channel))),
                            ("handle", .int(Int64(m.message.handle))),
                            ("delivery_id", m.message.deliveryID.map { .int(Int64($0)) } ?? .null),
                            ("settled", .bool(m.message.settled)), ("aborted", .bool(m.message.aborted)),
                            ("frames", .int(m.message.frames)), ("bytes", .int(Int64(m.message.payloadBytes))),
                            (
                                "sections",
                                .array(
                                    m.message.sections.map {
                                        .object([("section", .string($0.name)), ("value", Describe.json($0.value))])
                                    })
                            ),
                            ("incomplete", .bool(m.message.incomplete)),
                        ])
                    }), &out)
        }
        if (options.showFrames || options.verbose) && story.amqp10 != nil {
            o.value(
                "frame_list",
                .array(
                    r.performatives.filter { options.includes($0.time) }.map { f in
                        .object([
                            ("packet", .int(f.packetNumber)), ("time", .string(Format.rfc3339(f.time))),
                            ("direction", .string(directionName(f.direction))),
                            ("channel", .int(Int64(f.frame.channel))), ("type", .int(Int64(f.frame.type))),
                            ("performative", .string(f.frame.name)),
                            ("description", .string(Describe.performative(f.frame))),
                        ])
                    }), &out)
        } else if options.showFrames || options.verbose {
            o.value(
                "frame_list",
                .array(
                    r.frames.filter { options.includes($0.time) }.map { f in
                        .object([
                            ("packet", .int(f.packetNumber)), ("time", .string(Format.rfc3339(f.time))),
                            ("direction", .string(directionName(f.direction))),
                            ("channel", .int(Int64(f.frame.channel))), ("type", .int(Int64(f.frame.type))),
                            ("description", .string(Describe.frame(f.frame))),
                        ])
                    }), &out)
        }
    }

    static func eventsJSON(_ story: Story, options: ReportOptions) -> JSON {
        .written(Events(entries: StoryOutline.moments(of: story, options)))
    }

    /// A connection's events, written entry by entry: every connection has dozens, and a tree for each cost more
    /// than the rest of its report.
    struct Events: JSONWritable {
        let entries: [TimelineEntry]
        func write(into out: inout JSONOutput, indent: Int?) {
            JSON.writeArray(entries.count, into: &out, indent: indent) { i, out, indent in
                AnalyzeReport.writeEntry(entries[i], into: &out, indent: indent)
            }
        }
    }

    /// One timeline entry as a JSON object (the time first, then what the entry is): shared by reports and live
    /// capture.
    package static func writeEntry(_ entry: TimelineEntry, into out: inout JSONOutput, indent: Int?) {
        var o = JSONObjectWriter(&out, indent: indent)
        o.time("time", entry.time, &out)
        switch entry {
        case .frame(let f):
            o.name("kind", "frame", &out)
            if case .method(let m) = f.frame.content { o.string("method", m.name, &out) }
            o.name("direction", directionKey(f.direction), &out)
            o.int("packet", f.packetNumber, &out)
            o.int("channel", Int(f.frame.channel), &out)
            o.text("description", &out) { Describe.write(f.frame, into: &$0) }
        case .moment(let m):
            o.name("kind", momentKey(m.kind), &out)
            o.name("direction", directionKey(m.direction), &out)
            o.int("packet", m.packetNumber, &out)
            o.string("description", momentText(m), &out)
            if case .reset(let info) = m.kind {
                o.string("receiver_state", info.receiverState.rawValue, &out)
                o.value("errno", .optional(ResetErrno.predict(info.receiverState).map { $0.errno }), &out)
            }
        case .run(let run):
            o.name("kind", "run", &out)
            o.name("direction", directionKey(run.direction), &out)
            o.int("packet", run.firstPacket, &out)
            o.int("last_packet", run.lastPacket, &out)
            o.string("what", run.kind, &out)
            o.int("count", run.count, &out)
            o.time("until", run.last, &out)
            o.text("description", &out) { writeRun(run, into: &$0) }
        case .problem(let p):
            o.string("kind", p.kind.rawValue, &out)
            o.name("direction", directionKey(p.direction), &out)
            o.int("packet", p.packetNumber, &out)
            o.string("description", p.reason, &out)
        case .tls(let t):
            o.name("kind", "tls", &out)
            o.name("direction", directionKey(t.direction), &out)
            o.int("packet", t.packetNumber, &out)
            o.string("description", tlsText(t), &out)
        case .log(let l):
            o.name("kind", "log", &out)
            o.name("source", "broker", &out)
            o.value("direction", .null, &out)
            o.value("packet", .null, &out)
            o.string("level", l.line.level, &out)
            o.string("line", l.line.text, &out)
            o.int("line_number", l.line.number, &out)
            o.time("logged_time", l.line.time, &out)
        case .performative(let f):
            o.name("kind", "frame", &out)
            o.string("performative", f.frame.name, &out)
            o.name("direction", directionKey(f.direction), &out)
            o.int("packet", f.packetNumber, &out)
            o.int("channel", Int(f.frame.channel), &out)
            o.string("description", Describe.performative(f.frame), &out)
        }
        o.end(&out)
    }

    static func momentKind(_ kind: TCPMoment.Kind) -> String { momentKey(kind).description }

    /// `momentKind` as a constant, for writers that copy it as it is.
    static func momentKey(_ kind: TCPMoment.Kind) -> StaticString {
        switch kind {
        case .syn: "syn"
        case .synAck: "syn-ack"
        case .fin: "fin"
        case .reset: "rst"
        case .gap: "gap"
        case .dataAfterFIN: "data-after-fin"
        case .overlapConflict: "overlap-conflict"
        case .lateWrite: "late-write"
        }
    }

    /// The members of a diagnosis's object (docs/json.md), after any that `o` already has.
    package static func writeDiagnosis(_ d: Diagnosis, _ o: inout JSONObjectWriter, _ out: inout JSONOutput) {
        o.string("code", d.code.rawValue, &out)
        o.string("severity", d.severity.rawValue, &out)
        o.string("summary", d.summary, &out)
        o.string("side", d.side?.rawValue, &out)
        o.int("errno", d.errno?.errno, &out)
        o.string("errno_name", d.errno?.name, &out)
        o.string("rule", d.errno?.rule, &out)
        o.objects("evidence", d.evidence.count, &out) { i, o, out in
            let e = d.evidence[i]
            o.int("packet", e.packetNumber > 0 ? e.packetNumber : nil, &out)
            o.time("time", e.time, &out)
            o.string("what", e.what, &out)
        }
        o.value("details", .array(d.details.map(JSON.string)), &out)
        o.value("advice", .array(d.advice.map(JSON.string)), &out)
        o.int("consequence_of", d.consequenceOf, &out)
    }
}
