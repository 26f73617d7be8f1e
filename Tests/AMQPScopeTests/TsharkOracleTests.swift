// tshark, decoding the same captures, is the oracle: connection table, stream bytes and AMQP frames must agree.
import Foundation
import Testing

@testable import AMQPScope

private let tsharkReady = Tools.tshark != nil || Tools.requireTshark

private func analyze(_ path: String, frames: Bool = false, byteAtATime: Bool = false, keyLog: KeyLog? = nil)
    -> CaptureResult
{
    var configuration = EngineConfiguration()
    configuration.keyLog = keyLog
    configuration.recordFrames = frames
    configuration.byteAtATime = byteAtATime
    return Analysis.analyzeFile(path, configuration: configuration)
}

private func tshark(_ arguments: [String]) throws -> String {
    let tool = try #require(Tools.tshark, "tshark is not installed (scripts/setup installs it)")
    let result = try Tools.run(tool, arguments)
    return result.stdout
}

private func record(_ records: [ConnectionRecord], _ a: String, _ b: String) -> (ConnectionRecord, aIsClient: Bool)? {
    // tshark's conversations write an IPv6 endpoint without brackets ("::1:5672"), its follow output and amqpscope
    // with them, as RFC 3986 does ("[::1]:5672").
    func plain(_ endpoint: CustomStringConvertible) -> String {
        endpoint.description.replacingOccurrences(of: "[", with: "").replacingOccurrences(of: "]", with: "")
    }
    let (a, b) = (plain(a), plain(b))
    for r in records {
        if plain(r.info.client) == a && plain(r.info.server) == b { return (r, true) }
        if plain(r.info.client) == b && plain(r.info.server) == a { return (r, false) }
    }
    return nil
}

@Suite("tshark oracle", .enabled(if: tsharkReady, "tshark is not installed"))
struct TsharkOracleTests {
    /// `tshark -q -z conv,tcp`: the same connections, the same packet counts and bytes each way.
    @Test(arguments: Paths.allCaptures)
    func connectionTableMatchesConv(path: String) throws {
        let ours = analyze(path)
        let text = try tshark(["-r", path, "-q", "-z", "conv,tcp"])
        var conversations = 0
        for line in text.split(separator: "\n") where line.contains("<->") {
            let t = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            // A <-> B  framesBtoA bytesBtoA unit  framesAtoB bytesAtoB unit  total...
            guard t.count >= 9 else { continue }
            conversations += 1
            let (a, b) = (t[0], t[2])
            let (r, aIsClient) = try #require(
                record(ours.records, a, b), "tshark conversation \(a) <-> \(b) missing in \(path)")
            let bToA = (frames: Int(t[3])!, bytes: Double(t[4])!, unit: t[5])
            let aToB = (frames: Int(t[6])!, bytes: Double(t[7])!, unit: t[8])
            let clientToServer = aIsClient ? aToB : bToA
            let serverToClient = aIsClient ? bToA : aToB
            for (theirs, mine) in [
                (clientToServer, r.counters.clientToServer), (serverToClient, r.counters.serverToClient),
            ] {
                #expect(mine.packets == theirs.frames, "\(path) \(a)<->\(b) packets")
                // tshark prints "N bytes" exactly, or rounds to kB/MB (SI units) past 10 000.
                let scale: Double = theirs.unit == "bytes" ? 1 : theirs.unit == "kB" ? 1000 : 1_000_000
                let tolerance = theirs.unit == "bytes" ? 0 : scale
                #expect(abs(Double(mine.wireBytes) - theirs.bytes * scale) <= tolerance, "\(path) \(a)<->\(b) bytes")
            }
        }
        #expect(conversations > 0)
        #expect(
            conversations == ours.records.count,
            "\(path): tshark lists \(conversations) conversations, amqpscope \(ours.records.count)")
    }

    /// The exact byte counts behind the table, per stream and direction, from tshark's per-packet fields.
    @Test(arguments: Paths.allCaptures)
    func exactBytesPerDirection(path: String) throws {
        let ours = analyze(path)
        let text = try tshark([
            "-r", path, "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "frame.len",
            "-Y", "tcp",
        ])
        var totals: [String: (packets: Int, bytes: Int)] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "\t").map(String.init)
            guard f.count == 4 else { continue }
            let key = "\(f[0]) \(f[1])>\(f[2])"
            totals[key, default: (0, 0)].packets += 1
            totals[key, default: (0, 0)].bytes += Int(f[3])!
        }
        let ourTotal = ours.records.reduce(0) {
            $0 + $1.counters.clientToServer.wireBytes + $1.counters.serverToClient.wireBytes
        }
        #expect(ourTotal == totals.values.reduce(0) { $0 + $1.bytes })
        for r in ours.records {
            let matches = totals.filter { $0.key.hasSuffix(" \(r.info.client.port)>\(r.info.server.port)") }
            #expect(matches.count == 1, "\(path): connection \(r.info.client) -> \(r.info.server)")
            if let theirs = matches.first?.value {
                #expect(
                    r.counters.clientToServer.packets == theirs.packets
                        && r.counters.clientToServer.wireBytes == theirs.bytes)
            }
        }
    }

    /// `tshark -z follow,tcp,raw,N`: the reassembled byte stream of every direction has the same length.
    @Test(arguments: Paths.allCaptures)
    func streamBytesMatchFollow(path: String) throws {
        let ours = analyze(path)
        let streams = Set(
            try tshark(["-r", path, "-T", "fields", "-e", "tcp.stream", "-Y", "tcp"]).split(separator: "\n").compactMap
            { Int($0) })
        #expect(streams.count == ours.records.count)
        var arguments = ["-r", path, "-q"]
        for s in streams.sorted() { arguments += ["-z", "follow,tcp,raw,\(s)"] }
        let text = try tshark(arguments)
        // Each block: "Node 0: addr:port", "Node 1: addr:port", then hex lines (node 1's indented with a tab).
        var blocksCompared = 0
        for block in text.components(separatedBy: "===================================================================")
            .dropFirst()
        {
            let lines = block.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            guard let node0 = lines.first(where: { $0.hasPrefix("Node 0: ") })?.dropFirst(8),
                let node1 = lines.first(where: { $0.hasPrefix("Node 1: ") })?.dropFirst(8)
            else { continue }
            var bytes0 = 0
            var bytes1 = 0
            var pastHeader = false
            for line in lines {
                if line.hasPrefix("Node 1: ") {
                    pastHeader = true
                    continue
                }
                guard pastHeader, !line.isEmpty else { continue }
                if line.hasPrefix("\t") { bytes1 += (line.count - 1) / 2 } else { bytes0 += line.count / 2 }
            }
            let (r, node0IsClient) = try #require(
                record(ours.records, String(node0), String(node1)), "\(path): stream \(node0)")
            let clientBytes = node0IsClient ? bytes0 : bytes1
            let serverBytes = node0IsClient ? bytes1 : bytes0
            #expect(
                r.counters.clientToServer.streamBytes == UInt64(clientBytes),
                "\(path) \(node0): client->server stream bytes")
            #expect(
                r.counters.serverToClient.streamBytes == UInt64(serverBytes),
                "\(path) \(node0): server->client stream bytes")
            blocksCompared += 1
        }
        #expect(blocksCompared == streams.count, "\(path): compared \(blocksCompared) of \(streams.count) streams")
    }

    /// Known tshark errors, each with its reason: (capture file name, packet number).
    static let knownTsharkErrors: [String: Set<Int>] = [:]

    /// The AMQP frames: (packet, sender port, type, channel, class, method) equal tshark's, and heartbeat counts.
    @Test(arguments: Paths.allCaptures)
    func framesMatchTshark(path: String) throws {
        // A capture cut by its snap length is checked against its uncut twin (below).
        if FileManager.default.fileExists(atPath: Self.twin(of: path)) { return }
        let name = URL(fileURLWithPath: path).lastPathComponent
        // The haproxy capture's client leg runs to the proxy's port, which tshark does not know for AMQP.
        try compareFrames(
            path: path, keyLog: nil, tsharkOptions: name.hasPrefix("haproxy") ? ["-d", "tcp.port==5673,amqp"] : [])
    }

    /// A capture cut by `tcpdump -s 96` against tshark on its uncut twin (recorded at the same time): amqpscope
    /// decodes only frames that were really there, every frame tshark reads in the cut file, and every frame that
    /// starts a segment (whose header the snap length kept), though most of its bytes are missing.
    @Test(arguments: Paths.recordedCaptures.filter { FileManager.default.fileExists(atPath: twin(of: $0)) })
    func cutFramesAreTheUncutTwinsFrames(path: String) throws {
        let frames = { (file: String) throws -> [String] in
            try tshark([
                "-r", file, "-Y", "amqp", "-T", "fields", "-e", "frame.number", "-e", "tcp.srcport", "-e", "amqp.type",
                "-e", "amqp.channel", "-e", "amqp.method.class", "-e", "amqp.method.method",
                "-E", "occurrence=a", "-E", "aggregator=,",
            ]).split(separator: "\n").flatMap { line -> [String] in
                let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                guard f.count == 6, !f[2].isEmpty else { return [] }
                var classes = f[4].split(separator: ",").map(String.init)
                var methods = f[5].split(separator: ",").map(String.init)
                let channels = f[3].split(separator: ",").map(String.init)
                return f[2].split(separator: ",").enumerated().map { i, type in
                    let cm = type == "1" && !classes.isEmpty ? "\(classes.removeFirst()).\(methods.removeFirst())" : "-"
                    return "\(f[0]) \(f[1]) t\(type) ch\(i < channels.count ? channels[i] : "?") \(cm)"
                }
            }
        }
        let full = try frames(Self.twin(of: path))
        let cutByTshark = try frames(path)
        let ours = analyze(path, frames: true)
        let mine = ours.records.filter(\.isAMQP).flatMap { r in
            r.frames.map { f in
                let port = f.direction == .clientToServer ? r.info.client.port : r.info.server.port
                var cm = "-"
                if case .method(let m) = f.frame.content { cm = "\(m.classID).\(m.methodID)" }
                return "\(f.packetNumber) \(port) t\(f.frame.type) ch\(f.frame.channel) \(cm)"
            }
        }
        #expect(mine.filter { !full.contains($0) }.isEmpty, "frames the uncut capture does not have")
        #expect(cutByTshark.filter { !mine.contains($0) }.isEmpty, "frames tshark reads in the cut file")
        // The first frame of every packet in the uncut twin: its header is within the snap length.
        var firsts: [String: String] = [:]
        for f in full where firsts[String(f.split(separator: " ")[0])] == nil {
            firsts[String(f.split(separator: " ")[0])] = f
        }
        let missing = firsts.values.filter { !mine.contains($0) }.sorted()
        #expect(missing.isEmpty, "segment-leading frames not decoded: \(missing.prefix(10))")
        #expect(firsts.count > 50 && mine.count >= firsts.count, "\(firsts.count) segments, \(mine.count) frames")
        #expect(ours.records.allSatisfy { $0.problems.isEmpty }, "no protocol problem: a cut is the capture's fault")
    }

    static func twin(of path: String) -> String { String(path.dropLast(".pcap".count)) + ".full.pcap" }

    /// The AMQPS captures decrypted with their key logs: the same frames as tshark decrypting with the same log.
    @Test(arguments: Paths.tlsCaptures)
    func decryptedFramesMatchTshark(path: String) throws {
        let keylog = String(path.dropLast(".pcap".count)) + ".keylog"
        let keyLog = KeyLog(text: try String(contentsOfFile: keylog, encoding: .utf8))
        try compareFrames(
            path: path, keyLog: keyLog, tsharkOptions: ["-o", "tls.keylog_file:\(keylog)", "-d", "tcp.port==5671,tls"])
        // Decrypting changes nothing when the codec is fed one byte at a time.
        let whole = analyze(path, frames: true, keyLog: keyLog)
        let drip = analyze(path, frames: true, byteAtATime: true, keyLog: keyLog)
        #expect(whole.records.map(\.frames) == drip.records.map(\.frames))
        #expect(whole.records.allSatisfy { $0.tls?.decrypted == true && $0.verdict == .amqp(.amqp091) })
    }

    func compareFrames(path: String, keyLog: KeyLog?, tsharkOptions: [String] = []) throws {
        let ours = analyze(path, frames: true, keyLog: keyLog)
        let text = try tshark(
            tsharkOptions + [
                "-r", path, "-Y", "amqp", "-T", "fields", "-e", "frame.number", "-e", "tcp.srcport",
                "-e", "amqp.type", "-e", "amqp.channel", "-e", "amqp.method.class", "-e", "amqp.method.method",
                "-E", "occurrence=a", "-E", "aggregator=,",
            ])
        var theirs: [String] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 6, !f[2].isEmpty else { continue }  // a protocol header has no frame type
            let types = f[2].split(separator: ",").map(String.init)
            let channels = f[3].split(separator: ",").map(String.init)
            var classes = f[4].split(separator: ",").map(String.init)
            var methods = f[5].split(separator: ",").map(String.init)
            for (i, type) in types.enumerated() {
                var cm = "-"
                if type == "1" { cm = classes.isEmpty ? "?" : "\(classes.removeFirst()).\(methods.removeFirst())" }
                theirs.append("\(f[0]) \(f[1]) t\(type) ch\(i < channels.count ? channels[i] : "?") \(cm)")
            }
        }
        var mine: [String] = []
        for r in ours.records where r.isAMQP {
            for f in r.frames {
                let port = f.direction == .clientToServer ? r.info.client.port : r.info.server.port
                var cm = "-"
                if case .method(let m) = f.frame.content { cm = "\(m.classID).\(m.methodID)" }
                mine.append("\(f.packetNumber) \(port) t\(f.frame.type) ch\(f.frame.channel) \(cm)")
            }
        }
        let name = URL(fileURLWithPath: path).lastPathComponent
        // Not vacuous: every capture but the Stream-protocol one carries AMQP frames.
        #expect(
            theirs.isEmpty == name.hasPrefix("rabbitmq-stream-protocol"), "\(name): tshark found \(theirs.count) frames"
        )
        let known = Self.knownTsharkErrors[name] ?? []
        let onlyTheirs = theirs.filter { !mine.contains($0) && !known.contains(Int($0.split(separator: " ")[0])!) }
        let onlyMine = mine.filter { !theirs.contains($0) && !known.contains(Int($0.split(separator: " ")[0])!) }
        #expect(onlyTheirs.isEmpty, "\(name): tshark decodes frames amqpscope does not: \(onlyTheirs.prefix(10))")
        #expect(onlyMine.isEmpty, "\(name): amqpscope decodes frames tshark does not: \(onlyMine.prefix(10))")
        #expect(
            theirs.count == mine.count || !known.isEmpty,
            "\(name): \(theirs.count) frames in tshark, \(mine.count) in amqpscope")
        for d in Direction.allCases {
            let ourBeats = ours.records.reduce(0) { $0 + $1.frameCounts[d].heartbeat }
            let theirBeats = theirs.filter { line in
                let p = line.split(separator: " ")
                guard p[2] == "t8", let port = UInt16(p[1]) else { return false }
                return ours.records.contains { r in
                    (d == .clientToServer ? r.info.client.port : r.info.server.port) == port
                }
            }.count
            #expect(ourBeats == theirBeats, "\(name): heartbeats \(d)")
        }
    }
}
