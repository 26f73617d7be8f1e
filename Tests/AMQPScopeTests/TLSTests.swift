import AMQPScopeCapture
// The TLS layer without keys: the record parser from bytes alone (split, joined mid-stream, cut by gaps, fed bad
// bytes), the ClientHello and ServerHello in clear, and the recorded AMQPS captures against their ground truth and
// tshark's decrypted view of them.
import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopePackets
@testable import AMQPScopeTLS
@testable import AMQPScopeTimeline

/// Collects the record parser's outputs as text.
private func records(_ chunks: [[UInt8]], fromStart: Bool = true, gapAfter: Int? = nil, gap: UInt64 = 0) -> [String] {
    var parser = RecordParser(fromStart: fromStart)
    var out: [String] = []
    for (i, chunk) in chunks.enumerated() {
        chunk.withUnsafeBytes { bytes in
            parser.feed(bytes) { output in
                switch output {
                case .record(let h, let body, let start): out.append("record \(h.contentType) \(body.count) @\(start)")
                case .cutRecord(let h, let start): out.append("cut \(h.contentType) \(h.length) @\(start)")
                case .malformed(let reason, let start, _): out.append("malformed @\(start): \(reason)")
                case .synchronized(let start, let skipped): out.append("sync @\(start) skipped \(skipped)")
                }
            }
        }
        if i == gapAfter {
            parser.gap(gap) { output in
                if case .cutRecord(let h, let start) = output {
                    out.append("cut \(h.contentType) \(h.length) @\(start)")
                }
            }
        }
    }
    return out
}

private func record(_ type: UInt8, _ length: Int, fill: UInt8 = 0xAB) -> [UInt8] {
    [type, 3, 3, UInt8(length >> 8), UInt8(length & 0xff)] + [UInt8](repeating: fill, count: length)
}

private func truth(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: Paths.captures.appendingPathComponent("tls/\(name).truth.json"))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

@Suite("TLS records and handshake") struct TLSRecordTests {
    let stream = record(22, 40) + record(20, 1) + record(23, 25) + record(23, 300) + record(21, 26)

    @Test func wholeSplitAndByteAtATimeAgree() {
        let whole = records([stream])
        #expect(
            whole == [
                "record 22 40 @0", "record 20 1 @45", "record 23 25 @51", "record 23 300 @81", "record 21 26 @386",
            ])
        #expect(records(stream.map { [$0] }) == whole)
        #expect(records([Array(stream[..<3]), Array(stream[3..<100]), Array(stream[100...])]) == whole)
    }

    @Test func joinedMidStreamFindsTheRecordBoundary() {
        // Start 7 bytes into the first record's body: the hunt passes over the rest of it.
        let out = records([Array(stream[12...])], fromStart: false)
        #expect(out.first == "sync @33 skipped 33")
        #expect(
            Array(out.dropFirst()) == ["record 20 1 @33", "record 23 25 @39", "record 23 300 @69", "record 21 26 @374"])
    }

    @Test func aGapInsideARecordCutsOnlyThatRecord() {
        // 100 bytes of the 300-byte record are lost: it is reported cut, and the next record is read.
        let cutAt = 81 + 5 + 50
        let out = records(
            [Array(stream[..<cutAt]), Array(stream[(cutAt + 100)...])], gapAfter: 0, gap: 100)
        #expect(
            out == ["record 22 40 @0", "record 20 1 @45", "record 23 25 @51", "cut 23 300 @81", "record 21 26 @386"])
    }

    @Test func aGapEndingWithARecordKeepsTheBoundary() {
        // The whole 300-byte record's body after its first 50 bytes is lost: the next record is read at once.
        let cutAt = 81 + 5 + 50
        let out = records([Array(stream[..<cutAt]), Array(stream[386...])], gapAfter: 0, gap: 250)
        #expect(
            out == ["record 22 40 @0", "record 20 1 @45", "record 23 25 @51", "cut 23 300 @81", "record 21 26 @386"])
    }

    /// TLS 1.3 without keys: a client that rejects the server's certificate sends an alert as its first protected
    /// record. That is reported as an (inferred) alert, and the handshake is not said to be done.
    @Test func aClientAlertInsteadOfFinishedIsNotAHandshake() throws {
        func vector16(_ b: [UInt8]) -> [UInt8] { [UInt8(b.count >> 8), UInt8(b.count & 0xff)] + b }
        func handshake(_ type: UInt8, _ body: [UInt8]) -> [UInt8] {
            let message = [type, 0, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
            return [22, 3, 1] + vector16(message)
        }
        let clientHello = handshake(
            1, [3, 3] + [UInt8](repeating: 7, count: 32) + [0] + vector16([0x13, 0x01]) + [1, 0] + vector16([]))
        let serverHello = handshake(
            2, [3, 3] + [UInt8](repeating: 9, count: 32) + [0] + [0x13, 0x01, 0] + vector16([0, 43, 0, 2, 3, 4]))
        struct Events: TLSSink {
            var kinds: [String] = []
            mutating func consume(_ event: TLSEvent) { kinds.append("\(event.kind)") }
        }
        var session = TLSSession(fromStart: true)
        var sink = Events()
        func feed(_ bytes: [UInt8], _ d: Direction) {
            bytes.withUnsafeBytes {
                session.data($0, direction: d, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
            }
        }
        feed(clientHello, .clientToServer)
        feed(serverHello + record(23, 80), .serverToClient)
        feed(record(20, 1) + record(23, 19), .clientToServer)
        #expect(session.summary.handshakeDoneTime == nil)
        #expect(session.summary.alerts.count == 1 && session.summary.alerts.first?.inferred == true)
        // A record long enough for a Finished ends the handshake.
        feed(record(23, 53), .clientToServer)
        #expect(session.summary.handshakeDoneTime != nil)
    }

    @Test func badBytesAreReportedAndSkipped() {
        let garbage: [UInt8] = [0x99, 0x01, 0x02]
        let out = records([record(22, 10) + garbage + stream])
        #expect(out.first == "record 22 10 @0")
        #expect(out.contains { $0.hasPrefix("malformed @15: unknown TLS content type 153") })
        #expect(out.contains("record 23 300 @99"))
        #expect(out.last == "record 21 26 @404")
    }

    @Test func hostileLengthsNeverSizeABuffer() {
        var header: [UInt8] = [23, 3, 3, 0xFF, 0xFF]
        header += [UInt8](repeating: 0, count: 64)
        let out = records([header])
        #expect(out.first?.contains("outside 1-18432") == true)
    }

    @Test func clientHelloAndServerHelloInClear() throws {
        func vector16(_ b: [UInt8]) -> [UInt8] { [UInt8(b.count >> 8), UInt8(b.count & 0xff)] + b }
        func ext(_ type: UInt16, _ data: [UInt8]) -> [UInt8] {
            [UInt8(type >> 8), UInt8(type & 0xff)] + vector16(data)
        }
        let name = Array("broker.example".utf8)
        let sni = ext(0, vector16([0] + vector16(name)))
        let alpn = ext(16, vector16([4] + Array("amqp".utf8)))
        let versions = ext(43, [4, 0x03, 0x04, 0x03, 0x03])
        let hello: [UInt8] =
            [0x03, 0x03] + [UInt8](repeating: 7, count: 32) + [0] + vector16([0x13, 0x01, 0x13, 0x02]) + [1, 0]
            + vector16(sni + alpn + versions)
        let client = try #require(hello.withUnsafeBytes { HandshakeParsing.clientHello($0) })
        #expect(client.serverName == "broker.example" && client.alpn == ["amqp"])
        #expect(client.cipherSuites == [0x1301, 0x1302] && client.supportedVersions == [0x0304, 0x0303])
        let serverBody: [UInt8] =
            [0x03, 0x03] + [UInt8](repeating: 9, count: 32) + [0] + [0x13, 0x02, 0] + vector16(ext(43, [0x03, 0x04]))
        let server = try #require(serverBody.withUnsafeBytes { HandshakeParsing.serverHello($0) })
        #expect(server.version == 0x0304 && server.cipherSuite == 0x1302 && !server.isHelloRetryRequest)
        // Cut anywhere, neither parser traps: it answers nil or what it could read.
        for n in 0..<hello.count { _ = Array(hello[..<n]).withUnsafeBytes { HandshakeParsing.clientHello($0) } }
        for n in 0..<serverBody.count {
            _ = Array(serverBody[..<n]).withUnsafeBytes { HandshakeParsing.serverHello($0) }
        }
    }

    @Test func heartbeatRecordLengthsPerCipher() {
        func length(_ version: UInt16, _ suite: UInt16) -> Int? {
            var s = TLSSummary()
            s.version = version
            s.cipherSuite = suite
            return s.heartbeatRecordLength
        }
        #expect(length(0x0304, 0x1301) == 25)  // 8 + 1 + 16
        #expect(length(0x0303, 0xC02F) == 32)  // 8 (explicit nonce) + 8 + 16
        #expect(length(0x0303, 0xCCA8) == 24)  // 8 + 16
        #expect(length(0x0303, 0xC013) == nil)  // CBC: padded
    }
}

@Suite("AMQPS captures without keys") struct TLSCaptureTests {
    static let names = [
        "tls13-missed-heartbeats", "tls12-missed-heartbeats", "tls12-chacha-healthy", "tls13-healthy",
        "tls13-connection-forced",
    ]

    /// Version, cipher and SNI as the client's ssl module reported them; records and heartbeat-sized records per
    /// direction as tshark counted them after decrypting with the key log.
    @Test(arguments: names) func handshakeAndRecordsMatchTheTruth(name: String) throws {
        let t = try truth(name)
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("tls/\(name).pcap").path)
        #expect(result.error == nil)
        #expect(result.records.count == 1)
        let r = try #require(result.records.first)
        #expect(r.verdict == .encrypted(onAMQPPort: true))
        let tls = try #require(r.tls)
        let wantVersion = try #require((t["tls"] as? [String: Any])?["version"] as? String)
        #expect("TLSv" + (tls.versionName ?? "?") == wantVersion)
        #expect(tls.cipherName == (t["tls"] as? [String: Any])?["cipher_iana"] as? String)
        #expect(tls.serverName == (t["tls"] as? [String: Any])?["sni"] as? String)
        #expect(!tls.decrypted && tls.malformedRecords == 0)
        let observedConnection = try #require(
            ((t["capture_observed"] as? [String: Any])?["connections"] as? [[String: Any]])?.first)
        let observed = try #require(observedConnection["tls"] as? [String: Any])
        let heartbeatLength = try #require(tls.heartbeatRecordLength)
        for (direction, who) in [(Direction.clientToServer, "client"), (.serverToClient, "broker")] {
            let types = try #require((observed["records"] as? [String: Any])?[who] as? [String: [String: Any]])
            let all = types.values.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
            #expect(tls.records[direction] == all, "\(name) \(who) records")
            let data = types["application_data"]
            let lengths = data?["lengths"] as? [String: Int] ?? [:]
            #expect(tls.applicationRecords[direction] == data?["count"] as? Int ?? 0, "\(name) \(who) application data")
            // Heartbeat-sized records are every one of that length but the client's first (its protocol header)...
            let sized = (lengths["\(heartbeatLength)"] ?? 0) - (direction == .clientToServer ? 1 : 0)
            #expect(tls.inferredHeartbeats?[direction] ?? 0 == sized, "\(name) \(who) heartbeat-sized records")
            // ... and they are exactly the heartbeat frames tshark decoded with the key log.
            let frames = (observedConnection["amqp_frames"] as? [String: [String: Int]])?[who] ?? [:]
            #expect(tls.inferredHeartbeats?[direction] ?? 0 == frames["8"] ?? 0, "\(name) \(who) heartbeats")
        }
    }

    /// The seed incident over TLS, without keys: the client's silence past the inferred heartbeat, the broker's
    /// reset, the errno by the TCP state, and what pika's TLS library raised instead.
    @Test(arguments: ["tls13-missed-heartbeats", "tls12-missed-heartbeats"]) func seedIncidentWithoutKeys(name: String)
        throws
    {
        let t = try truth(name)
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("tls/\(name).pcap").path)
        let story = Story(try #require(result.records.first))
        let negotiated = try #require(story.negotiated)
        #expect(negotiated.inferred && negotiated.heartbeat == 2)
        let codes = story.diagnoses.map(\.code)
        #expect(codes.first == .missedHeartbeats, "\(codes)")
        let silent = try #require(story.diagnoses.first)
        #expect(silent.side == .client && silent.severity == .error)
        #expect(silent.summary.contains("inferred"))
        let reset = try #require(story.diagnoses.first { $0.code == .reset && $0.severity == .error })
        #expect(reset.side == .client && reset.errno?.errno == 104)
        let exception = try #require(((t["client"] as? [String: Any])?["exceptions"] as? [[String: Any]])?.first)
        let message = try #require(exception["message"] as? String)
        #expect(message.contains("SSLEOFError(8"))
        #expect(reset.details.contains { $0.contains("SSLEOFError(8") })
        #expect(reset.details.contains { $0.contains("alert") && $0.contains("before the RST") })
        let text = AnalyzeReport.text([result])
        #expect(text.contains(", TLS\n") && text.contains("encrypted: heartbeats inferred from record sizes"))
    }
}

@Suite("AMQPS captures with a key log") struct TLSDecryptionTests {
    static func keyLog(_ name: String) throws -> String {
        try String(contentsOf: Paths.captures.appendingPathComponent("tls/\(name).keylog"), encoding: .utf8)
    }

    static func analyze(_ name: String, keyLogText: String) -> CaptureResult {
        var configuration = EngineConfiguration()
        configuration.keyLog = KeyLog(text: keyLogText)
        return Analysis.analyzeFile(
            Paths.captures.appendingPathComponent("tls/\(name).pcap").path, configuration: configuration)
    }

    /// Decrypted, the seed incident over TLS is told as in clear: pika by name, the negotiated 2 s heartbeat, the
    /// broker's close_notify and reset, and ECONNRESET by the TCP state.
    @Test(arguments: ["tls13-missed-heartbeats", "tls12-missed-heartbeats"]) func seedIncidentDecrypted(name: String)
        throws
    {
        let result = Self.analyze(name, keyLogText: try Self.keyLog(name))
        let r = try #require(result.records.first)
        #expect(r.tls?.decrypted == true && r.tls?.decryptError == nil)
        let story = Story(r)
        #expect(story.negotiated?.heartbeat == 2 && story.negotiated?.inferred == false)
        #expect(story.client?.product == "Pika Python Client Library")
        #expect(story.diagnoses.first?.code == .missedHeartbeats)
        let reset = try #require(story.diagnoses.first { $0.code == .reset && $0.severity == .error })
        #expect(reset.errno?.errno == 104)
        #expect(reset.details.contains { $0.contains("close_notify alert") })
    }

    /// A key log of other sessions: a note on the connection, and the story without keys.
    @Test func keyLogOfAnotherSession() throws {
        let result = Self.analyze("tls12-missed-heartbeats", keyLogText: try Self.keyLog("tls13-healthy"))
        let r = try #require(result.records.first)
        #expect(r.tls?.decrypted == false)
        #expect(r.tls?.decryptError?.contains("no CLIENT_RANDOM secret") == true)
        #expect(r.verdict == .encrypted(onAMQPPort: true))
        #expect(Story(r).diagnoses.first?.code == .missedHeartbeats)
    }

    /// The right client random with a wrong secret: the first record fails its tag, which is said with the record,
    /// and the connection falls back to the story without keys.
    @Test func wrongSecretFailsTheTagAndFallsBack() throws {
        let good = try Self.keyLog("tls13-missed-heartbeats")
        let bad = good.split(separator: "\n").map { line -> String in
            let fields = line.split(separator: " ")
            guard fields.count == 3 else { return String(line) }
            return "\(fields[0]) \(fields[1]) " + String(repeating: "ab", count: fields[2].count / 2)
        }.joined(separator: "\n")
        let result = Self.analyze("tls13-missed-heartbeats", keyLogText: bad)
        let r = try #require(result.records.first)
        #expect(r.tls?.decryptError?.hasPrefix("could not decrypt from record") == true, "\(r.tls?.decryptError ?? "")")
        #expect(r.tls?.decrypted == false && r.verdict == .encrypted(onAMQPPort: true))
        #expect(r.tls?.inferredHeartbeats?[.serverToClient] == 5)
    }

    @Test func keyLogParsing() {
        let random = String(repeating: "0a", count: 32)
        let log = KeyLog(text: "# comment\nCLIENT_RANDOM \(random) \(String(repeating: "ff", count: 48))\nbad line\n\n")
        #expect(log.handshakes == 1 && log.skippedLines == 1)
        #expect(log.secret("CLIENT_RANDOM", clientRandom: [UInt8](repeating: 10, count: 32))?.count == 48)
    }

    /// RFC 8448 section 3 (simple 1-RTT handshake): the server's handshake traffic key and IV from its secret.
    @Test func hkdfExpandLabelMatchesRFC8448() throws {
        let secret = try #require(KeyLog.hex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"))
        let key = KeySchedule.expandLabel(.sha256, secret: secret, label: "key", length: 16)
        let iv = KeySchedule.expandLabel(.sha256, secret: secret, label: "iv", length: 12)
        #expect(key == KeyLog.hex("3fce516009c21727d0f2e4e86ee403bc"))
        #expect(iv == KeyLog.hex("5d313eb2671276ee13000b30"))
    }
}

@Suite("AMQPS live: a key log that grows") struct TLSGrowingKeyLogTests {
    /// A live capture sees the handshake before the client has appended its secrets. Protected records wait
    /// (bounded) and are decrypted once the re-read key log has them: the frames equal those of a complete key log.
    @Test(arguments: ["tls13-missed-heartbeats", "tls12-missed-heartbeats"]) func secretsArriveAfterTheHandshake(
        name: String
    ) throws {
        let path = Paths.captures.appendingPathComponent("tls/\(name).pcap").path
        let text = try TLSDecryptionTests.keyLog(name)
        var configuration = EngineConfiguration()
        configuration.recordFrames = true
        configuration.keyLogMayGrow = true
        configuration.keyLog = KeyLog()
        let source = try PcapSource.openFile(path)
        var engine = Engine(linkType: source.linkType, configuration: configuration)
        var packets = 0
        while case .packet(let header) = try source.next() {
            packets += 1
            // The secrets appear a few packets after the ServerHello (packet 6 in these captures).
            if packets == 10 { engine.update(keyLog: KeyLog(text: text)) }
            engine.process(header, source.packetBytes)
        }
        engine.finish()
        let live = try #require(engine.takeEnded().first)
        #expect(live.tls?.decrypted == true && live.tls?.decryptError == nil)
        var complete = EngineConfiguration()
        complete.recordFrames = true
        complete.keyLog = KeyLog(text: text)
        let whole = try #require(Analysis.analyzeFile(path, configuration: complete).records.first)
        #expect(live.frames.map(\.frame) == whole.frames.map(\.frame))
        #expect(live.frames.count > 10)
    }

    /// Secrets that never come: after the bound the connection is told without keys, and says why.
    @Test func secretsThatNeverComeFallBack() throws {
        var configuration = EngineConfiguration()
        configuration.keyLogMayGrow = true
        configuration.keyLog = KeyLog()
        let result = Analysis.analyzeFile(
            Paths.captures.appendingPathComponent("tls/tls13-healthy.pcap").path, configuration: configuration)
        let r = try #require(result.records.first)
        #expect(r.tls?.decrypted == false)
        #expect(r.tls?.inferredHeartbeats?[.serverToClient] == 7)
    }
}

@Suite("AMQPS decrypted across a capture gap") struct TLSGapTests {
    /// A client packet carrying one whole application record is missing from the capture: the record's sequence
    /// number is still used up, so the records after it decrypt, and the codec is told of the lost bytes.
    @Test func decryptionContinuesAfterALostRecord() throws {
        let source = Paths.captures.appendingPathComponent("tls/tls13-healthy.pcap")
        let bytes = [UInt8](try Data(contentsOf: source))
        // Classic pcap: a 24-byte file header, then records of a 16-byte header and the packet. Drop packet 26,
        // the client's second basic.publish (tshark with the key log shows it alone in its record).
        var out = Array(bytes[..<24])
        var at = 24
        var number = 0
        while at + 16 <= bytes.count {
            let length =
                Int(bytes[at + 8]) | Int(bytes[at + 9]) << 8 | Int(bytes[at + 10]) << 16 | Int(bytes[at + 11]) << 24
            number += 1
            if number != 26 { out += bytes[at..<at + 16 + length] }
            at += 16 + length
        }
        let path = Paths.temporaryFile("tls13-healthy-without-26.pcap", out)
        var configuration = EngineConfiguration()
        configuration.recordFrames = true
        configuration.keyLog = KeyLog(text: try TLSDecryptionTests.keyLog("tls13-healthy"))
        let r = try #require(Analysis.analyzeFile(path, configuration: configuration).records.first)
        #expect(r.tls?.decrypted == true)
        #expect(r.tls?.decryptError == nil, "\(r.tls?.decryptError ?? "")")
        #expect(r.counters.clientToServer.gaps == 1)
        // The client's acks after the lost record are decoded (packets 38, 39 and 41 in the full capture, one
        // less here).
        let acks = r.frames.filter { f in
            if case .method(.basicAck) = f.frame.content { return f.direction == .clientToServer }
            return false
        }
        #expect(acks.count == 3)
    }
}

/// The key log is read as bytes; it must read every text as the Character-level reading did (kept here as the
/// reference): the same secrets and the same count of skipped lines.
@Suite("Key log reading") struct KeyLogReadingTests {
    /// The reading before it went to bytes.
    static func reference(_ text: String) -> (secrets: [[UInt8]: [String: [UInt8]]], skipped: Int) {
        var secrets: [[UInt8]: [String: [UInt8]]] = [:]
        var skipped = 0
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == 3, let random = KeyLog.hex(fields[1]), random.count == 32,
                let secret = KeyLog.hex(fields[2]), !secret.isEmpty
            else {
                skipped += 1
                continue
            }
            secrets[random, default: [:]][String(fields[0])] = secret
        }
        return (secrets, skipped)
    }

    static let random = String(repeating: "0a", count: 32)
    static let pieces = [
        "CLIENT_RANDOM \(random) \(String(repeating: "ff", count: 48))", "SERVER_TRAFFIC_SECRET_0 \(random) ABCDEF01",
        "  \tCLIENT_HANDSHAKE_TRAFFIC_SECRET  \(random)   0011  ", "# comment", "   # indented comment", "", "  ",
        "bad line", "LABEL \(random)", "LABEL \(random) abc", "LABEL \(random) 00 extra", "LABEL 0a0b 00",
        "LABEL\t\(random) 00", "ÉTIQUETTE \(random) 00", "LABEL \(random) zz", "\u{FEFF}LABEL \(random) 01",
    ]
    static let separators = ["\n", "\r\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}", "\n\n"]

    @Test func everyPieceWithEverySeparator() {
        for piece in Self.pieces {
            for separator in Self.separators {
                for text in [piece, piece + separator, separator + piece + separator + piece] {
                    let log = KeyLog(text: text)
                    let expected = Self.reference(text)
                    #expect(
                        log.secrets == expected.secrets && log.skippedLines == expected.skipped,
                        "\(text.debugDescription)")
                }
            }
        }
    }

    @Test(arguments: 1...20) func randomMixes(seed: Int) {
        var generator = SeededGenerator(seed: UInt64(seed))
        var text = ""
        for _ in 0..<(Int(generator.next() % 40)) {
            text += Self.pieces[Int(generator.next() % UInt64(Self.pieces.count))]
            text += Self.separators[Int(generator.next() % UInt64(Self.separators.count))]
        }
        let log = KeyLog(text: text)
        let expected = Self.reference(text)
        #expect(log.secrets == expected.secrets && log.skippedLines == expected.skipped, "\(text.debugDescription)")
    }
}
