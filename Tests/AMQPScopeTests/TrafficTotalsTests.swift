// The engine's running totals (what `capture --metrics-listen` exports): open connections while they are open,
// then how each ended, heartbeats and frames by direction, resets by errno.
import Testing

@testable import AMQPScope

@Suite("Traffic totals") struct TrafficTotalsTests {
    /// The seed incident, counted as it happens and once it is over.
    @Test func seedIncidentCounted() throws {
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
        var engine = Engine(linkType: .ethernet, configuration: EngineConfiguration())
        let server = "127.0.0.1:5672"
        for (i, p) in c.packets.enumerated() {
            if i == c.packets.count - 1 {
                // Before the reset: one connection open, the server's heartbeats counted, nothing closed.
                let before = try #require(engine.trafficTotals().servers.first?.value)
                #expect(engine.trafficTotals().servers.keys.first == server)
                #expect(before.open == 1 && before.opened == 1 && before.closed.isEmpty)
                #expect(before.heartbeats.serverToClient == 6 && before.heartbeats.clientToServer == 0)
                #expect(before.frames.clientToServer["method"] == 3, "start-ok, tune-ok, open")
                #expect(before.resets.isEmpty)
            }
            p.bytes.withUnsafeBytes {
                engine.process(
                    PacketHeader(
                        number: i + 1, timestamp: Timestamp(nanoseconds: p.time), capturedLength: p.bytes.count,
                        originalLength: p.bytes.count), $0)
            }
        }
        engine.finish()
        let after = try #require(engine.trafficTotals().servers[server])
        #expect(after.open == 0 && after.opened == 1 && after.closed == ["rst": 1])
        #expect(after.resets == ["104": 1])
        #expect(after.heartbeats.serverToClient == 6)
        #expect(after.bytes.clientToServer > 0 && after.bytes.serverToClient > 0)
    }
}
