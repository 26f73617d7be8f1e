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

    static func directionJSON(_ k: DirectionCounters) -> JSON {
        .object([
            ("packets", .int(k.packets)), ("bytes", .int(k.wireBytes)), ("payload_bytes", .int(k.payloadBytes)),
            ("retransmissions", .int(k.retransmissions)), ("out_of_order", .int(k.outOfOrder)),
            ("gaps", .int(k.gaps)), ("gap_bytes", .int(Int64(k.gapBytes))),
        ])
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

    static func framesJSON(_ f: FrameCounts) -> JSON {
        .object([
            ("method", .int(f.method)), ("header", .int(f.header)), ("body", .int(f.body)),
            ("heartbeat", .int(f.heartbeat)),
        ])
    }

    static func directionName(_ d: Direction) -> String { directionKey(d).description }

    /// `directionName` as a constant, for writers that copy it as it is.
    static func directionKey(_ d: Direction) -> StaticString {
        d == .clientToServer ? "client_to_server" : "server_to_client"
    }

    static func latencyJSON(_ l: LatencySummary?) -> JSON {
        guard let l else { return .null }
        return .object([
            ("count", .int(l.count)), ("p50", .double(l.p50)), ("p90", .double(l.p90)), ("p99", .double(l.p99)),
            ("max", .double(l.max)),
        ])
    }

    static func flowPartJSON(_ p: FlowPart) -> JSON {
        .object([
            ("name", .string(p.name)), ("publishes", .int(p.publishes)), ("confirmed", .int(p.confirmed)),
            ("nacked", .int(p.nacked)), ("deliveries", .int(p.deliveries)), ("acked", .int(p.acked)),
            ("max_unacked", .int(p.maxUnacked)), ("prefetch", .optional(p.prefetch)),
            ("confirm_latency_ms", latencyJSON(p.confirmLatency)), ("ack_latency_ms", latencyJSON(p.ackLatency)),
        ])
    }

    /// The connection's message flow, as docs/json.md describes it.
    static func flowJSON(_ f: FlowRecord) -> JSON {
        .object([
            ("publishes", .int(f.publishes)), ("confirmed", .int(f.confirmed)), ("nacked", .int(f.nacked)),
            ("server_acks", .int(f.serverAcks)), ("server_nacks", .int(f.serverNacks)),
            ("unconfirmed_at_end", .int(f.unconfirmedAtEnd)), ("returns", .int(f.returns)),
            ("deliveries", .int(f.deliveries)), ("gets", .int(f.gets)), ("get_empty", .int(f.getEmpty)),
            ("acks", .int(f.acks)), ("acked_messages", .int(f.ackedMessages)), ("nacks", .int(f.nacks)),
            ("rejects", .int(f.rejects)), ("redelivered", .int(f.redelivered)), ("max_unacked", .int(f.maxUnacked)),
            ("prefetch", .optional(f.prefetch)), ("confirm_latency_ms", latencyJSON(f.confirmLatency)),
            ("ack_latency_ms", latencyJSON(f.ackLatency)),
            (
                "at_risk",
                .object([
                    ("lost", .int(f.atRisk.lost)), ("unconfirmed", .int(f.atRisk.unconfirmed)),
                    ("unacked", .int(f.atRisk.unacked)),
                    ("channels", .array(f.atRisk.channels.map { .int(Int64($0)) })),
                    ("first_packet", .optional(f.atRisk.firstPacket)), ("last_packet", .optional(f.atRisk.lastPacket)),
                ])
            ),
            ("by_channel", .array(f.byChannel.map(flowPartJSON))),
            ("by_queue", .array(f.byQueue.map(flowPartJSON))),
            (
                "saturations",
                .array(
                    f.saturations.map { s in
                        .object([
                            ("channel", .int(Int64(s.channel))), ("consumer_tag", .optional(s.consumerTag)),
                            ("queue", .optional(s.queue)), ("prefetch", .int(s.prefetch)),
                            ("from", .string(Format.rfc3339(s.from))), ("from_packet", .int(s.fromPacket)),
                            ("to", s.to.map { .string(Format.rfc3339($0)) } ?? .null),
                            ("to_packet", .optional(s.toPacket)),
                        ])
                    })
            ),
            (
                "returned",
                .array(
                    f.returned.map { r in
                        .object([
                            ("channel", .int(Int64(r.channel))), ("reply_code", .int(Int64(r.replyCode))),
                            ("reply_text", .string(r.replyText)), ("exchange", .string(r.exchange)),
                            ("routing_key", .string(r.routingKey)), ("packet", .int(r.packetNumber)),
                        ])
                    })
            ),
            (
                "redeliveries",
                .array(
                    f.redeliveries.map { r in
                        .object([
                            ("message", .string(r.message)), ("redeliveries", .int(r.redeliveries)),
                            ("requeues", .int(r.requeues)), ("channel", .int(Int64(r.channel))),
                            ("first_packet", .int(r.firstPacket)), ("last_packet", .int(r.lastPacket)),
                        ])
                    })
            ),
            ("server_cancels", .array(f.serverCancels.map(JSON.string))),
            ("flow_pauses", .int(f.flowPauses)),
            ("untracked", .int(f.untracked)),
        ])
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

    package static func connectionJSON(_ story: Story, capture: Int, options: ReportOptions) -> JSON {
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
        var members: [(String, JSON)] = [
            ("id", .int(r.info.id.rawValue)),
            ("capture", .int(capture)),
            ("client", .string(r.info.client.description)),
            ("server", .string(r.info.server.description)),
            ("protocol", .string(protocolName(r.verdict))),
            ("tls", r.tls.map(tlsJSON) ?? .null),
            (
                "fallback",
                r.fallback.map { f in
                    .object([
                        ("connection", .int(f.connection.rawValue)), ("server", .string(f.server.description)),
                        ("after_us", .int(f.after / 1000)),
                    ])
                } ?? .null
            ),
            (
                "proxied",
                r.proxied.map { p in
                    .object([
                        ("peer_connection", .int(p.peerConnection.rawValue)), ("proxy", .string(p.proxy.description)),
                        ("leg", .string(p.leg.rawValue)),
                    ])
                } ?? .null
            ),
            ("negotiated", negotiated),
            ("client_properties", story.client.map { Describe.json($0.table) } ?? .null),
            ("server_properties", story.server.map { Describe.json($0.table) } ?? .null),
            (
                "frames",
                story.amqp10 != nil
                    ? .object(
                        Direction.allCases.map { (directionName($0), performativesJSON(r.performativeCounts[$0])) })
                    : .object([
                        ("client_to_server", framesJSON(r.frameCounts.clientToServer)),
                        ("server_to_client", framesJSON(r.frameCounts.serverToClient)),
                    ])
            ),
            ("opening", .string(r.info.opening.rawValue)),
            ("first_time", .string(Format.rfc3339(r.firstTime))),
            ("last_time", .string(Format.rfc3339(r.lastTime))),
            ("ended", .string(story.ending)),
            (
                "tcp",
                .object([
                    ("client_to_server", directionJSON(r.counters.clientToServer)),
                    ("server_to_client", directionJSON(r.counters.serverToClient)),
                ])
            ),
            (
                "heartbeat_cadence_seconds",
                .object(
                    Direction.allCases.map { d in
                        (directionName(d), story.heartbeatCadence[d].map { .double(Double($0) / 1e9) } ?? .null)
                    })
            ),
            (
                "last_sent",
                .object(
                    Direction.allCases.map { d in
                        (
                            directionName(d),
                            .object([
                                ("frame", r.lastFrameTime[d].map { .string(Format.rfc3339($0)) } ?? .null),
                                ("frame_packet", r.lastFrameTime[d] == nil ? .null : .int(r.lastFramePacket[d])),
                                ("packet", r.lastPacketTime[d].map { .string(Format.rfc3339($0)) } ?? .null),
                            ])
                        )
                    })
            ),
            (
                "silences",
                .object(
                    Direction.allCases.map { d in
                        (
                            directionName(d),
                            .array(
                                story.silences[d].map { g in
                                    .object([
                                        ("from", .string(Format.rfc3339(g.from))),
                                        ("to", .string(Format.rfc3339(g.to))),
                                        ("seconds", .double(Double(g.length) / 1e9)),
                                        ("from_packet", .int(g.fromPacket)),
                                        ("to_packet", g.toPacket > 0 ? .int(g.toPacket) : .null),
                                    ])
                                })
                        )
                    })
            ),
            ("links", story.amqp10.map(linksJSON) ?? .null),
            ("flow", r.flow.map(flowJSON) ?? .null),
            ("events", eventsJSON(story, options: options)),
            ("diagnoses", .array(story.diagnoses.map(diagnosisJSON))),
        ]
        if options.showBodies {
            members.append(
                (
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
                        })
                ))
        }
        if options.showBodies && story.amqp10 != nil {
            members.append(
                (
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
                        })
                ))
        }
        if (options.showFrames || options.verbose) && story.amqp10 != nil {
            members.append(
                (
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
                        })
                ))
        } else if options.showFrames || options.verbose {
            members.append(
                (
                    "frame_list",
                    .array(
                        r.frames.filter { options.includes($0.time) }.map { f in
                            .object([
                                ("packet", .int(f.packetNumber)), ("time", .string(Format.rfc3339(f.time))),
                                ("direction", .string(directionName(f.direction))),
                                ("channel", .int(Int64(f.frame.channel))), ("type", .int(Int64(f.frame.type))),
                                ("description", .string(Describe.frame(f.frame))),
                            ])
                        })
                ))
        }
        return .object(members)
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
            o.string("description", Describe.frame(f.frame), &out)
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
            o.string("description", runText(run), &out)
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

    package static func diagnosisJSON(_ d: Diagnosis) -> JSON {
        .object([
            ("code", .string(d.code.rawValue)),
            ("severity", .string(d.severity.rawValue)),
            ("summary", .string(d.summary)),
            ("side", .optional(d.side?.rawValue)),
            ("errno", .optional(d.errno?.errno)),
            ("errno_name", .optional(d.errno?.name)),
            ("rule", .optional(d.errno?.rule)),
            (
                "evidence",
                .array(
                    d.evidence.map { e in
                        .object([
                            ("packet", e.packetNumber > 0 ? .int(e.packetNumber) : .null),
                            ("time", .string(Format.rfc3339(e.time))),
                            ("what", .string(e.what)),
                        ])
                    })
            ),
            ("details", .array(d.details.map(JSON.string))),
            ("advice", .array(d.advice.map(JSON.string))),
            ("consequence_of", .optional(d.consequenceOf)),
        ])
    }
}
