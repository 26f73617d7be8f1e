// The stories and diagnoses: real captures checked against their ground truth, golden reports of every capture,
// and synthetic timelines for every diagnosis.
import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopeReassembly
@testable import AMQPScopeTimeline

private func truth(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: Paths.captures.appendingPathComponent("\(name).truth.json"))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

private func path(_ obj: Any?, _ keys: String...) -> Any? {
    var current = obj
    for key in keys {
        if let index = Int(key), let array = current as? [Any] {
            current = index < array.count ? array[index] : nil
        } else {
            current = (current as? [String: Any])?[key]
        }
    }
    return current
}

private func stories(_ name: String) -> [Story] {
    let r = Analysis.analyzeFile(Paths.captures.appendingPathComponent("\(name).pcap").path)
    return r.records.map { Story($0) }
}

private func parseTime(_ text: String) -> Timestamp? {
    // "2026-11-25T09:30:41.236735+00:00"
    let parts = text.split(separator: "T")
    guard parts.count == 2 else { return nil }
    let date = parts[0].split(separator: "-").compactMap { Int64($0) }
    let clock = parts[1].prefix(15).split(separator: ":")
    guard date.count == 3, clock.count == 3, let h = Int64(clock[0]), let m = Int64(clock[1]), let s = Double(clock[2])
    else { return nil }
    var y = date[0]
    let mo = date[1]
    let d = date[2]
    if mo <= 2 { y -= 1 }
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
    return Timestamp(nanoseconds: (days * 86_400 + h * 3600 + m * 60) * 1_000_000_000 + Int64(s * 1e9))
}

@Suite("Stories of real captures") struct RealCaptureStoryTests {
    /// The incident: the report's first lines say who went silent, who reset, which errno, and the broker's log line.
    @Test func missedHeartbeatsTellsTheWholeStory() throws {
        let t = try truth("missed-heartbeats-104")
        let expect = t["expect"]
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("missed-heartbeats-104.pcap").path)
        let text = AnalyzeReport.text([result])
        let firstLines = text.split(separator: "\n").prefix(8).joined(separator: "\n")
        let pika = try #require(path(t, "versions", "pika") as? String)
        let heartbeat = try #require(path(expect, "tune", "0", "negotiated", "heartbeat") as? Int)
        let errno = try #require(path(expect, "client_error", "errno") as? Int)
        let errnoName = try #require(path(expect, "client_error", "errno_name") as? String)
        #expect(
            firstLines.contains(
                "ERROR missed-heartbeats: the client (Pika Python Client Library \(pika)) sent nothing for"))
        #expect(firstLines.contains("though a \(heartbeat) s heartbeat was negotiated"))
        #expect(firstLines.contains("then the server reset the connection at"))
        #expect(firstLines.contains("\(errnoName) (\(errno))"))
        // The broker's own log line is quoted as the one to look for.
        let logLine = try #require(path(expect, "heartbeat_timeout_s", "source") as? String)
        let quoted = "missed heartbeats from client, timeout: \(heartbeat)s"
        #expect(logLine.contains(quoted))
        #expect(firstLines.contains(quoted))
        // The reset we report is the one the broker logged (within a millisecond of its log time).
        let s = try #require(stories("missed-heartbeats-104").first)
        let reset = try #require(s.diagnoses.first { $0.code.rawValue == "reset" })
        let droppedText = try #require(path(expect, "connection_dropped_by", "at") as? String)
        let dropped = try #require(parseTime(droppedText))
        #expect(abs(reset.evidence[0].time.since(dropped)) < 1_000_000)
        #expect(reset.side == .client && reset.errno?.errno == errno && reset.severity == .error)
        let silent = try #require(s.diagnoses.first { $0.code.rawValue == "missed-heartbeats" })
        #expect(silent.side == .client && silent.severity == .error)
        #expect(s.diagnoses.first?.code.rawValue == "missed-heartbeats", "the cause comes first")
        let rabbit = try #require(path(t, "versions", "rabbitmq") as? String)
        #expect(s.server?.name == "RabbitMQ \(rabbit)")
    }

    @Test func healthyConnectionHasNoWarnings() throws {
        let s = stories("healthy-heartbeats")
        #expect(s.count == 1)
        #expect(
            s.allSatisfy { $0.diagnoses.allSatisfy { $0.severity == .info } },
            "\(s.flatMap(\.diagnoses).map(\.summary))")
        let t = try truth("healthy-heartbeats")
        #expect(s[0].negotiated?.heartbeat == path(t, "expect", "tune", "0", "negotiated", "heartbeat") as? Int)
        #expect(
            Direction.allCases.allSatisfy { s[0].record.frameCounts[$0].heartbeat > 0 }, "heartbeats flow both ways")
    }

    @Test func channelErrorsWithTheirTexts() throws {
        let t = try truth("channel-error-404")
        let expected = try #require(path(t, "expect", "channel_errors") as? [[String: Any]])
        let diagnoses = stories("channel-error-404").flatMap(\.diagnoses).filter { $0.code.rawValue == "channel-error" }
        #expect(diagnoses.count == expected.count)
        for (d, e) in zip(diagnoses, expected) {
            #expect(d.summary.contains("closed channel \(e["channel"]!)"))
            #expect(d.summary.contains("\(e["reply_code"]!) \"\(e["reply_text"]!)\""))
            #expect(d.severity == .warning && d.side == .server)
        }
    }

    @Test func connectionForced() throws {
        let t = try truth("connection-forced-320")
        let code = try #require(path(t, "expect", "connection_close_from_broker", "reply_code") as? Int)
        let text = try #require(path(t, "expect", "connection_close_from_broker", "reply_text") as? String)
        let d = try #require(
            stories("connection-forced-320").first?.diagnoses.first { $0.code.rawValue == "connection-error" })
        #expect(d.summary.contains("\(code) \"\(text)\""))
        #expect(d.side == .server && d.severity == .error)
    }

    @Test func blockedWithReason() throws {
        let t = try truth("blocked")
        let reason = try #require(path(t, "expect", "blocked", "reason") as? String)
        let d = try #require(stories("blocked").first?.diagnoses.first { $0.code.rawValue == "blocked" })
        #expect(d.summary.contains("(\"\(reason)\")"))
        #expect(d.evidence.count == 2, "blocked and unblocked")
    }

    /// Every recorded connection's negotiated values equal what pika itself logged.
    @Test(arguments: [
        "healthy-heartbeats", "missed-heartbeats-104", "channel-error-404", "large-messages", "many-connections",
        "connection-forced-320", "blocked",
    ])
    func negotiatedValuesMatchTheClientsLog(name: String) throws {
        let t = try truth(name)
        let all = stories(name)
        // many-connections records one aggregate for its 20 identical negotiations.
        if let aggregate = path(t, "expect", "tune", "all_negotiated") as? [String] {
            let values = try #require(try JSONSerialization.jsonObject(with: Data(aggregate[0].utf8)) as? [String: Int])
            #expect(aggregate.count == 1)
            #expect(all.count == path(t, "expect", "connections", "count") as? Int)
            #expect(
                all.allSatisfy {
                    $0.negotiated?.heartbeat == values["heartbeat"] && $0.negotiated?.frameMax == values["frame_max"]
                })
            return
        }
        let tunes = try #require(path(t, "expect", "tune") as? [[String: Any]])
        let byPort = Dictionary(uniqueKeysWithValues: all.map { (Int($0.record.info.client.port), $0) })
        #expect(tunes.count == byPort.count)
        for tune in tunes {
            let s = try #require(byPort[tune["client_port"] as! Int])
            let negotiated = tune["negotiated"] as! [String: Int]
            #expect(s.negotiated?.heartbeat == negotiated["heartbeat"])
            #expect(s.negotiated?.frameMax == negotiated["frame_max"])
            #expect(s.negotiated?.channelMax == negotiated["channel_max"])
            #expect(s.negotiated?.serverProposed?.heartbeat == (tune["server_proposed"] as! [String: Int])["heartbeat"])
        }
    }
}

@Suite("Golden reports") struct GoldenReportTests {
    static let directory = Paths.root.appendingPathComponent("Tests/AMQPScopeTests/Golden")
    /// Set AMQPSCOPE_UPDATE_GOLDEN=1 to re-record the golden files from the current output.
    static let update = ProcessInfo.processInfo.environment["AMQPSCOPE_UPDATE_GOLDEN"] == "1"

    @Test(arguments: Paths.allCaptures)
    func textAndJSON(path: String) throws {
        var result = Analysis.analyzeFile(path)
        let name = URL(fileURLWithPath: path).lastPathComponent
        // Machine-independent: no directory names in the output.
        result.path = name
        result.error = result.error?.replacingOccurrences(of: path, with: name)
        for (ext, output) in [("txt", AnalyzeReport.text([result])), ("json", AnalyzeReport.json([result]))] {
            let file = Self.directory.appendingPathComponent("\(name).\(ext)")
            if Self.update {
                try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
                try output.write(to: file, atomically: true, encoding: .utf8)
                continue
            }
            let golden = try String(contentsOf: file, encoding: .utf8)
            if golden != output {
                let a = golden.split(separator: "\n", omittingEmptySubsequences: false)
                let b = output.split(separator: "\n", omittingEmptySubsequences: false)
                let line =
                    zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
                let was = line < a.count ? String(a[line]) : "<end>"
                let now = line < b.count ? String(b[line]) : "<end>"
                Issue.record(
                    Comment(
                        rawValue: "\(name).\(ext) differs from its golden file at line \(line + 1):\n  golden: \(was)\n"
                            + "  now:    \(now)\n(re-record with AMQPSCOPE_UPDATE_GOLDEN=1 if the change is intended)")
                )
            }
        }
    }
}

@Suite("Synthetic diagnoses") struct SyntheticDiagnosisTests {
    func codes(_ s: Story) -> [String] {
        s.diagnoses.map {
            "\($0.severity.rawValue) \($0.code) \($0.side?.rawValue ?? "-") \($0.errno.map { String($0.errno) } ?? "-")"
        }
    }

    /// The client falls silent; the server keeps beating and then resets it.
    @Test func clientMissesHeartbeats() throws {
        let s = try #require(Conversation.seedIncident().stories().first)
        // One chain: the silence first, the reset under it; the RST the silence already tells gets no abrupt-close.
        #expect(codes(s) == ["error missed-heartbeats client 104", "error reset client 104"])
        #expect(s.diagnoses.map(\.consequenceOf) == [nil, 0])
        #expect(!s.diagnoses[0].summary.contains("ECONNRESET"), "the errno is said once, by the reset")
        #expect(s.diagnoses[0].advice.first?.contains("process_data_events") == true, "advice fitted to pika")
        #expect(s.diagnoses[0].details.contains { $0.contains("TCP stack still sent 6 packets") })
    }

    /// Roles swapped: the server falls silent and the client closes with a FIN; advice is generic for another client.
    @Test func serverMissesHeartbeats() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 1, clientProduct: "amqp-client-java", clientVersion: "5.20.0")
        for i in 1...5 {
            c.at(Double(i) * 0.5)
            c.client(Encode.heartbeat)
        }
        c.at(3.0)
        c.clientFIN()
        let s = try #require(c.stories().first)
        #expect(codes(s).first == "error missed-heartbeats server -")
        #expect(s.diagnoses[0].summary.contains("then the client closed the connection (FIN)"))
        #expect(s.diagnoses[0].advice.first?.hasPrefix("Find out why the silent side stopped sending") == true)
        #expect(
            !s.diagnoses[0].details.contains { $0.contains("RabbitMQ's log") },
            "the broker log line is only for a silent client")
        #expect(s.diagnoses[0].details.contains { $0.contains("sent no TCP packet at all") })
    }

    /// FIN, then a late write, then the RST it draws: EPIPE on the writer.
    @Test func finThenLateWriteThenResetGivesEPIPE() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 0)
        c.at(1)
        c.serverFIN()
        c.at(2)
        c.client(
            Encode.methodFrame(1, 60, 40, [.short(0), .shortString(""), .shortString("q"), .bit(false), .bit(false)]))
        c.serverRST()
        let s = try #require(c.stories().first)
        #expect(
            codes(s) == [
                "error write-after-close client 32", "error reset client 32", "error messages-at-risk client -",
                "warning abrupt-close server -",
            ])
        #expect(s.record.flow?.atRisk.lost == 1, "the publish written after the FIN is lost for certain")
        #expect(s.diagnoses[0].summary.contains("EPIPE (32)"))
        #expect(s.diagnoses[0].advice.first?.contains("StreamLostError") == true)
    }

    /// Roles swapped: the client closes (FIN), the server writes late, the client resets: EPIPE on the server.
    @Test func serverWritesAfterClientFIN() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 0)
        c.at(1)
        c.clientFIN()
        c.at(2)
        c.server(Encode.heartbeat)
        c.clientRST()
        let s = try #require(c.stories().first)
        #expect(codes(s).prefix(2) == ["error write-after-close server 32", "error reset server 32"])
    }

    @Test func resetBeforeHandshakeIsConnectionRefused() throws {
        var c = Conversation()
        c.at(0)
        var refused = Conversation()
        refused.packets = []
        // SYN, then RST-ACK from the server.
        refused.packets.append(
            (
                c.now,
                Build.ethernet(
                    payload: Build.ipv4(payload: Build.tcp(sport: 40000, dport: 5672, seq: 1, flags: [.syn])))
            ))
        refused.packets.append(
            (
                c.now + 1000,
                Build.ethernet(
                    payload: Build.ipv4(
                        payload: Build.tcp(sport: 5672, dport: 40000, seq: 0, ack: 2, flags: [.rst, .ack])))
            ))
        let s = try #require(refused.stories().first)
        #expect(codes(s) == ["error reset client 111"])
        #expect(s.diagnoses[0].errno?.rule.contains("SYN_SENT") == true)
    }

    @Test func cleanCloseWithLingerZeroIsHealthy() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 60)
        c.at(1)
        c.client(Conversation.connectionClose)
        c.server(Conversation.connectionCloseOk)
        c.clientFIN()
        c.serverRST()
        let s = try #require(c.stories().first)
        #expect(codes(s) == ["info reset client -"])
        #expect(s.diagnoses[0].advice.isEmpty)
    }

    @Test func connectionAndChannelErrors() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 60)
        c.client(Encode.methodFrame(1, 20, 10, [.shortString("")]))
        c.server(
            Encode.methodFrame(
                1, 20, 40,
                [.short(406), .shortString("PRECONDITION_FAILED - inequivalent arg 'durable'"), .short(50), .short(10)])
        )
        c.server(
            Encode.methodFrame(0, 10, 50, [.short(501), .shortString("FRAME_ERROR - bad frame"), .short(0), .short(0)]))
        c.clientFIN()
        c.serverRST()
        let s = try #require(c.stories().first)
        #expect(codes(s).contains("error connection-error server -"))
        #expect(codes(s).contains("warning channel-error server -"))
        #expect(
            s.diagnoses.first { $0.code.rawValue == "channel-error" }?.summary.contains("(caused by queue.declare)")
                == true)
        #expect(!codes(s).contains { $0.contains("abrupt-close") }, "a Connection.Close was sent")
    }

    @Test func blockedUntilTheEnd() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 0)
        c.at(1)
        c.server(Encode.methodFrame(0, 10, 60, [.shortString("low on disk")]))
        c.at(9)
        c.clientAck()
        let s = try #require(c.stories().first)
        let d = try #require(s.diagnoses.first { $0.code.rawValue == "blocked" })
        #expect(d.summary.contains("\"low on disk\""))
        #expect(d.summary.contains("still blocked"))
    }

    @Test func heartbeatsDisabledAndIdle() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 0)
        c.at(100)
        c.client(Encode.methodFrame(1, 20, 10, [.shortString("")]))
        let s = try #require(c.stories().first)
        #expect(codes(s) == ["warning heartbeats-disabled - -"])
        // Short idle periods are fine.
        var d = Conversation()
        d.open()
        d.amqpHandshake(heartbeat: 0)
        d.at(10)
        d.client(Encode.methodFrame(1, 20, 10, [.shortString("")]))
        #expect(try #require(d.stories().first).diagnoses.isEmpty)
    }

    @Test func protocolViolationAndCaptureIncomplete() throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 0)
        c.client(Encode.frame(8, 0, [], end: 0x00) + Encode.heartbeat + Encode.heartbeat + Encode.heartbeat)
        let s = try #require(c.stories().first)
        #expect(codes(s) == ["error protocol-violation client -"])
        // Mid-stream pickup with a gap: capture-incomplete, and the heartbeat is inferred from the cadence.
        var m = Conversation()
        m.clientSeq = 777
        m.serverSeq = 999
        for i in 0..<5 {
            m.at(Double(i) * 30)
            m.server(Encode.heartbeat)
            m.client(Encode.heartbeat)
        }
        m.clientSeq &+= 100  // 100 bytes never captured
        m.client(Encode.heartbeat)
        let ms = try #require(m.stories().first)
        #expect(ms.negotiated?.heartbeat == 60 && ms.negotiated?.inferred == true)
        let incomplete = try #require(ms.diagnoses.first { $0.code.rawValue == "capture-incomplete" })
        #expect(incomplete.summary.contains("joined the connection after it opened"))
        #expect(incomplete.summary.contains("100 bytes client->server never captured"))
    }
}

@Suite("Record order") struct RecordOrdererTests {
    func record(_ id: Int) -> ConnectionRecord {
        let e = Endpoint(address: IPAddress(ipv4: 1), port: UInt16(id))
        return ConnectionRecord(
            info: ConnectionInfo(
                id: ConnectionID(rawValue: id), client: e, server: e, opening: .handshake, roleEvidence: .syn),
            firstTime: Timestamp(nanoseconds: 0), lastTime: Timestamp(nanoseconds: 0))
    }

    @Test func handsOnInIdOrder() {
        var orderer = RecordOrderer(capacity: 10)
        var out: [Int] = []
        for id in [3, 1, 2, 5, 4] { orderer.add(record(id)) { out.append($0.info.id.rawValue) } }
        #expect(out == [1, 2, 3, 4, 5])
    }

    /// Connection 1 stays open while thousands of later ones end: at most `capacity` are ever held back.
    @Test func aLongLivedConnectionDoesNotHoldEverything() {
        var orderer = RecordOrderer(capacity: 16)
        var out: [Int] = []
        var held = 0
        for id in 2...5000 {
            orderer.add(record(id)) { out.append($0.info.id.rawValue) }
            held = max(held, id - 1 - out.count)
        }
        #expect(held <= 17)
        orderer.add(record(1)) { out.append($0.info.id.rawValue) }
        orderer.finish { out.append($0.info.id.rawValue) }
        #expect(out.count == 5000 && Set(out).count == 5000)
        #expect(out.last == 1 || out.contains(1))
    }
}
