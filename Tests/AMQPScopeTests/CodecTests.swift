import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopeCodec

/// A sample value for an argument type: different per position so that swapped arguments are caught.
private func sample(_ type: ArgumentType, _ i: Int) -> ArgumentValue {
    switch type {
    case .octet: .octet(UInt8(10 + i))
    case .short: .short(UInt16(1000 + i))
    case .long: .long(UInt32(100_000 + i))
    case .longlong: .longlong(UInt64(1) << 40 + UInt64(i))
    case .bit: .bit(i % 3 != 1)
    case .shortString: .shortString("arg-\(i)")
    case .longString: .longString(LongString("long-\(i)"))
    case .table:
        .table(
            FieldTable([
                .init(key: "k\(i)", value: .longString(LongString("v"))), .init(key: "n", value: .int32(-Int32(i))),
            ]))
    case .timestamp: .timestamp(1_700_000_000 + UInt64(i))
    }
}

@Suite("AMQP codec") struct CodecTests {
    /// The generated tables equal RabbitMQ's machine-readable specification, method by method.
    @Test func methodTableMatchesTheSpec() throws {
        let data = try Data(contentsOf: Paths.spec)
        let spec = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let domains = Dictionary(uniqueKeysWithValues: (spec["domains"] as! [[String]]).map { ($0[0], $0[1]) })
        var expected: [String] = []
        for cls in spec["classes"] as! [[String: Any]] {
            for m in cls["methods"] as! [[String: Any]] {
                let args = (m["arguments"] as! [[String: Any]]).map { a in
                    "\(a["name"]!):\((a["type"] as? String) ?? domains[a["domain"] as! String]!)"
                }
                expected.append(
                    "\(cls["id"]!) \(m["id"]!) \(cls["name"]!).\(m["name"]!) [\(args.joined(separator: ","))] "
                        + "sync=\((m["synchronous"] as? Bool) ?? false) content=\((m["content"] as? Bool) ?? false)")
            }
        }
        let ours = AMQPSpec.methods.map { m in
            "\(m.classID) \(m.methodID) \(m.name) "
                + "[\(m.arguments.map { "\($0.name):\($0.type.rawValue)" }.joined(separator: ","))] "
                + "sync=\(m.synchronous) content=\(m.carriesContent)"
        }
        #expect(ours == expected)
        #expect(ours.count == 58 || ours.count == expected.count)
        let basic = (spec["classes"] as! [[String: Any]]).first { $0["name"] as? String == "basic" }!
        let properties = (basic["properties"] as! [[String: Any]]).map { "\($0["name"]!):\($0["type"]!)" }
        #expect(AMQPSpec.basicProperties.map { "\($0.name):\($0.type.rawValue)" } == properties)
    }

    /// Every method of the spec, encoded from sample arguments, decodes to the same arguments.
    @Test func everyMethodRoundTrips() {
        var stream = Encode.header091
        var expected: [[String]] = []
        for (i, m) in AMQPSpec.methods.enumerated() {
            let values = m.arguments.enumerated().map { sample($0.element.type, $0.offset + i) }
            stream += Encode.methodFrame(1, m.classID, m.methodID, values)
            expected.append(zip(m.arguments, values).map { "\($0.name)=\($1)" })
        }
        var configuration = CodecConfiguration()
        configuration.showCredentials = true
        let sink = decodeStream(client: stream, configuration: configuration)
        #expect(sink.malformed.isEmpty, "\(sink.malformed)")
        let methods = sink.methods
        #expect(methods.count == AMQPSpec.methods.count)
        for (m, want) in zip(methods, expected) {
            #expect(m.namedArguments.map { "\($0.name)=\($0.value)" } == want, "\(m.name)")
        }
        #expect(zip(methods, AMQPSpec.methods).allSatisfy { $0.classID == $1.classID && $0.methodID == $1.methodID })
    }

    @Test func unknownMethodsKeepTheirIdsAndLength() {
        let sink = decodeStream(
            client: Encode.header091 + Encode.frame(1, 0, Encode.u16(99) + Encode.u16(7) + [1, 2, 3]))
        #expect(sink.methods == [.unknown(classID: 99, methodID: 7, length: 3)])
        #expect(sink.methods.first?.name == "unknown(99, 7)")
    }

    @Test func everyFieldType() {
        let values: [FieldValue] = [
            .boolean(true), .int8(-5), .uint8(250), .int16(-300), .uint16(60000), .int32(-70000),
            .uint32(4_000_000_000),
            .int64(-1 << 40), .float(1.5), .double(-2.25), .decimal(scale: 2, value: 12345),
            .longString(LongString("text")),
            .array([.int8(1), .longString(LongString("x")), .array([])]), .timestamp(1_700_000_000),
            .table(FieldTable([.init(key: "inner", value: .boolean(false))])), .void, .byteArray([0, 1, 255]),
        ]
        let table = FieldTable(values.enumerated().map { .init(key: "f\($0.offset)", value: $0.element) })
        let sink = decodeStream(
            client: Encode.header091
                + Encode.methodFrame(
                    0, 10, 11,
                    [
                        .table(table), .shortString("PLAIN"), .longString(LongString([0, 117, 0, 112])),
                        .shortString("en_US"),
                    ]))
        guard case .connectionStartOk(let startOk)? = sink.methods.first else {
            Issue.record("no start-ok")
            return
        }
        #expect(startOk.clientProperties == table)
        #expect(Set(values.map(\.typeLetter)) == Set("tbBsuIilfdDSATFVx"))
    }

    @Test func badFieldTypeIsMalformedNotATrap() {
        var table = Encode.u32(5) + Encode.shortString("k") + [UInt8(ascii: "Z"), 0, 0]
        table = Array(table.prefix(4 + 5))
        let sink = decodeStream(
            client: Encode.header091
                + Encode.frame(1, 0, Encode.method(10, 11, []) + table + Encode.shortString("PLAIN")))
        #expect(sink.malformed.count == 1)
        #expect(sink.malformed.first?.contains("unknown field type 'Z'") == true, "\(sink.malformed)")
    }

    @Test func allFourteenBasicProperties() {
        let props: [UInt8] =
            Encode.shortString("application/json") + Encode.shortString("gzip")
            + Encode.table(FieldTable([.init(key: "x-retry", value: .int32(3))])) + [2, 9]
            + Encode.shortString("corr") + Encode.shortString("reply.q") + Encode.shortString("60000")
            + Encode.shortString("msg-1")
            + Encode.u64(1_700_000_000) + Encode.shortString("order.created") + Encode.shortString("guest")
            + Encode.shortString("shop")
            + Encode.shortString("cluster-a")
        let stream =
            Encode.header091
            + Encode.methodFrame(
                1, 60, 40, [.short(0), .shortString("ex"), .shortString("rk"), .bit(false), .bit(false)])
            + Encode.contentHeader(1, bodySize: 5, flags: 0xfffc, properties: props)
            + Encode.frame(3, 1, Array("hello".utf8))
        let sink = decodeStream(client: stream)
        let p = sink.messages.first?.properties
        #expect(
            p?.contentType == "application/json" && p?.contentEncoding == "gzip" && p?.headers?["x-retry"] == .int32(3))
        #expect(p?.deliveryMode == 2 && p?.priority == 9 && p?.correlationID == "corr" && p?.replyTo == "reply.q")
        #expect(
            p?.expiration == "60000" && p?.messageID == "msg-1" && p?.timestamp == 1_700_000_000
                && p?.type == "order.created")
        #expect(p?.userID == "guest" && p?.appID == "shop" && p?.clusterID == "cluster-a")
        #expect(p?.present.count == 14)
        #expect(
            sink.messages.first?.bodySize == 5 && sink.messages.first?.body == nil, "bodies are kept only when asked")
    }

    @Test func propertiesAreCopiedOnWriteAndComparedByValue() {
        var a = BasicProperties()
        a.contentType = "text/plain"
        a.headers = FieldTable([.init(key: "x-retry", value: .int32(3))])
        var b = a
        b.contentType = "application/json"
        #expect(a.contentType == "text/plain" && b.contentType == "application/json", "a copy changes alone")
        #expect(a.headers == b.headers && a != b)
        b.contentType = "text/plain"
        #expect(a == b && a.hashValue == b.hashValue, "equal by value, not by storage")
        var emptied = BasicProperties()
        emptied.messageID = "m-1"
        emptied.messageID = nil
        #expect(emptied == BasicProperties() && emptied.hashValue == BasicProperties().hashValue)
        #expect(emptied.present.isEmpty)
    }

    /// A message-id is known by its digest and first 15 bytes whether or not the properties are decoded: the same
    /// digest and the same label, "…" after the bytes kept when the id is longer, a character cut at the fifteenth
    /// byte shown as U+FFFD.
    @Test func messageIDsAreKnownTheSameWayWithOrWithoutProperties() throws {
        let ids = ["", "a", "order-0001-with", "order-0001-with-more", String(repeating: "é", count: 9), "a\"b\\c"]
        var digests = Set<UInt64>()
        for id in ids {
            // content-type, then message-id (property flag bits 15 and 7).
            let header =
                Encode.u16(60) + Encode.u16(0) + Encode.u64(10) + Encode.u16(0x8080) + Encode.shortString("text/plain")
                + Encode.shortString(id)
            let (decoded, skipped) = try header.withUnsafeBytes { raw in
                var full = FieldReader(raw)
                var light = FieldReader(raw)
                return (
                    try ContentHeader(from: &full, decodeProperties: true),
                    try ContentHeader(from: &light, decodeProperties: false)
                )
            }
            let bytes = Array(id.utf8)
            let label = String(decoding: bytes.prefix(15), as: UTF8.self) + (bytes.count > 15 ? "…" : "")
            #expect(decoded.messageIDPrefix?.text == label, "\(id)")
            #expect(skipped.messageIDPrefix?.text == label, "\(id)")
            #expect(decoded.messageIDPrefix == skipped.messageIDPrefix)
            #expect(decoded.messageIDDigest == skipped.messageIDDigest && decoded.messageIDDigest != nil)
            #expect(decoded.properties.messageID == id && skipped.properties.messageID == nil)
            digests.insert(decoded.messageIDDigest ?? 0)
        }
        #expect(digests.count == ids.count)
        // No message-id: neither is known.
        let none = Encode.u16(60) + Encode.u16(0) + Encode.u64(10) + Encode.u16(0)
        let header = try none.withUnsafeBytes { raw in
            var reader = FieldReader(raw)
            return try ContentHeader(from: &reader, decodeProperties: false)
        }
        #expect(header.messageIDPrefix == nil && header.messageIDDigest == nil)
    }

    /// Frames are copied along the codec's path and kept by the thousand in timelines: the properties stay out of
    /// line, so a content header does not make every frame as large as fourteen optional properties.
    @Test func framesStaySmall() {
        #expect(MemoryLayout<BasicProperties>.size == MemoryLayout<Int>.size)
        #expect(MemoryLayout<ContentHeader>.size <= 64, "\(MemoryLayout<ContentHeader>.size)")
        #expect(MemoryLayout<Frame>.size <= 96, "\(MemoryLayout<Frame>.size)")
    }

    @Test func bodiesSplitAcrossManySegmentsAndFrames() {
        let body = (0..<10_000).map { UInt8($0 % 251) }
        var stream =
            Encode.header091
            + Encode.methodFrame(1, 60, 40, [.short(0), .shortString(""), .shortString("q"), .bit(false), .bit(false)])
        stream += Encode.contentHeader(1, bodySize: UInt64(body.count))
        for start in stride(from: 0, to: body.count, by: 4088) {
            stream += Encode.frame(3, 1, Array(body[start..<min(body.count, start + 4088)]))
        }
        var configuration = CodecConfiguration()
        configuration.keepBodies = true
        for chunk in [1, 7, 100, 4096, .max] {
            let sink = decodeStream(client: stream, chunk: chunk, configuration: configuration)
            #expect(sink.messages.count == 1, "chunk \(chunk)")
            #expect(sink.messages.first?.body == body, "chunk \(chunk)")
            #expect(sink.messages.first?.bodyFrames == 3)
            #expect(sink.malformed.isEmpty)
        }
    }

    @Test func thousandDeepNestedTablesAreRefused() {
        var inner: [UInt8] = Encode.u32(0)
        for _ in 0..<1000 {
            inner = Encode.u32(UInt32(inner.count + 3)) + Encode.shortString("t") + [UInt8(ascii: "F")] + inner
        }
        let sink = decodeStream(
            client: Encode.header091
                + Encode.frame(
                    1, 0,
                    Encode.method(10, 11, []) + inner + Encode.shortString("PLAIN") + Encode.longString([])
                        + Encode.shortString("en"))
                + Encode.heartbeat)
        #expect(sink.malformed.count == 1)
        #expect(sink.malformed.first?.contains("nested deeper than 32") == true, "\(sink.malformed)")
        #expect(sink.frames.count == 1, "the heartbeat after it still decodes")
    }

    @Test func lengthsPastTheEnd() {
        // A long string claiming 2^32-1 bytes inside a small frame.
        let payload = Encode.method(10, 50, []) + Encode.u16(320) + [200] + Array(repeating: 0x41, count: 10)
        let sink = decodeStream(client: Encode.header091 + Encode.frame(1, 0, payload) + Encode.heartbeat)
        #expect(sink.malformed.first?.contains("short string needs 200 bytes") == true, "\(sink.malformed)")
        #expect(sink.frames.count == 1)
    }

    @Test func hugeFrameSizeAndBadEndByteResynchronise() {
        // A frame header claiming 2^32-1 bytes, then valid frames: the parser hunts and finds them.
        var stream = Encode.header091 + [1, 0, 0, 0xff, 0xff, 0xff, 0xff] + Array(repeating: 0, count: 5)
        stream += Encode.heartbeat + Encode.heartbeat + Encode.heartbeat
        var sink = decodeStream(client: stream)
        #expect(sink.malformed.first?.contains("exceeds the 16777216-byte limit") == true, "\(sink.malformed)")
        #expect(sink.syncs.count == 1)
        #expect(sink.frames.count == 3)
        // A bad end byte.
        stream =
            Encode.header091 + Encode.frame(8, 0, [], end: 0xAB) + Encode.heartbeat + Encode.heartbeat
            + Encode.heartbeat
        sink = decodeStream(client: stream)
        #expect(sink.malformed == ["frame end byte is 0xab, not 0xce"])
        #expect(sink.frames.count == 3)
    }

    @Test func frameMaxAndHeartbeatRulesAreChecked() {
        let tuneOk = Encode.methodFrame(0, 10, 31, [.short(0), .long(4096), .short(2)])
        let big = Encode.frame(3, 1, Array(repeating: 1, count: 4089))  // 4097 bytes with header and end byte
        let badBeat = Encode.frame(8, 3, [])
        let sink = decodeStream(client: Encode.header091 + tuneOk + big + badBeat)
        #expect(
            sink.violations.contains { $0.contains("4097 bytes exceeds the negotiated frame_max 4096") },
            "\(sink.violations)")
        #expect(sink.violations.contains { $0.contains("heartbeat frame on channel 3") })
    }

    @Test func protocolHeaders() {
        func verdict(_ bytes: [UInt8], fromStart: Bool = true, onPort: Bool = true) -> Verdict? {
            decodeStream(client: bytes, fromStart: fromStart, onAMQPPort: onPort).verdicts.first
        }
        #expect(verdict(Encode.header091) == .amqp(.amqp091))
        #expect(verdict(Array("AMQP".utf8) + [1, 1, 0, 9]) == .amqp(.amqp09))
        #expect(verdict(Array("AMQP".utf8) + [1, 1, 8, 0]) == .amqp(.amqp08))
        #expect(verdict(Array("AMQP".utf8) + [0, 1, 0, 0]) == .amqp10(.amqp10))
        #expect(verdict(Array("AMQP".utf8) + [3, 1, 0, 0]) == .amqp10(.amqp10SASL))
        #expect(
            verdict(Array("AMQP".utf8) + [2, 1, 0, 0], onPort: false) == .amqp10(.amqp10TLS), "recognised on any port")
        // AMQP 0-10 is named, not decoded; the broker answering with its own header refuses the client's version.
        #expect(verdict(Array("AMQP".utf8) + [1, 1, 0, 10]) == .amqp(.amqp010))
        let refused = decodeStream(client: Array("AMQP".utf8) + [1, 1, 0, 10], server: Encode.header091)
        #expect(refused.headers.map(\.version) == [.amqp010, .amqp091])
        #expect(refused.frames.isEmpty)
        let unknown = decodeStream(client: Array("AMQP".utf8) + [1, 1, 0, 11], server: Encode.header091)
        #expect(unknown.headers.map(\.version) == [.unknown, .amqp091])
        // HTTP on a non-AMQP port, and on 5672: never misread as AMQP.
        let http = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        if case .notAMQP? = verdict(http, onPort: false) {} else { Issue.record("HTTP on another port") }
        let onPort = decodeStream(client: http + Array(repeating: 0x41, count: 70_000))
        #expect(onPort.frames.isEmpty)
        if case .notAMQP? = onPort.verdicts.first {} else { Issue.record("HTTP on 5672: \(onPort.verdicts)") }
    }

    @Test func joiningMidStreamFindsFrameBoundaries() {
        let method = Encode.methodFrame(
            1, 60, 40, [.short(0), .shortString("ex"), .shortString("rk"), .bit(false), .bit(false)])
        let publish = method + Encode.contentHeader(1, bodySize: 3) + Encode.frame(3, 1, [1, 2, 3])
        // Joined five bytes into a method frame: its content header and body are whole, and found first.
        let stream = Array(publish.dropFirst(5)) + publish + publish + Encode.heartbeat
        let sink = decodeStream(client: stream, fromStart: false)
        #expect(sink.syncs == [UInt64(method.count - 5)])
        #expect(sink.frames.count == 2 + 3 + 3 + 1)
        #expect(sink.malformed.isEmpty)
        #expect(sink.messages.count == 2)
        #expect(sink.violations.isEmpty, "what came before the join is not the peer's fault: \(sink.violations)")
        // From the start, the same orphan frames are violations.
        let orphan = decodeStream(client: Encode.header091 + Array(publish.dropFirst(method.count)))
        #expect(
            orphan.violations == [
                "content header on channel 1 with no content method before it",
                "body frame on channel 1 with no content header before it",
            ])
    }

    @Test func credentialsAreRedactedUnlessAsked() {
        let plain = Encode.methodFrame(
            0, 10, 11,
            [
                .table(FieldTable()), .shortString("PLAIN"), .longString(LongString([0] + Array("alice\0s3cret".utf8))),
                .shortString("en_US"),
            ])
        let sink = decodeStream(client: Encode.header091 + plain)
        guard case .connectionStartOk(let s)? = sink.methods.first else {
            Issue.record("no start-ok")
            return
        }
        #expect(!s.response.text.contains("s3cret"))
        #expect(Credentials.user(mechanism: "PLAIN", response: s.response) == "alice")
        #expect(Describe.method(.connectionStartOk(s)).contains("user=alice"))
        var shown = CodecConfiguration()
        shown.showCredentials = true
        guard
            case .connectionStartOk(let t)? = decodeStream(client: Encode.header091 + plain, configuration: shown)
                .methods.first
        else { return }
        #expect(t.response.text.contains("s3cret"))
        // AMQPLAIN: a table body without its length prefix.
        let amqplain = Array(
            Encode.table(
                FieldTable([
                    .init(key: "LOGIN", value: .longString(LongString("bob"))),
                    .init(key: "PASSWORD", value: .longString(LongString("hunter2"))),
                ])
            ).dropFirst(4))
        let frame = Encode.methodFrame(
            0, 10, 11,
            [.table(FieldTable()), .shortString("AMQPLAIN"), .longString(LongString(amqplain)), .shortString("en_US")])
        guard case .connectionStartOk(let u)? = decodeStream(client: Encode.header091 + frame).methods.first else {
            return
        }
        #expect(!u.response.text.contains("hunter2"))
        #expect(Credentials.user(mechanism: "AMQPLAIN", response: u.response) == "bob")
    }

    /// Routine methods read straight from their bytes (`RoutineMethod.read`) must take exactly the payloads that
    /// `Method.decode` takes, and find the same arguments, or the counted path would tell a different story.
    @Test func routineMethodsReadFromBytesAgreeWithTheDecoder() {
        let payloads = [
            Encode.method(60, 40, [.short(0), .shortString("ex"), .shortString("orders.7"), .bit(true), .bit(false)]),
            Encode.method(
                60, 60,
                [
                    .shortString("amq.ctag-0123456789abcdefghijkl"), .longlong(1 << 40 + 3), .bit(true),
                    .shortString(""), .shortString("orders.7"),
                ]),
            Encode.method(
                60, 60,
                [.shortString("ctag-\u{212A}é"), .longlong(9), .bit(false), .shortString("x"), .shortString("")]),
            Encode.method(60, 80, [.longlong(77), .bit(true)]),
            Encode.method(60, 120, [.longlong(78), .bit(false), .bit(true)]),
            Encode.method(60, 90, [.longlong(79), .bit(true)]),
            Encode.method(60, 71, [.longlong(80), .bit(true), .shortString("ex"), .shortString("rk"), .long(2)]),
        ]
        func check(_ payload: [UInt8]) -> Bool {
            payload.withUnsafeBytes { raw in
                var reader = FieldReader(raw)
                let method: Method? = try? {
                    () throws(DecodeError) -> Method in
                    let classID = try reader.short()
                    let methodID = try reader.short()
                    return try Method.decode(classID: classID, methodID: methodID, reader: &reader)
                }()
                guard let read = RoutineMethod.read(raw, channel: 3, flowMessage: true) else {
                    // Refused: either not a routine method, or a payload the decoder refuses too.
                    return method.flatMap { RoutineMethod($0) } == nil
                }
                guard let method, read.method == RoutineMethod(method) else { return false }
                switch (method, read.message?.carrier) {
                case (.basicPublish(let p), .publish(let exchange, let routingKey)?):
                    return p.exchange == exchange && p.routingKey == routingKey && read.message?.channel == 3
                case (.basicDeliver(let d), .deliver(let tag, let deliveryTag, let redelivered)?):
                    return tag == FlowMessage.tagDigest(d.consumerTag) && deliveryTag == d.deliveryTag
                        && redelivered == d.redelivered
                case (.basicPublish, _), (.basicDeliver, _): return false
                default: return read.message == nil
                }
            }
        }
        var rng = SeededGenerator(seed: 11)
        for payload in payloads {
            #expect(check(payload))
            for length in 0..<payload.count { #expect(check(Array(payload.prefix(length)))) }
            for _ in 0..<200 {
                var mutated = payload
                mutated[Int.random(in: 4..<mutated.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                #expect(check(mutated))
            }
        }
        // Without a flow message asked for, a publish or a delivery is left to the decoder.
        for (payload, left) in [(payloads[0], true), (payloads[1], true), (payloads[3], false)] {
            let read = payload.withUnsafeBytes { RoutineMethod.read($0, channel: 0, flowMessage: false)?.method }
            #expect((read == nil) == left)
        }
    }

    /// A sink that follows the flow without keeping messages gets the same view of each message as one made from the
    /// whole message, whether it counts the frames or takes their events.
    @Test func flowMessagesAreTheWholeMessagesView() {
        let messageID = "order-0001-with-a-long-id"
        let tag = "amq.ctag-0123456789abcdefghijkl"
        let client =
            Encode.header091
            + Encode.methodFrame(
                1, 60, 40, [.short(0), .shortString("ex"), .shortString("orders.7"), .bit(false), .bit(false)])
            + Encode.contentHeader(1, bodySize: 2, flags: 0x0080, properties: Encode.shortString(messageID))
            + Encode.frame(3, 1, [7, 7]) + Encode.methodFrame(2, 60, 80, [.longlong(5), .bit(false)])
        let server =
            Encode.header091
            + Encode.methodFrame(
                2, 60, 60, [.shortString(tag), .longlong(5), .bit(true), .shortString(""), .shortString("orders.7")])
            + Encode.contentHeader(2, bodySize: 0, flags: 0x0080, properties: Encode.shortString(messageID))
        let whole = decodeStream(client: client, server: server)
        #expect(whole.messages.count == 2 && whole.flowMessages.isEmpty)
        let expected = whole.messages.map { FlowMessage($0) }
        #expect(expected.first?.carrier == .publish(exchange: "ex", routingKey: "orders.7"))
        #expect(
            expected.last?.carrier
                == .deliver(consumerTag: FlowMessage.tagDigest(tag), deliveryTag: 5, redelivered: true))
        #expect(expected.allSatisfy { $0.messageIDPrefix?.text == "order-0001-with…" && $0.messageIDDigest != nil })
        for counts in [true, false] {
            var sink = CodecCollect()
            sink.takesFlowMessages = true
            sink.counts = counts
            for chunk in [Int.max, 1] {
                let flow = decodeStream(client: client, server: server, chunk: chunk, sink: sink)
                #expect(flow.messages.isEmpty)
                #expect(flow.flowMessages == expected)
                // Counted: publish, header, body, ack; deliver, header. Otherwise each is a frame event.
                #expect(flow.counted == (counts ? 6 : 0))
                #expect(flow.frames.count == (counts ? 0 : 6))
            }
        }
    }

    @Test func everyPrefixAndRandomGarbageNeverTraps() {
        let stream =
            Encode.header091 + Encode.methodFrame(0, 10, 31, [.short(1), .long(4096), .short(2)]) + Encode.heartbeat
            + Encode.methodFrame(
                1, 60, 40, [.short(0), .shortString("ex"), .shortString("rk"), .bit(true), .bit(false)])
            + Encode.contentHeader(1, bodySize: 2, flags: 0x8000, properties: Encode.shortString("text/plain"))
            + Encode.frame(3, 1, [7, 7])
        for length in 0...stream.count { _ = decodeStream(client: Array(stream.prefix(length))) }
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<300 {
            var mutated = stream
            for _ in 0..<3 {
                mutated[Int.random(in: 0..<mutated.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = decodeStream(client: mutated, chunk: Int.random(in: 1...20, using: &rng))
            _ = decodeStream(client: mutated, fromStart: false)
        }
    }
}

@Suite("Captures decode") struct CaptureDecodeTests {
    /// Each capture's streams fed one byte at a time decode to the same frames as fed whole.
    @Test(arguments: Paths.allCaptures)
    func dripFeedEqualsWhole(path: String) {
        var whole = EngineConfiguration()
        var drip = EngineConfiguration()
        whole.recordFrames = true
        drip.recordFrames = true
        drip.byteAtATime = true
        let a = Analysis.analyzeFile(path, configuration: whole)
        let b = Analysis.analyzeFile(path, configuration: drip)
        #expect(a.records.count == b.records.count)
        for (x, y) in zip(a.records, b.records) {
            #expect(x.frames == y.frames, "\(path) connection \(x.info.id)")
            #expect(x.problemCount == y.problemCount)
        }
    }

    @Test func celeryMidStreamHasNoMalformedFramesAfterSync() throws {
        let r = Analysis.analyzeFile(
            Paths.externalCaptures.appendingPathComponent("celery-midstream-ethernet.pcap").path)
        #expect(r.records.count == 3)
        for record in r.records {
            #expect(record.verdict == .amqpBySync)
            #expect(record.problemCount == 0, "\(record.problems)")
            #expect(record.frameCounts.clientToServer.total + record.frameCounts.serverToClient.total > 0)
        }
    }

    @Test func streamProtocolCaptureHasNoAMQPConnection() {
        let r = Analysis.analyzeFile(
            Paths.externalCaptures.appendingPathComponent("rabbitmq-stream-protocol-5552.pcap").path)
        #expect(r.records.count == 4)
        #expect(r.records.allSatisfy { !$0.isAMQP })
        // Even when told 5552 is an AMQP port, its bytes are not misread as frames.
        var configuration = EngineConfiguration()
        configuration.reassembly.serverPorts.insert(5552)
        let forced = Analysis.analyzeFile(
            Paths.externalCaptures.appendingPathComponent("rabbitmq-stream-protocol-5552.pcap").path,
            configuration: configuration)
        #expect(
            forced.records.allSatisfy {
                !$0.isAMQP && $0.frameCounts.clientToServer.total == 0 && $0.frameCounts.serverToClient.total == 0
            })
    }
}

@Suite("Decoder memory cap") struct DecoderMemoryCapTests {
    /// Fifty connections each hold half of a 100 KB method frame: the engine's cap on all decoders' buffers holds,
    /// and the frames dropped for it are reported.
    @Test func heldBytesStayUnderTheCap() throws {
        var configuration = EngineConfiguration()
        configuration.maximumCodecBufferedBytes = 1_000_000
        var engine = Engine(linkType: .ethernet, configuration: configuration)
        var number = 0
        var peak = 0
        for i in 0..<50 {
            var c = Conversation()
            c.clientPort = UInt16(30000 + i)
            c.open()
            c.client(
                Encode.header091 + [1, 0, 1] + Encode.u32(100_000) + Encode.u16(60) + Encode.u16(40)
                    + Array(repeating: 0, count: 50_000))
            for p in c.packets {
                number += 1
                p.bytes.withUnsafeBytes {
                    engine.process(
                        PacketHeader(
                            number: number, timestamp: Timestamp(nanoseconds: p.time), capturedLength: p.bytes.count,
                            originalLength: p.bytes.count), $0)
                }
                peak = max(peak, engine.codecBufferedBytes)
            }
        }
        #expect(peak <= 1_000_000 + 50_100)
        engine.finish()
        let records = engine.takeEnded()
        #expect(records.count == 50)
        #expect(records.contains { $0.problems.contains { $0.reason.contains("memory cap was reached") } })
    }
}
