// AMQP 1.0 on real captures: the frame list equals tshark's (the oracle), and the recorded scenarios are told as
// their ground truth (Proton's exceptions and frame trace, the brokers' logs) says they happened.
import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopeAMQP10

private let tsharkReady = Tools.tshark != nil || Tools.requireTshark

extension Paths {
    /// The AMQP 1.0 captures recorded by scripts/record-captures-amqp10 (each with a truth file).
    static var amqp10Captures: [String] { pcaps(in: captures.appendingPathComponent("amqp10")) }

    /// More AMQP 1.0 captures to hold against tshark, from a directory named by AMQPSCOPE_EXTRA_AMQP10_CAPTURES
    /// (captures recorded by other people that the repository does not carry).
    static var extraAMQP10Captures: [String] {
        guard let dir = ProcessInfo.processInfo.environment["AMQPSCOPE_EXTRA_AMQP10_CAPTURES"] else { return [] }
        return pcaps(in: URL(fileURLWithPath: dir))
    }
}

private func analyze10(_ path: String, frames: Bool = true, byteAtATime: Bool = false, showCredentials: Bool = false)
    throws -> CaptureResult
{
    var configuration = EngineConfiguration()
    configuration.codec.showCredentials = showCredentials
    configuration.recordFrames = frames
    configuration.byteAtATime = byteAtATime
    let keylog = String(path.dropLast(".pcap".count)) + ".keylog"
    if FileManager.default.fileExists(atPath: keylog) {
        configuration.keyLog = KeyLog(text: try String(contentsOfFile: keylog, encoding: .utf8))
    }
    return Analysis.analyzeFile(path, configuration: configuration)
}

private func truth10(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: String(path.dropLast(".pcap".count)) + ".truth.json"))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

private func path10(_ name: String) -> String {
    Paths.captures.appendingPathComponent("amqp10/\(name).pcap").path
}

@Suite("AMQP 1.0 against tshark", .enabled(if: tsharkReady, "tshark is not installed"))
struct AMQP10OracleTests {
    /// Frames where tshark 4.0 is wrong, each with its reason: (capture file name, packet numbers). None in the
    /// recorded captures: tshark decodes every 1.0 frame of them.
    static let knownTsharkErrors: [String: (packets: Set<Int>, reason: String)] = [:]

    /// tshark's options for a capture: Proton's broker listens on 5673, and AMQPS captures come with a key log.
    static func options(_ path: String) -> [String] {
        var out: [String] = []
        let name = URL(fileURLWithPath: path).lastPathComponent
        if name.hasPrefix("proton-") { out += ["-d", "tcp.port==5673,amqp"] }
        let keylog = String(path.dropLast(".pcap".count)) + ".keylog"
        if FileManager.default.fileExists(atPath: keylog) {
            out += ["-o", "tls.keylog_file:\(keylog)", "-d", "tcp.port==5671,tls"]
        }
        return out
    }

    /// tshark's frame list, one line per protocol header or frame: "packet port header AMQP 3 1 0 0", or
    /// "packet port AMQP|SASL channel name" (channel "-" for SASL frames; name "empty" for an empty frame).
    static func tsharkFrames(_ path: String) throws -> [String] {
        let tool = try #require(Tools.tshark, "tshark is not installed (scripts/setup installs it)")
        let result = try Tools.run(
            tool,
            options(path) + [
                "-r", path, "-Y", "amqp", "-T", "json", "--no-duplicate-keys", "-j", "frame tcp amqp",
            ])
        let packets = try #require(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]], "tshark's JSON")
        let performatives = [
            16: "open", 17: "begin", 18: "attach", 19: "flow", 20: "transfer", 21: "disposition", 22: "detach",
            23: "end", 24: "close", 64: "sasl-mechanisms", 65: "sasl-init", 66: "sasl-challenge", 67: "sasl-response",
            68: "sasl-outcome",
        ]
        var out: [String] = []
        for packet in packets {
            guard let layers = (packet["_source"] as? [String: Any])?["layers"] as? [String: Any],
                let number = (layers["frame"] as? [String: Any])?["frame.number"] as? String,
                let port = (layers["tcp"] as? [String: Any])?["tcp.srcport"] as? String
            else { continue }
            let pdus = (layers["amqp"] as? [[String: Any]]) ?? [(layers["amqp"] as? [String: Any]) ?? [:]]
            for d in pdus {
                if let id = d["amqp.init.id"] as? String {
                    let v = ["amqp.init.version_major", "amqp.init.version_minor", "amqp.init.version_revision"]
                        .map { d[$0] as? String ?? "?" }
                    out.append("\(number) \(port) header AMQP \(id) \(v.joined(separator: " "))")
                    continue
                }
                guard let type = d["amqp.type"] as? String, let doff = (d["amqp.doff"] as? String).flatMap(Int.init),
                    let length = (d["amqp.length"] as? String).flatMap(Int.init)
                else { continue }  // not a 1.0 frame
                let code = ((d["amqp.performative"] ?? d["amqp.sasl.method"]) as? String).flatMap { Int($0) }
                let name = code.flatMap { performatives[$0] } ?? (length == 4 * doff ? "empty" : "unnamed")
                let channel = type == "0" ? (d["amqp.channel"] as? String ?? "?") : "-"
                out.append("\(number) \(port) \(type == "0" ? "AMQP" : "SASL") \(channel) \(name)")
            }
        }
        return out
    }

    /// amqpscope's frame list in the same form.
    static func ourFrames(_ result: CaptureResult) -> [String] {
        var out: [(Int, Int, String)] = []  // packet, order within it, line
        for r in result.records {
            func port(_ d: Direction) -> UInt16 { d == .clientToServer ? r.info.client.port : r.info.server.port }
            for (i, h) in r.protocolHeaders.enumerated() where h.header.isAMQP10 {
                let line =
                    "\(h.packetNumber) \(port(h.direction)) header AMQP \(h.header.protocolID) "
                    + "\(h.header.major) \(h.header.minor) \(h.header.revision)"
                out.append((h.packetNumber, i, line))
            }
            for (i, f) in r.performatives.enumerated() {
                let kind = f.frame.type == 0 ? "AMQP \(f.frame.channel)" : "SASL -"
                out.append((f.packetNumber, 1000 + i, "\(f.packetNumber) \(port(f.direction)) \(kind) \(f.frame.name)"))
            }
        }
        return out.map(\.2)
    }

    /// Packets where tshark reports a dissector bug. tshark 4.0.17 asserts on a zero-length binary (vbin8 "a0 00",
    /// tvbuff.c:4469 "len > 0") inside a transfer and drops the rest of the segment: there it lists a prefix of the
    /// segment's frames, and amqpscope must have that prefix (and more, unless the binary ended the segment) (`emptyBinaryTripsTshark` proves it from bytes).
    static func dissectorBugs(_ path: String) throws -> Set<Int> {
        let tool = try #require(Tools.tshark)
        let text = try Tools.run(
            tool, options(path) + ["-r", path, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number"]
        ).stdout
        return Set(text.split(separator: "\n").compactMap { Int($0) })
    }

    static func compare(_ path: String) throws {
        let name = URL(fileURLWithPath: path).lastPathComponent
        let theirs = try tsharkFrames(path)
        let result = try analyze10(path)
        let mine = Self.ourFrames(result)
        #expect(!theirs.isEmpty, "\(name): tshark found no AMQP 1.0 frames")
        let known = Self.knownTsharkErrors[name]?.packets ?? []
        let bugs = try dissectorBugs(path)
        func packet(_ line: String) -> Int { Int(line.split(separator: " ")[0]) ?? 0 }
        for p in bugs {
            let t = theirs.filter { packet($0) == p }
            let m = mine.filter { packet($0) == p }
            #expect(
                m.count >= t.count && Array(m.prefix(t.count)) == t,
                "\(name): packet \(p), where tshark reports a dissector bug: tshark \(t), amqpscope \(m)")
        }
        // As multisets: the same frames, each as often, in the same packets.
        var counts: [String: Int] = [:]
        for line in theirs where !known.contains(packet(line)) && !bugs.contains(packet(line)) {
            counts[line, default: 0] += 1
        }
        for line in mine where !known.contains(packet(line)) && !bugs.contains(packet(line)) {
            counts[line, default: 0] -= 1
        }
        let onlyTheirs = counts.filter { $0.value > 0 }.keys.sorted()
        let onlyMine = counts.filter { $0.value < 0 }.keys.sorted()
        #expect(onlyTheirs.isEmpty, "\(name): tshark decodes frames amqpscope does not: \(onlyTheirs.prefix(10))")
        #expect(onlyMine.isEmpty, "\(name): amqpscope decodes frames tshark does not: \(onlyMine.prefix(10))")
        // No false alarm: nothing malformed where tshark saw nothing wrong.
        for r in result.records where r.isAMQP {
            #expect(
                r.problems.allSatisfy { known.contains($0.packetNumber) || $0.reason.contains("gap") },
                "\(name): \(r.problems.prefix(3).map(\.reason))")
        }
    }

    @Test(arguments: Paths.amqp10Captures)
    func framesMatchTshark(path: String) throws { try Self.compare(path) }

    @Test(arguments: Paths.extraAMQP10Captures)
    func extraCapturesMatchTshark(path: String) throws { try Self.compare(path) }

    /// tshark's bug, from bytes: one segment holding a transfer whose amqp-value is an empty binary, then a second
    /// transfer. tshark 4.0 lists the first and drops the second; amqpscope reads both, and the payload lengths are
    /// those the bytes say.
    @Test func emptyBinaryTripsTshark() throws {
        let header = Enc10.header(0)
        let open = Enc10.open("c", idle: nil)
        let begin = Enc10.begin(remote: nil)
        let attach = Enc10.attach("l", handle: 0, receiver: false, source: nil, target: "q")
        let first = Enc10.transfer(handle: 0, id: 0, more: false, payload: Enc10.described(0x77, [0xa0, 0x00]))
        let second = Enc10.transfer(handle: 0, id: 1, more: false, payload: Enc10.described(0x77, Enc10.bin([1, 2])))
        let client = header + open + begin + attach + first + second
        var packets: [(time: Int64, bytes: [UInt8], originalLength: Int?)] = [
            (1_000_000_000, Build.segment(fromClient: true, seq: 100, flags: [.syn]), nil),
            (1_000_100_000, Build.segment(fromClient: false, seq: 500, ack: 101, flags: [.syn, .ack]), nil),
        ]
        let setup = header + open + begin + attach
        packets.append((1_000_200_000, Build.segment(fromClient: true, seq: 101, ack: 501, payload: setup), nil))
        packets.append(
            (
                1_000_300_000,
                Build.segment(fromClient: true, seq: 101 + UInt32(setup.count), ack: 501, payload: first + second), nil
            ))
        #expect(client.count == setup.count + first.count + second.count)
        let path = Paths.temporaryFile("amqp10-empty-binary.pcap", Build.pcap(packets: packets))
        let theirs = try Self.tsharkFrames(path).filter { $0.hasPrefix("4 ") }
        #expect(theirs == ["4 40000 AMQP 0 transfer"], "tshark 4.0 lists one transfer (fixed in a later tshark?)")
        #expect(try Self.dissectorBugs(path) == [4])
        let ours = Self.ourFrames(try analyze10(path)).filter { $0.hasPrefix("4 ") }
        #expect(ours == ["4 40000 AMQP 0 transfer", "4 40000 AMQP 0 transfer"])
        let transfers = try analyze10(path).records.first?.performatives.compactMap { f -> Int? in
            if case .transfer(let t)? = f.frame.performative { return t.payloadLength }
            return nil
        }
        #expect(transfers == [5, 7], "amqp-value sections of 5 (00 53 77 a0 00) and 7 bytes")
    }

    /// Fed one byte at a time, every capture decodes to the same frames.
    @Test(arguments: Paths.amqp10Captures)
    func chunkingChangesNothing(path: String) throws {
        let whole = try analyze10(path)
        let drip = try analyze10(path, byteAtATime: true)
        #expect(whole.records.map(\.performatives) == drip.records.map(\.performatives))
        #expect(whole.records.map(\.deliveries) == drip.records.map(\.deliveries))
    }
}

@Suite("AMQP 1.0 stories against their ground truth")
struct AMQP10StoryTests {
    static func story(_ name: String) throws -> (Story, [String: Any]) {
        let result = try analyze10(path10(name), frames: false)
        let amqp = result.records.filter(\.isAMQP)
        #expect(amqp.count == 1, "\(name): \(amqp.count) AMQP connections")
        let record = try #require(amqp.first)
        return (Story(record), try truth10(path10(name)))
    }

    static func connection(_ truth: [String: Any]) throws -> [String: Any] {
        let expect = try #require(truth["expect"] as? [String: Any])
        return try #require((expect["per_connection"] as? [[String: Any]])?.first)
    }

    /// Every recorded capture: AMQP 1.0, each side's advertised idle timeout and container id as the client's trace
    /// printed them, and as many empty frames from the broker as the client received.
    @Test(arguments: Paths.amqp10Captures)
    func opensAsTheTraceSaysThem(path: String) throws {
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let (story, truth) = try Self.story(name)
        #expect(AnalyzeReport.protocolName(story.record.verdict) == "AMQP 1.0")
        let c = try Self.connection(truth)
        let s10 = try #require(story.amqp10)
        if let ms = c["client_open_idle_time_out_ms"] as? Int {
            #expect(s10.open(sentBy: .client)?.idleTimeOut == UInt32(ms), "\(name) client idle-time-out")
        }
        if let ms = c["broker_open_idle_time_out_ms"] as? Int {
            #expect(s10.open(sentBy: .server)?.idleTimeOut == UInt32(ms), "\(name) broker idle-time-out")
        }
        if let id = c["broker_container_id"] as? String {
            #expect(s10.open(sentBy: .server)?.containerID == id, "\(name) broker container-id")
        }
        if let empties = c["empty_frames_received"] as? [String: Any], let count = empties["count"] as? Int {
            #expect(story.record.performativeCounts.serverToClient.empty == count, "\(name) empty frames")
        }
    }

    /// A client that slept past the broker's idle timeout: the client went silent, the broker (RabbitMQ, which
    /// logged "missed heartbeats from client") reset it, and the client's next call gets ECONNRESET.
    @Test func clientSilentPastTheBrokersIdleTimeout() throws {
        let (story, truth) = try Self.story("rabbitmq10-idle-timeout")
        let log = try #require((truth["expect"] as? [String: Any])?["broker_log"] as? [String])
        #expect(log.contains { $0.contains("missed heartbeats from client") })
        let d = try #require(story.diagnoses.first { $0.code == .missedHeartbeats })
        #expect(d.side == .client && d.errno?.name == "ECONNRESET")
        #expect(d.summary.contains("server advertised an idle timeout of 2 s"), "\(d.summary)")
        #expect(d.evidence.contains { $0.what.contains("reset the connection") })
        #expect(story.diagnoses.first?.code == .missedHeartbeats, "the cause comes first")
    }

    /// Proton closing with local-idle-timeout expired while the broker's empty frames arrived unread: told as the
    /// client not servicing its connection, on both brokers.
    @Test(arguments: ["rabbitmq10-local-idle-timeout", "proton-idle-timeout"])
    func brokerFramesSatUnread(name: String) throws {
        let (story, truth) = try Self.story(name)
        let error = try #require((Self.connection(truth)["errors_in_frames"] as? [[String: Any]])?.first)
        let d = try #require(story.diagnoses.first { $0.code == .missedHeartbeats })
        #expect(d.side == .client)
        #expect(d.summary.contains("\(error["condition"]!) \"\(error["description"]!)\""), "\(d.summary)")
        #expect(d.summary.contains("did not read them"))
        #expect(d.advice.first?.contains("Qpid Proton") == true)
        #expect(!story.diagnoses.contains { $0.code == .connectionError }, "the close is explained, not repeated")
    }

    /// The broker frozen (SIGSTOP) past the client's idle timeout, and RabbitMQ sending no empty frames for a
    /// timeout under a second: the server went silent, and the client closed with resource-limit-exceeded.
    @Test(arguments: ["proton-broker-frozen", "rabbitmq10-heartbeat-under-1s"])
    func serverSilentPastTheClientsIdleTimeout(name: String) throws {
        let (story, truth) = try Self.story(name)
        let error = try #require((Self.connection(truth)["errors_in_frames"] as? [[String: Any]])?.first)
        let d = try #require(story.diagnoses.first { $0.code == .missedHeartbeats })
        #expect(d.side == .server)
        #expect(d.summary.contains("\(error["condition"]!)"), "\(d.summary)")
        let ms = try #require(Self.connection(truth)["client_open_idle_time_out_ms"] as? Int)
        let words = ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
        #expect(d.summary.contains("client advertised an idle timeout of \(words)"), "\(d.summary)")
        if name == "rabbitmq10-heartbeat-under-1s" {
            #expect(d.details.contains { $0.contains("whole seconds") })
        }
    }

    /// A receiver attached to a missing queue: no attach in reply; the broker ended the session with amqp:not-found.
    @Test func attachToAMissingQueue() throws {
        let (story, truth) = try Self.story("rabbitmq10-not-found")
        let condition = try #require(
            (truth["expect"] as? [String: Any]).flatMap { $0["client_conditions"] as? [[String: Any]] }?.first?[
                "condition"] as? [String: Any])
        let d = try #require(story.diagnoses.first { $0.code == .sessionError })
        #expect(d.side == .server)
        #expect(d.summary.contains("\(condition["name"]!) \"\(condition["description"]!)\""), "\(d.summary)")
        let link = try #require(story.amqp10?.links.first)
        let message = try #require(
            ((truth["expect"] as? [String: Any])?["client_error"] as? [String: Any])?["message"] as? String)
        #expect(message.hasSuffix("Opening link \(link.name)"), "\(message)")
        #expect(link.clientRole == .receiver && !link.answered)
        #expect(link.source.map { message.hasSuffix($0) } == true)
        #expect(d.summary.contains("(source \(link.source!))"))
        #expect(link.error?.condition == "amqp:not-found" && link.errorSide == .server)
    }

    /// A refused login: the SASL outcome's code as Proton saw it, a connection error from the server, and no
    /// abrupt-close for the TCP close that must follow it.
    @Test func refusedLogin() throws {
        let (story, truth) = try Self.story("rabbitmq10-sasl-failure")
        let sasl = try #require((truth["expect"] as? [String: Any])?["sasl"] as? [String: Any])
        let outcome = try #require(story.amqp10?.sasl?.outcome)
        #expect(sasl["outcome_code"] as? Int == Int(outcome.code), "\(sasl)")
        let d = try #require(story.diagnoses.first { $0.code == .connectionError })
        #expect(d.side == .server && d.summary.contains("auth (1)"))
        #expect(!story.diagnoses.contains { $0.code == .abruptClose })
        // The password never shows; the user does.
        let text = AnalyzeReport.text([try analyze10(path10("rabbitmq10-sasl-failure"))])
        #expect(text.contains("user \"guest\"") && !text.contains("amqpscope-wrong-password"))
        let shown = AnalyzeReport.text([try analyze10(path10("rabbitmq10-sasl-failure"), showCredentials: true)])
        #expect(shown.contains("amqpscope-wrong-password"), "shown when asked")
    }

    /// Send and receive with acknowledgement: healthy, three deliveries each way, links with their addresses.
    @Test(arguments: ["rabbitmq10-send-receive", "proton-send-receive", "rabbitmq10-tls-send-receive"])
    func healthyFlow(name: String) throws {
        let (story, truth) = try Self.story(name)
        #expect(story.diagnoses.allSatisfy { $0.severity == .info }, "\(story.diagnoses.map(\.summary))")
        let sent = try #require((truth["expect"] as? [String: Any]).flatMap { $0["messages"] as? [String: Any] })
        #expect(story.record.performativeCounts.clientToServer.messages == sent["sent"] as? Int)
        #expect(story.record.performativeCounts.serverToClient.messages == (sent["received"] as? [Any])?.count)
        let links = try #require(story.amqp10?.links)
        #expect(links.map(\.clientRole) == [.sender, .receiver])
        #expect(links.allSatisfy { $0.answered && $0.address != nil })
    }
}
