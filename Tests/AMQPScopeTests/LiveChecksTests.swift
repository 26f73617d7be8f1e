import Foundation
import Testing

@testable import AMQPScopeCapture
@testable import AMQPScopePackets
@testable import AMQPScopeReassembly
@testable import AMQPScopeTimeline

/// The live checks come due on a schedule instead of walking every connection on every tick. Replayed with a live
/// capture's 100 ms timer, they must find exactly what a walk over every open connection finds at every tick.
@Suite("Live checks on a schedule") struct LiveChecksTests {
    /// Every side overdue at `now`, by walking every open connection (what each tick used to do).
    static func walk(_ engine: Engine, now: Timestamp) -> Set<String> {
        var out: Set<String> = []
        for case let box? in engine.state.entries {
            for side in Side.allCases {
                if let o = box.entry.builder.overdue(side, now: now) {
                    out.insert("\(o.info.id.rawValue) \(side) \(o.lastFrame)")
                }
            }
        }
        return out
    }

    static func key(_ o: HeartbeatOverdue) -> String { "\(o.info.id.rawValue) \(o.side) \(o.lastFrame)" }

    /// Replays `path` with a tick every 100 ms; returns the warnings with the tick that gave them, and checks at every
    /// tick that the overdue gauge equals the walk.
    static func replay(_ path: String) throws -> (warned: [(Timestamp, HeartbeatOverdue)], ticks: Int) {
        let source = try PcapSource.openFile(Paths.captures.appendingPathComponent(path).path)
        var engine = Engine(linkType: source.linkType)
        var warned: [(Timestamp, HeartbeatOverdue)] = []
        var last = Timestamp(nanoseconds: 0)
        var ticks = 0
        var reported: Set<String> = []
        func tick(_ now: Timestamp) {
            ticks += 1
            let new = engine.overdueHeartbeats(now: now)
            for o in new { warned.append((now, o)) }
            let gauge = Set(engine.overdueNow(now: now).map(key))
            let walked = walk(engine, now: now)
            #expect(gauge == walked, "\(path) at \(now): the gauge says \(gauge), the walk \(walked)")
            // Every silence the walk sees is warned of by this tick, and only once.
            for k in walked where !reported.contains(k) {
                #expect(new.contains { key($0) == k }, "\(path) at \(now): \(k) overdue but not warned of")
                reported.insert(k)
            }
            #expect(new.allSatisfy { walked.contains(key($0)) })
        }
        while case .packet(let header) = try source.next() {
            while last.nanoseconds != 0 && header.timestamp.since(last) >= 100_000_000 {
                last = last.adding(nanoseconds: 100_000_000)
                tick(last)
            }
            if last.nanoseconds == 0 { last = header.timestamp }
            engine.process(header, source.packetBytes)
        }
        return (warned, ticks)
    }

    @Test(arguments: [
        "missed-heartbeats-104.pcap", "missed-heartbeats-fin.pcap", "healthy-heartbeats.pcap",
        "amqp10/rabbitmq10-idle-timeout.pcap", "amqp10/proton-broker-frozen.pcap", "broker-restart.pcap",
    ])
    func sameAsAWalkAtEveryTick(_ path: String) throws {
        let (_, ticks) = try Self.replay(path)
        #expect(ticks > 10)
    }

    @Test func theSilentClientIsWarnedOfOnceOnTime() throws {
        let (warned, _) = try Self.replay("missed-heartbeats-104.pcap")
        #expect(warned.count == 1, "\(warned.map { Self.key($0.1) })")
        guard let (at, o) = warned.first else { return }
        #expect(o.side == .client)
        // The first tick after the heartbeat interval has passed since the client's last frame.
        let due = o.lastFrame.adding(nanoseconds: Int64(o.heartbeat) * 1_000_000_000)
        #expect(at > due && at.since(due) <= 100_000_000, "warned at \(at), due \(due)")
        #expect(o.peerFramesSince >= 1)
    }

    @Test func healthyHeartbeatsAreNeverOverdue() throws {
        let (warned, _) = try Self.replay("healthy-heartbeats.pcap")
        #expect(warned.isEmpty, "\(warned.map { Self.key($0.1) })")
    }

    /// The queue holds one wake-up per open connection, and those of ended ones only until they come due.
    @Test func wakeUpsAreBoundedByOpenConnections() throws {
        let source = try PcapSource.openFile(Paths.captures.appendingPathComponent("broker-restart.pcap").path)
        var engine = Engine(linkType: source.linkType)
        var last = Timestamp(nanoseconds: 0)
        var most = 0
        while case .packet(let header) = try source.next() {
            engine.process(header, source.packetBytes)
            if header.timestamp.since(last) >= 100_000_000 {
                last = header.timestamp
                _ = engine.overdueHeartbeats(now: last)
                #expect(engine.checksQueued <= engine.state.slots.count + 64)
                most = max(most, engine.checksQueued)
            }
        }
        #expect(most >= 40)  // the 40 clients were watched
    }
}
