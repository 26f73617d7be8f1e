// Builds synthetic TCP conversations carrying AMQP frames, with correct sequence numbers both ways, and runs them
// through the engine: the input for the synthetic diagnosis tests.
@testable import AMQPScope

struct Conversation {
    var clientSeq: UInt32 = 1000
    var serverSeq: UInt32 = 5000
    var packets: [(time: Int64, bytes: [UInt8])] = []
    var clientPort: UInt16 = 40000
    /// Capture time in nanoseconds; starts at 2026-01-01 00:00:00 UTC.
    var now: Int64 = 1_767_225_600_000_000_000

    mutating func at(_ seconds: Double) { now = 1_767_225_600_000_000_000 + Int64(seconds * 1e9) }

    private mutating func emit(_ fromClient: Bool, _ flags: TCPFlags, _ payload: [UInt8] = [], seq: UInt32? = nil) {
        let s = seq ?? (fromClient ? clientSeq : serverSeq)
        let a = fromClient ? serverSeq : clientSeq
        let (sp, dp): (UInt16, UInt16) = fromClient ? (clientPort, 5672) : (5672, clientPort)
        packets.append(
            (
                now,
                Build.ethernet(
                    payload: Build.ipv4(
                        payload: Build.tcp(sport: sp, dport: dp, seq: s, ack: a, flags: flags, payload: payload)))
            ))
        now += 100_000
    }

    mutating func open() {
        emit(true, [.syn])
        clientSeq &+= 1
        emit(false, [.syn, .ack])
        serverSeq &+= 1
        emit(true, [.ack])
    }

    mutating func client(_ payload: [UInt8]) {
        emit(true, [.ack, .psh], payload)
        clientSeq &+= UInt32(payload.count)
    }
    mutating func server(_ payload: [UInt8]) {
        emit(false, [.ack, .psh], payload)
        serverSeq &+= UInt32(payload.count)
    }
    mutating func clientAck() { emit(true, [.ack]) }
    mutating func serverAck() { emit(false, [.ack]) }
    mutating func clientFIN() {
        emit(true, [.fin, .ack])
        clientSeq &+= 1
    }
    mutating func serverFIN() {
        emit(false, [.fin, .ack])
        serverSeq &+= 1
    }
    mutating func clientRST() { emit(true, [.rst, .ack]) }
    mutating func serverRST() { emit(false, [.rst, .ack]) }

    /// Protocol header, Start/Start-Ok with products, Tune/Tune-Ok, Open/Open-Ok.
    mutating func amqpHandshake(
        heartbeat: UInt16, clientProduct: String = "Pika Python Client Library", clientVersion: String = "1.3.2"
    ) {
        client(Encode.header091)
        let serverProps = FieldTable([
            .init(key: "product", value: .longString(LongString("RabbitMQ"))),
            .init(key: "version", value: .longString(LongString("3.13.0"))),
        ])
        server(
            Encode.methodFrame(
                0, 10, 10,
                [
                    .octet(0), .octet(9), .table(serverProps), .longString(LongString("PLAIN")),
                    .longString(LongString("en_US")),
                ]))
        let clientProps = FieldTable([
            .init(key: "product", value: .longString(LongString(clientProduct))),
            .init(key: "version", value: .longString(LongString(clientVersion))),
        ])
        client(
            Encode.methodFrame(
                0, 10, 11,
                [
                    .table(clientProps), .shortString("PLAIN"),
                    .longString(LongString([0] + Array("guest\0guest".utf8))), .shortString("en_US"),
                ]))
        server(Encode.methodFrame(0, 10, 30, [.short(2047), .long(131_072), .short(60)]))
        client(Encode.methodFrame(0, 10, 31, [.short(2047), .long(131_072), .short(heartbeat)]))
        client(Encode.methodFrame(0, 10, 40, [.shortString("/"), .shortString(""), .bit(false)]))
        server(Encode.methodFrame(0, 10, 41, [.shortString("")]))
    }

    static let connectionClose = Encode.methodFrame(
        0, 10, 50, [.short(200), .shortString("Normal shutdown"), .short(0), .short(0)])
    static let connectionCloseOk = Encode.methodFrame(0, 10, 51, [])

    func stories(configure: (inout EngineConfiguration) -> Void = { _ in }) -> [Story] {
        var configuration = EngineConfiguration()
        configure(&configuration)
        var engine = Engine(linkType: .ethernet, configuration: configuration)
        feed(&engine)
        engine.finish()
        return engine.takeEnded().map { Story($0) }
    }

    /// Feeds the packets `range` (all of them by default) to an engine.
    func feed(_ engine: inout Engine, _ range: Range<Int>? = nil) {
        for i in range ?? packets.indices {
            let p = packets[i]
            p.bytes.withUnsafeBytes {
                engine.process(
                    PacketHeader(
                        number: i + 1, timestamp: Timestamp(nanoseconds: p.time), capturedLength: p.bytes.count,
                        originalLength: p.bytes.count), $0)
            }
        }
    }

    /// The seed incident: a 2 s heartbeat, the client silent while the server beats for 6 s, then the server's RST.
    static func seedIncident() -> Conversation {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 2)
        for second in 1...6 {
            c.at(Double(second))
            c.server(Encode.heartbeat)
            c.clientAck()
        }
        c.at(6.5)
        c.serverRST()
        return c
    }
}
