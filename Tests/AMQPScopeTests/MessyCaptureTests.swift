// Messy real captures: packets cut by a snap length, a refused attempt before a fallback.
import Foundation
import Testing

@testable import AMQPScope

/// A classic pcap file with every packet cut to `snaplen` captured bytes, as `tcpdump -s SNAPLEN` writes it: the
/// record headers keep each packet's original length.
func cutToSnapLength(_ bytes: [UInt8], _ snaplen: Int) -> [UInt8] {
    let little = bytes[0] == 0xd4  // a4 b2 c3 d4 in the file's byte order
    func u32(_ at: Int) -> Int {
        let b = bytes[at..<at + 4].map(Int.init)
        return little ? b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 : b[3] | b[2] << 8 | b[1] << 16 | b[0] << 24
    }
    func put(_ value: Int, _ out: inout [UInt8]) {
        let b = [value & 0xff, value >> 8 & 0xff, value >> 16 & 0xff, value >> 24 & 0xff].map(UInt8.init)
        out += little ? b : b.reversed()
    }
    var out = Array(bytes[0..<16])
    put(snaplen, &out)
    out += bytes[20..<24]
    var at = 24
    while at + 16 <= bytes.count {
        let caplen = u32(at + 8)
        out += bytes[at..<at + 8]
        put(min(caplen, snaplen), &out)
        out += bytes[at + 12..<at + 16]
        out += bytes[at + 16..<at + 16 + min(caplen, snaplen)]
        at += 16 + caplen
    }
    return out
}

private func analyzeBytes(_ name: String, _ bytes: [UInt8]) -> [Story] {
    Analysis.analyzeFile(Paths.temporaryFile(name, bytes)).records.map { Story($0) }
}

private func codes(_ stories: [Story]) -> Set<String> {
    Set(stories.flatMap { s in s.diagnoses.map { "\(s.record.info.client.port) \($0.code)" } })
}

@Suite("Messy captures") struct MessyCaptureTests {
    static var classicPcaps: [String] {
        (Paths.recordedCaptures + Paths.amqp10Captures).filter { path in
            path.hasSuffix(".pcap") && !path.hasSuffix(".full.pcap")
                && (try? Data(contentsOf: URL(fileURLWithPath: path)).prefix(4)).map {
                    [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4]].contains(Array($0))
                } == true
        }
    }

    /// Cut to 96 bytes, as `tcpdump -s 96` would have written it: no protocol-violation, no abrupt-close the whole
    /// capture does not have, and the 0-9-1 stories keep their causes (the heartbeat silence, an error close).
    @Test(arguments: classicPcaps)
    func cutToNinetySixBytes(path: String) throws {
        let name = URL(fileURLWithPath: path).lastPathComponent
        let whole = Analysis.analyzeFile(path).records.map { Story($0) }
        let cut = analyzeBytes(
            "cut-\(name)", cutToSnapLength(Array(try Data(contentsOf: URL(fileURLWithPath: path))), 96))
        #expect(cut.count == whole.count)
        let cutCodes = codes(cut)
        #expect(!cutCodes.contains { $0.hasSuffix(" protocol-violation") }, "\(name): \(cutCodes)")
        let abrupt = cutCodes.filter { $0.hasSuffix(" abrupt-close") }
        #expect(abrupt.isSubset(of: codes(whole)), "\(name): \(abrupt)")
        // 0-9-1 in the clear (TLS records cut short cannot be decrypted or measured).
        for (w, c) in zip(whole, cut) where w.amqp10 == nil && w.record.tls == nil {
            for code in [DiagnosisCode.missedHeartbeats, .connectionError, .channelError] {
                let before = w.diagnoses.filter { $0.code == code }
                let after = c.diagnoses.filter { $0.code == code }
                #expect(before.count == after.count, "\(name) \(code)")
                // The silence is measured from the same packets.
                if code == .missedHeartbeats {
                    #expect(before.map(\.evidence) == after.map(\.evidence), "\(name)")
                }
            }
            // No new warning or error: what the cut hides is lost, but nothing is made up.
            let raised = Set(c.diagnoses.filter { $0.severity > .info }.map(\.code))
            let had = Set(w.diagnoses.filter { $0.severity > .info }.map(\.code))
            #expect(raised.isSubset(of: had), "\(name): \(raised.subtracting(had))")
        }
    }

    /// The real `tcpdump -s 96` recording: the clean close it holds is told, nothing else but the cut.
    @Test func recordedSnapLengthCapture() throws {
        let truth =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Paths.captures.appendingPathComponent("clean-close-s96.truth.json")))
            as! [String: Any]
        let expect = truth["expect"] as! [String: Any]
        #expect((expect["close"] as? [String: Any])?["initiated_by"] as? String == "client")
        let stories = Analysis.analyzeFile(Paths.captures.appendingPathComponent("clean-close-s96.pcap").path).records
            .map { Story($0) }
        let s = try #require(stories.first { $0.record.isAMQP })
        #expect(s.diagnoses.allSatisfy { $0.severity == .info }, "\(s.diagnoses.map(\.summary))")
        #expect(s.diagnoses.contains { $0.code == .captureIncomplete && $0.summary.contains("snap length") })
        #expect(s.ending.hasPrefix("Connection.Close 200 REPLY_SUCCESS from the client"), "\(s.ending)")
        #expect(s.record.keyFrames.contains { $0.frame.cut }, "cut frames are marked")
        #expect(s.record.flow?.publishes == (expect["published"] as? [Any])?.count ?? 10)
    }

    /// pika tried [::1]:5672 (refused: RST to its SYN) and connected to 127.0.0.1 a millisecond later.
    @Test func refusalThenFallbackIsInfo() throws {
        let truth =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Paths.captures.appendingPathComponent("refused-then-connected.truth.json")))
            as! [String: Any]
        let expect = truth["expect"] as! [String: Any]
        let refused = try #require((expect["refused_attempts"] as? [[String: Any]])?.first)
        let refusedPort = try #require(refused["client_port"] as? Int)
        let goodPort = try #require(((expect["connections"] as? [String: Any])?["client_ports"] as? [Int])?.first)
        let stories = Analysis.analyzeFile(Paths.captures.appendingPathComponent("refused-then-connected.pcap").path)
            .records.map { Story($0) }
        let attempt = try #require(stories.first { Int($0.record.info.client.port) == refusedPort })
        let good = try #require(stories.first { Int($0.record.info.client.port) == goodPort })
        #expect(attempt.record.fallback?.connection == good.record.info.id)
        let reset = try #require(attempt.diagnoses.first { $0.code == .reset })
        #expect(reset.severity == .info && reset.errno?.errno == 111, "\(reset.summary)")
        #expect(stories.flatMap(\.diagnoses).allSatisfy { $0.severity == .info })
    }

    /// Without the fallback the same refusal is an error: a client that could not connect at all.
    @Test func refusalAloneIsAnError() throws {
        let bytes = Array(try Data(contentsOf: Paths.captures.appendingPathComponent("refused-then-connected.pcap")))
        // Only the refused attempt's packets: the SYN and the RST (IPv6, which tcpPorts does not read).
        let out = keepPackets(bytes) { tcpPorts($0).isEmpty }
        let s = try #require(analyzeBytes("refused-alone.pcap", out).first)
        #expect(s.record.fallback == nil)
        #expect(s.diagnoses.first { $0.code == .reset }?.severity == .error)
    }

    /// pika with heartbeats off behind haproxy (timeout client/server 4 s): one story told on both legs.
    @Test func proxiedLegsArePaired() throws {
        let truth =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Paths.captures.appendingPathComponent("haproxy-idle.truth.json")))
            as! [String: Any]
        let expect = truth["expect"] as! [String: Any]
        let legs = try #require(expect["legs"] as? [[String: Any]])
        let clientPort = try #require(legs.first { $0["leg"] as? String == "client->haproxy" }?["client_port"] as? Int)
        let backPort = try #require(legs.first { $0["leg"] as? String == "haproxy->broker" }?["client_port"] as? Int)
        let listen = try #require((expect["proxy"] as? [String: Any])?["listen"] as? String)
        let timeout = try #require(
            ((expect["proxy"] as? [String: Any])?["timeouts"] as? [String: Any])?["client"] as? String)
        let stories = Analysis.analyzeFile(Paths.captures.appendingPathComponent("haproxy-idle.pcap").path).records
            .map { Story($0) }
        let front = try #require(stories.first { Int($0.record.info.client.port) == clientPort })
        let back = try #require(stories.first { Int($0.record.info.client.port) == backPort })
        #expect(front.record.proxied?.peerConnection == back.record.info.id && front.record.proxied?.leg == .clientSide)
        #expect(back.record.proxied?.peerConnection == front.record.info.id && back.record.proxied?.leg == .serverSide)
        #expect(front.record.info.server.description == listen && back.record.proxied?.proxy.description == listen)
        for s in [front, back] {
            let head = try #require(s.diagnoses.first)
            #expect(head.code == .idleTimeoutInPath && head.consequenceOf == nil, "\(head.summary)")
            // The idle time is the proxy's timeout, to the tenth of a second.
            #expect(head.summary.contains("after \(timeout.dropLast()) s idle"), "\(head.summary)")
            #expect(head.summary.contains("proxy at \(listen)"))
            #expect(!s.diagnoses.contains { $0.code == .abruptClose || $0.code == .heartbeatsDisabled })
            #expect(s.diagnoses.dropFirst().allSatisfy { $0.consequenceOf == 0 })
        }
        let json = AnalyzeReport.json([
            Analysis.analyzeFile(Paths.captures.appendingPathComponent("haproxy-idle.pcap").path)
        ])
        let document = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let connections = document["connections"] as? [[String: Any]] ?? []
        let proxied =
            connections.first { $0["id"] as? Int == front.record.info.id.rawValue }?["proxied"] as? [String: Any]
        #expect(proxied?["peer_connection"] as? Int == back.record.info.id.rawValue)
        #expect(proxied?["proxy"] as? String == listen && proxied?["leg"] as? String == "client-side")
    }

    /// With only the client's leg in the capture, the close after an idle silence is still told as an idle timeout
    /// in the path.
    @Test func oneLegAloneIsStillAnIdleTimeout() throws {
        let bytes = Array(try Data(contentsOf: Paths.captures.appendingPathComponent("haproxy-idle.pcap")))
        let s = try #require(
            analyzeBytes("haproxy-front.pcap", keepPackets(bytes) { tcpPorts($0).contains(5673) }).first)
        #expect(s.record.proxied == nil)
        let head = try #require(s.diagnoses.first)
        #expect(
            head.code == .idleTimeoutInPath && head.summary.contains("an idle timeout in the path"), "\(head.summary)")
    }

    /// Split as `editcap -c N` splits, the seed capture is told as the whole one is: the parts are found to be one
    /// capture, read in time order whatever order they are named in, and packet numbers run on across them.
    @Test(arguments: ["missed-heartbeats-fin", "missed-heartbeats-104", "flow-confirms-acks"])
    func rotatedPartsReadAsTheWhole(name: String) throws {
        let path = Paths.captures.appendingPathComponent("\(name).pcap").path
        let parts = splitEvery(Array(try Data(contentsOf: URL(fileURLWithPath: path))), 12).enumerated().map {
            Paths.temporaryFile("\(name)-part\($0.offset).pcap", $0.element)
        }
        #expect(parts.count >= 3)
        let groups = Analysis.rotationGroups(parts.reversed())
        #expect(groups == [parts], "\(groups)")
        let whole = Analysis.analyzeFile(path)
        let merged = Analysis.analyzeFiles(parts)
        #expect(merged.parts.map(\.path) == parts)
        #expect(merged.parts.reduce(0) { $0 + $1.packets } == whole.counts.packets)
        let told = { (r: CaptureResult) in
            r.records.map { Story($0).diagnoses.map { "\($0.code) \($0.summary) \($0.evidence)" } }
        }
        #expect(told(merged) == told(whole))
        // Told alone, the last part has lost the cause.
        if name == "missed-heartbeats-fin" {
            #expect(!told(Analysis.analyzeFile(parts.last!)).joined().contains { $0.hasPrefix("missed-heartbeats") })
        }
    }

    /// Captures of different incidents are not parts of one.
    @Test func unrelatedFilesStayApart() {
        let a = Paths.captures.appendingPathComponent("missed-heartbeats-104.pcap").path
        let b = Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path
        let c = Paths.captures.appendingPathComponent("refused-then-connected.pcap").path
        #expect(Analysis.rotationGroups([a, b, c]) == [[a], [b], [c]])
    }

    /// An operator restarted the broker under 40 pika clients: one incident of 40 error closes, not 40 stories told
    /// apart; the broker's log joined to every one of them.
    @Test func brokerRestartIsOneIncident() throws {
        let truth =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Paths.captures.appendingPathComponent("broker-restart.truth.json")))
            as! [String: Any]
        let expect = truth["expect"] as! [String: Any]
        let ports = Set(try #require((expect["connections"] as? [String: Any])?["client_ports"] as? [Int]))
        #expect(ports.count == 40)
        var options = ReportOptions()
        options.brokerLog = BrokerLog.parse(
            try String(
                contentsOf: Paths.captures.appendingPathComponent("broker-restart.broker.log"), encoding: .utf8))
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("broker-restart.pcap").path)
        let (stories, log) = AnalyzeReport.storiesWithLog(result, options: options)
        let incidents = IncidentFinder.incidents(of: stories)
        let incident = try #require(incidents.first)
        #expect(incidents.count == 1)
        #expect(
            incident.code == .connectionError
                && incident.summary.hasPrefix("40 connections closed by the server with 320"))
        let members = Set(
            incident.connections.compactMap { id in
                stories.first { $0.record.info.id == id }.map { Int($0.record.info.client.port) }
            })
        #expect(members == ports)
        #expect(incident.last.since(incident.first) < 1_000_000_000)
        #expect(log?.matchedConnections == 40 && (log?.offsetSamples ?? 0) == 40)
        for s in stories {
            // The reset right after the broker's close is told under it, no error: the client was told (info when the
            // client had sent its FIN first).
            #expect(s.diagnoses.first?.code == .connectionError)
            #expect(
                s.diagnoses.filter { $0.code == .reset }.allSatisfy { $0.severity < .error && $0.consequenceOf == 0 }
            )
            #expect(s.diagnoses.first?.details.contains { $0.contains("connection_forced") } == true)
        }
    }
}

/// A classic pcap file split into files of `count` packets each, as `editcap -c COUNT` splits it.
func splitEvery(_ bytes: [UInt8], _ count: Int) -> [[UInt8]] {
    var files: [[UInt8]] = []
    var current = Array(bytes[0..<24])
    var n = 0
    var at = 24
    while at + 16 <= bytes.count {
        let caplen =
            Int(bytes[at + 8]) | Int(bytes[at + 9]) << 8 | Int(bytes[at + 10]) << 16 | Int(bytes[at + 11]) << 24
        current += bytes[at..<at + 16 + caplen]
        n += 1
        at += 16 + caplen
        if n == count {
            files.append(current)
            current = Array(bytes[0..<24])
            n = 0
        }
    }
    if n > 0 { files.append(current) }
    return files
}

/// The TCP ports of an Ethernet/IPv4 frame (none for anything else).
func tcpPorts(_ frame: ArraySlice<UInt8>) -> [Int] {
    let f = Array(frame)
    guard f.count >= 34, f[12] == 0x08, f[13] == 0x00, f[23] == 6 else { return [] }
    let tcp = 14 + Int(f[14] & 0x0f) * 4
    guard f.count >= tcp + 4 else { return [] }
    return [Int(f[tcp]) << 8 | Int(f[tcp + 1]), Int(f[tcp + 2]) << 8 | Int(f[tcp + 3])]
}

/// A classic little-endian pcap file with only the packets `keep` accepts.
func keepPackets(_ bytes: [UInt8], _ keep: (ArraySlice<UInt8>) -> Bool) -> [UInt8] {
    var out = Array(bytes[0..<24])
    var at = 24
    while at + 16 <= bytes.count {
        let caplen =
            Int(bytes[at + 8]) | Int(bytes[at + 9]) << 8 | Int(bytes[at + 10]) << 16 | Int(bytes[at + 11]) << 24
        if keep(bytes[at + 16..<at + 16 + caplen]) { out += bytes[at..<at + 16 + caplen] }
        at += 16 + caplen
    }
    return out
}
