// The fuzz targets' bodies, as plain functions: libFuzzer drives them through the executables in Fuzz/ (built only
// with AMQPSCOPE_FUZZ=1), and the test suite replays the committed seeds and every regression input through them.
// Each checks the invariants its layer promises with preconditions: a failed one is a crash the fuzzer reports.
import AMQPScope
import AMQPScopeAMQP10
import AMQPScopeBrokerLog
import AMQPScopeCapture
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

package enum FuzzEntry {
    package static let targets = [
        "FuzzPacketLayers", "FuzzReassembly", "FuzzFrameParser", "FuzzFieldTable", "FuzzPcapFile", "FuzzTLSRecords",
        "FuzzAMQP10Types", "FuzzAMQP10Frames", "FuzzBrokerLog",
    ]

    /// Runs one input through the named target.
    package static func run(_ target: String, _ bytes: UnsafeRawBufferPointer) {
        switch target {
        case "FuzzPacketLayers": packetLayers(bytes)
        case "FuzzReassembly": reassembly(bytes)
        case "FuzzFrameParser": frameParser(bytes)
        case "FuzzFieldTable": fieldTable(bytes)
        case "FuzzPcapFile": pcapFile(bytes)
        case "FuzzTLSRecords": tlsRecords(bytes)
        case "FuzzAMQP10Types": amqp10Types(bytes)
        case "FuzzAMQP10Frames": amqp10Frames(bytes)
        case "FuzzBrokerLog": brokerLog(bytes)
        default: preconditionFailure("no fuzz target \(target)")
        }
    }

    static let linkTypes: [LinkType] = [.ethernet, .linuxSLL, .linuxSLL2, .null, .loop, .raw, .rawDLT12, .ipv4, .ipv6]

    /// One packet's bytes through every link type's decoder.
    package static func packetLayers(_ bytes: UnsafeRawBufferPointer) {
        for link in linkTypes {
            if case .tcp(let segment) = PacketDecoder.decode(bytes, linkType: link) {
                // The payload the decoder points at must lie inside the packet.
                precondition(
                    segment.payloadOffset >= 0 && segment.payloadOffset + segment.capturedPayloadLength <= bytes.count)
                precondition(segment.capturedPayloadLength <= segment.payloadLength)
            }
        }
    }

    struct CountData: StreamSink {
        var delivered = 0
        mutating func consume(_ event: StreamEvent) {
            if case .data(let bytes) = event.kind { delivered &+= bytes.count }
        }
    }

    /// A sequence of TCP segments encoded from the input, through the reassembler under small caps. Each segment
    /// takes 8 bytes: direction and flags, a signed 3-byte sequence delta, a 2-byte payload length, an ack byte and
    /// a connection selector; its payload follows.
    package static func reassembly(_ input: UnsafeRawBufferPointer) {
        let count = input.count
        var configuration = ReassemblyConfiguration()
        configuration.maximumBufferedBytesPerDirection = 4096
        configuration.maximumBufferedBytesTotal = 8192
        configuration.maximumConnections = 4
        var reassembler = Reassembler(configuration: configuration)
        var sink = CountData()
        var sequences: [UInt32] = [1000, 5000, 9000, 13000]
        var i = 0
        var number = 0
        while i + 8 <= count {
            let control = input[i]
            let delta = Int32(Int8(bitPattern: input[i + 1])) << 16 | Int32(input[i + 2]) << 8 | Int32(input[i + 3])
            let length = min(Int(input[i + 4]) << 8 | Int(input[i + 5]), count - i - 8)
            let connection = Int(input[i + 7] & 3)
            let fromClient = control & 0x80 != 0
            let flags = TCPFlags(rawValue: UInt16(control & 0x1f) | 0x10)
            sequences[connection] = sequences[connection] &+ UInt32(bitPattern: delta)
            let client = Endpoint(address: IPAddress(ipv4: 0x0a00_0001), port: UInt16(40000 + connection))
            let server = Endpoint(address: IPAddress(ipv4: 0x0a00_0002), port: 5672)
            let segment = TCPSegment(
                source: fromClient ? client : server, destination: fromClient ? server : client,
                sequence: sequences[connection], acknowledgment: UInt32(input[i + 6]), flags: flags, window: 512,
                payloadOffset: i + 8, capturedPayloadLength: length,
                payloadLength: length + (control & 0x20 != 0 ? 7 : 0))
            number += 1
            let header = PacketHeader(
                number: number, timestamp: Timestamp(nanoseconds: Int64(number) * 1_000_000),
                capturedLength: count, originalLength: count)
            reassembler.process(segment, header: header, bytes: input, into: &sink)
            precondition(reassembler.bufferedBytes <= configuration.maximumBufferedBytesTotal, "buffer cap exceeded")
            precondition(reassembler.trackedConnections <= configuration.maximumConnections, "connection cap exceeded")
            i += 8 + length
        }
        reassembler.finish(at: Timestamp(nanoseconds: Int64(number + 1) * 1_000_000), into: &sink)
        precondition(reassembler.bufferedBytes == 0, "bytes left buffered after finish")
    }

    /// One step of a byte stream encoded in a fuzz input.
    enum StreamStep {
        case data(UnsafeRawBufferPointer, Direction, at: Int)
        case gap(UInt64, Direction, at: Int)
    }

    /// Walks a stream as the frame and TLS targets encode it: chunks of `chunk` bytes; after a chunk that starts
    /// with 0xff, a gap as long as its second byte; a chunk whose first byte has bit 0x40 turns the direction round.
    static func walk(_ body: UnsafeRawBufferPointer, chunk: Int, _ step: (StreamStep) -> Void) {
        var at = 0
        var direction = Direction.clientToServer
        while at < body.count {
            let n = min(chunk, body.count - at)
            step(.data(UnsafeRawBufferPointer(rebasing: body[at..<at + n]), direction, at: at))
            if body[at] == 0xff { step(.gap(UInt64(body[min(at + 1, body.count - 1)]), direction, at: at)) }
            if body[at] & 0x40 != 0 { direction = direction.reversed }
            at += n
        }
    }

    /// Counts what a codec (0-9-1 or 1.0) hands up.
    struct CountEvents: CodecSink, AMQP10Sink {
        var events = 0
        /// Count routine frames instead of taking their events, as the timeline's sink does without --frames.
        var counts = false
        /// Take messages as the flow's view of them (publish and deliver read straight from their bytes).
        var takesFlowMessages = false
        mutating func consume(_ event: consuming CodecEvent) { events &+= 1 }
        mutating func consume(_ event: consuming AMQP10Event) { events &+= 1 }
        mutating func count(_ frame: CountedFrame, direction: Direction, time: Timestamp, packetNumber: Int) -> Bool {
            if counts { events &+= 1 }
            return counts
        }
    }

    /// An AMQP byte stream through a connection decoder in input-chosen chunk sizes, both ways, with gaps; from the
    /// start (with and without a protocol header) and joined mid-stream.
    package static func frameParser(_ input: UnsafeRawBufferPointer) {
        guard input.count >= 2 else { return }
        let chunk = Int(input[0]) + 1
        let body = UnsafeRawBufferPointer(rebasing: input[1...])
        var configuration = CodecConfiguration()
        configuration.keepBodies = input[1] & 1 != 0
        for (fromStart, header) in [(true, true), (true, false), (false, false)] {
            var decoder = ConnectionDecoder(fromStart: fromStart, onAMQPPort: true, configuration: configuration)
            var sink = CountEvents()
            sink.counts = input[1] & 2 != 0
            sink.takesFlowMessages = input[1] & 4 != 0
            if header {
                let amqp: [UInt8] = [0x41, 0x4D, 0x51, 0x50, 0, 0, 9, 1]
                amqp.withUnsafeBytes {
                    decoder.data(
                        $0, direction: .clientToServer, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
                }
            }
            walk(body, chunk: chunk) { step in
                switch step {
                case .data(let bytes, let direction, let at):
                    decoder.data(
                        bytes, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                case .gap(let length, let direction, let at):
                    decoder.gap(
                        length, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                }
            }
            decoder.finish(direction: .clientToServer, time: Timestamp(nanoseconds: 0), packetNumber: 0, into: &sink)
            decoder.finish(direction: .serverToClient, time: Timestamp(nanoseconds: 0), packetNumber: 0, into: &sink)
        }
    }

    struct CountTLS: TLSSink {
        var events = 0
        mutating func consume(_ event: TLSEvent) { events &+= 1 }
    }

    /// A byte stream through the TLS layer (record parser, handshake parser, heartbeat inference) in input-chosen
    /// chunk sizes, both ways, with gaps, from the start and joined mid-stream, encoded as for `frameParser`. What
    /// the layer holds stays within its documented bounds.
    package static func tlsRecords(_ input: UnsafeRawBufferPointer) {
        guard input.count >= 2 else { return }
        let chunk = Int(input[0]) + 1
        let body = UnsafeRawBufferPointer(rebasing: input[1...])
        for fromStart in [true, false] {
            var session = TLSSession(fromStart: fromStart)
            var sink = CountTLS()
            walk(body, chunk: chunk) { step in
                switch step {
                case .data(let bytes, let direction, let at):
                    session.data(
                        bytes, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                case .gap(let length, let direction, let at):
                    session.gap(
                        length, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                }
                precondition(
                    session.bufferedBytes <= 4 * TLSLimits.huntBufferLimit + 2 * TLSLimits.maximumHandshakeMessage)
            }
        }
        // Decryption with fixed keys: any fragment, under every AEAD and both versions, is opened or refused.
        let header = RecordHeader(contentType: 23, version: 0x0303, length: body.count)
        var plain: [UInt8] = []
        for keys in fixedKeys {
            plain.removeAll(keepingCapacity: true)
            if keys.open(header, body, into: &plain) { precondition(plain.count <= body.count) }
        }
    }

    /// Record protection with fixed keys (made per input, without a key derivation, so each input starts at
    /// sequence 0): TLS 1.3 AES-128-GCM and ChaCha20-Poly1305, TLS 1.2 AES-256-GCM.
    static var fixedKeys: [RecordKeys] {
        guard let aes128 = SuiteParameters.of(0x1301), let chacha = SuiteParameters.of(0x1303),
            let aes256 = SuiteParameters.of(0xC030)
        else { return [] }
        let key = [UInt8](repeating: 0x5A, count: 32)
        return [
            RecordKeys(key: Array(key[..<16]), iv: [UInt8](repeating: 2, count: 12), tls13: true, parameters: aes128),
            RecordKeys(key: key, iv: [UInt8](repeating: 3, count: 12), tls13: true, parameters: chacha),
            RecordKeys(key: key, iv: [UInt8](repeating: 1, count: 4), tls13: false, parameters: aes256),
        ].compactMap { $0 }
    }

    /// Field tables decoded from arbitrary bytes: with a length prefix for the whole input, as they are, and as the
    /// client properties of a Connection.Start-Ok.
    package static func fieldTable(_ input: UnsafeRawBufferPointer) {
        let count = input.count
        var framed = withUnsafeBytes(of: UInt32(truncatingIfNeeded: count).bigEndian) { Array($0) }
        framed.append(contentsOf: input)
        framed.withUnsafeBytes { raw in
            var reader = FieldReader(raw)
            _ = try? reader.table()
        }
        var reader = FieldReader(input)
        _ = try? reader.table()
        let size = withUnsafeBytes(of: UInt32(truncatingIfNeeded: count + 4).bigEndian) { Array($0) }
        let stream: [UInt8] =
            [0x41, 0x4D, 0x51, 0x50, 0, 0, 9, 1, 1, 0, 0] + size + [0, 10, 0, 11] + Array(input) + [0xCE]
        var sink = CountEvents()
        var decoder = ConnectionDecoder(fromStart: true, onAMQPPort: true)
        stream.withUnsafeBytes {
            decoder.data($0, direction: .clientToServer, time: Timestamp(nanoseconds: 0), packetNumber: 1, into: &sink)
        }
    }

    /// A whole pcap file through the analysis in process: capture, layers, reassembly, codec, stories and reports.
    package static func pcapFile(_ input: UnsafeRawBufferPointer) {
        // A file of its own (mkstemp): the test suite replays inputs in parallel, in one process, and each input is
        // read twice below.
        var template = Array("/dev/shm/amqpscope-fuzz-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { return }
        let path = String(cString: template)
        guard let file = fdopen(descriptor, "w") else {
            close(descriptor)
            unlink(path)
            return
        }
        if let base = input.baseAddress { fwrite(base, 1, input.count, file) }
        fclose(file)
        var configuration = EngineConfiguration()
        configuration.recordFrames = true
        configuration.reassembly.maximumConnections = 64
        let result = Analysis.analyzeFile(path, configuration: configuration)
        _ = AnalyzeReport.text([result])
        let json = AnalyzeReport.json([result])
        // The timeline stage on its own thread tells the same story.
        configuration.timelineThread = true
        let threaded = Analysis.analyzeFile(path, configuration: configuration)
        precondition(AnalyzeReport.json([threaded]) == json, "the timeline thread changed the answer")
        // Without frames recorded (routine frames counted, messages followed as the flow's view of them) the two
        // stages still agree.
        configuration.recordFrames = false
        let counted = AnalyzeReport.json([Analysis.analyzeFile(path, configuration: configuration)])
        configuration.timelineThread = false
        precondition(
            AnalyzeReport.json([Analysis.analyzeFile(path, configuration: configuration)]) == counted,
            "the timeline thread changed the counted answer")
        _ = HTMLReport.render([result], version: "fuzz")
        _ = MarkdownReport.render([result], version: "fuzz")
        // amqpscope's own record reader and libpcap's read the same packets and stop at the same error.
        precondition(packets(path, ownRecords: true) == packets(path, ownRecords: false), "the record reader differs")
        unlink(path)
    }

    /// Every packet of a capture file (number, time, lengths, bytes) and how reading ended, as one string each: what
    /// amqpscope's record reader and libpcap must agree on.
    package static func packets(_ path: String, ownRecords: Bool) -> [String] {
        guard let source = try? PcapSource.openFile(path, ownRecords: ownRecords) else { return ["cannot open"] }
        var out: [String] = []
        while true {
            do {
                guard case .packet(let h) = try source.next() else { return out + ["end"] }
                out.append(
                    "\(h.number) \(h.timestamp.nanoseconds) \(h.capturedLength) \(h.originalLength) "
                        + "\(Array(source.packetBytes))")
            } catch {
                return out + ["\(error.code) \(error.description)"]
            }
        }
    }

    /// AMQP 1.0 values from arbitrary bytes: whole, skipped, and as every performative's fields. What is read stays
    /// inside the input, and a value that reads whole also skips, to the same end (skipping checks less).
    /// A broker log's text: every message keeps a line number within the text and endpoints that read back from how
    /// they are written; timestamps and endpoints read from any bytes without trapping.
    package static func brokerLog(_ input: UnsafeRawBufferPointer) {
        let text = String(decoding: input, as: UTF8.self)
        let log = BrokerLog.parse(text)
        precondition(log.lines.count + log.skipped + log.unreadable <= log.lineCount)
        let lines = text.utf8.reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }  // blank ones included
        var previous = 0
        for line in log.lines {
            precondition(line.number >= 1 && line.number <= lines && line.number > previous, "line \(line.number)")
            previous = line.number
            for endpoint in [line.client, line.server] {
                precondition(BrokerLog.endpoint(Substring(endpoint.description)) == endpoint, "\(endpoint)")
            }
        }
        _ = BrokerLog.timestamp(Substring(text.prefix(40)))
        _ = BrokerLog.connection(in: text)
        _ = IPAddress(parsing: text.prefix(64))
    }

    package static func amqp10Types(_ input: UnsafeRawBufferPointer) {
        var whole = AMQP10Reader(input)
        var skipping = AMQP10Reader(input)
        while !whole.isAtEnd {
            guard (try? whole.value()) != nil else { break }
            let skipped: Void? = try? skipping.skip()
            precondition(skipped != nil, "a value that reads whole does not skip")
            precondition(whole.index == skipping.index && whole.index <= input.count, "value() and skip() disagree")
        }
        for frameType: UInt8 in [0, 1] {
            var reader = AMQP10Reader(input)
            _ = try? Performative.decode(&reader, frameType: frameType, showCredentials: false)
            precondition(reader.index <= input.count)
            // The same bytes as the fields of each performative.
            for code: UInt8 in [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x40, 0x41, 0x42, 0x43, 0x44] {
                let framed = [0x00, 0x53, code] + Array(input)
                framed.withUnsafeBytes { raw in
                    var reader = AMQP10Reader(raw)
                    _ = try? Performative.decode(&reader, frameType: code >= 0x40 ? 1 : 0, showCredentials: true)
                }
            }
        }
        _ = AMQP10Decoder.sections(input)
    }

    /// An AMQP 1.0 byte stream through a 1.0 decoder in input-chosen chunk sizes, both ways, with gaps, encoded as for
    /// `frameParser`; from the start and hunting (joined mid-stream). What the decoder holds stays within its bounds.
    package static func amqp10Frames(_ input: UnsafeRawBufferPointer) {
        guard input.count >= 2 else { return }
        let chunk = Int(input[0]) + 1
        let body = UnsafeRawBufferPointer(rebasing: input[1...])
        var configuration = AMQP10Configuration()
        configuration.keepBodies = input[1] & 1 != 0
        configuration.maximumKeptBodyBytes = 1024
        for hunting in [false, true] {
            var decoder = AMQP10Decoder(configuration: configuration, hunting: hunting)
            var sink = CountEvents()
            walk(body, chunk: chunk) { step in
                switch step {
                case .data(let bytes, let direction, let at):
                    decoder.data(
                        bytes, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                case .gap(let length, let direction, let at):
                    decoder.gap(
                        length, direction: direction, time: Timestamp(nanoseconds: Int64(at)), packetNumber: at,
                        into: &sink)
                }
                precondition(
                    decoder.bufferedBytes
                        <= 2 * (Frame10Limits.huntBufferLimit + body.count)
                        + AMQP10Decoder.maximumPendingDeliveries * configuration.maximumKeptBodyBytes)
            }
            decoder.finish(direction: .clientToServer, time: Timestamp(nanoseconds: 0), packetNumber: 0, into: &sink)
            decoder.finish(direction: .serverToClient, time: Timestamp(nanoseconds: 0), packetNumber: 0, into: &sink)
        }
    }
}
