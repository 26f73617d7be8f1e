// The decoding stage's operations for the timeline thread: a content header and the body right after it, in the same
// packet, travel as one operation; anything that tells them apart keeps them two.
import Testing

@testable import AMQPScopeCodec
@testable import AMQPScopePackets
@testable import AMQPScopeReassembly
@testable import AMQPScopeTimeline

@Suite("Op recorder") struct OpRecorderTests {
    /// What the recorder's batch holds, in order, as short descriptions.
    static func taken(_ recorder: OpRecorder) -> [String] {
        var out: [String] = []
        recorder.ops.drain { op in
            switch op {
            case .counted(let id, let direction, let time, let packet, let frame):
                out.append("counted \(id.rawValue) \(direction) \(time.nanoseconds) #\(packet) \(frame)")
            case .content(let id, let direction, let time, let packet, let length):
                out.append("content \(id.rawValue) \(direction) \(time.nanoseconds) #\(packet) \(length)")
            default: out.append("other")
            }
        }
        return out
    }

    @Test func headerAndBodyInOnePacketAreOneOperation() {
        var recorder = OpRecorder()
        recorder.connection = ConnectionID(rawValue: 7)
        let time = Timestamp(nanoseconds: 1_000)
        let counted = [
            recorder.count(.header, direction: .clientToServer, time: time, packetNumber: 3),
            recorder.count(.body(length: 120), direction: .clientToServer, time: time, packetNumber: 3),
            // A second body of the same message is counted on its own: only the first follows its header.
            recorder.count(.body(length: 8), direction: .clientToServer, time: time, packetNumber: 3),
        ]
        #expect(counted == [true, true, true])
        #expect(
            Self.taken(recorder) == [
                "content 7 client->server 1000 #3 120", "counted 7 client->server 1000 #3 body(length: 8)",
            ])
    }

    @Test(arguments: ["packet", "direction", "connection", "time", "between"])
    func anythingThatTellsThemApartKeepsTwo(difference: String) {
        var recorder = OpRecorder()
        recorder.connection = ConnectionID(rawValue: 7)
        let time = Timestamp(nanoseconds: 1_000)
        _ = recorder.count(.header, direction: .clientToServer, time: time, packetNumber: 3)
        var direction = Direction.clientToServer
        var bodyTime = time
        var packet = 3
        switch difference {
        case "packet": packet = 4
        case "direction": direction = .serverToClient
        case "connection": recorder.connection = ConnectionID(rawValue: 8)
        case "time": bodyTime = Timestamp(nanoseconds: 2_000)
        default: _ = recorder.count(.heartbeat, direction: .serverToClient, time: time, packetNumber: 3)
        }
        _ = recorder.count(.body(length: 120), direction: direction, time: bodyTime, packetNumber: packet)
        let ops = Self.taken(recorder)
        #expect(ops.count == (difference == "between" ? 3 : 2), "\(ops)")
        #expect(!ops.contains { $0.hasPrefix("content") }, "\(ops)")
    }

    /// With every frame recorded, nothing is counted, so nothing is joined.
    @Test func recordedFramesAreNotCounted() {
        var recorder = OpRecorder()
        recorder.recordFrames = true
        let time = Timestamp(nanoseconds: 1)
        let counted = recorder.count(.header, direction: .clientToServer, time: time, packetNumber: 1)
        #expect(!counted)
        #expect(Self.taken(recorder).isEmpty)
    }
}
