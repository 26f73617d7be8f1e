// The engine's running totals (what `capture --metrics-listen` exports): open connections while they are open,
// then how each ended, heartbeats and frames by direction, resets by errno.
import Testing

@testable import AMQPScope

@Suite("Traffic totals") struct TrafficTotalsTests {
    /// The seed incident, counted as it happens and once it is over.
    @Test func seedIncidentCounted() throws {
        let c = Conversation.seedIncident()
        var engine = Engine(linkType: .ethernet, configuration: EngineConfiguration())
        let server = "127.0.0.1:5672"
        c.feed(&engine, 0..<c.packets.count - 1)
        // Before the reset: one connection open, the server's heartbeats counted, nothing closed.
        let before = try #require(engine.trafficTotals().servers[server])
        #expect(engine.trafficTotals().servers.count == 1)
        #expect(before.open == 1 && before.opened == 1 && before.closed.isEmpty)
        #expect(before.heartbeats.serverToClient == 6 && before.heartbeats.clientToServer == 0)
        #expect(before.frames.clientToServer["method"] == 3, "start-ok, tune-ok, open")
        #expect(before.resets.isEmpty)
        c.feed(&engine, c.packets.count - 1..<c.packets.count)
        engine.finish()
        let after = try #require(engine.trafficTotals().servers[server])
        #expect(after.open == 0 && after.opened == 1 && after.closed == ["rst": 1])
        #expect(after.resets == ["104": 1])
        #expect(after.heartbeats.serverToClient == 6)
        #expect(after.bytes.clientToServer > 0 && after.bytes.serverToClient > 0)
    }
}
