// One capture on two threads: the decoding stage on the caller's, the timeline stage on its own, fed in batches. The
// answer must be the one a single thread gives, byte for byte, whatever the batch size.
import Foundation
import Testing

@testable import AMQPScope

@Suite("timeline thread")
struct TimelineThreadTests {
    /// The JSON report of one capture, analysed with the given thread and batch choices.
    static func report(_ path: String, thread: Bool, batch: Int = TimelineThread.batch, frames: Bool = false)
        -> (json: String, streamed: [Int])
    {
        let configuration = Self.configuration(path, thread: thread, frames: frames)
        let kept = Analysis.analyze([path], configuration: configuration, batch: batch)
        // Streamed: records handed on as they end (on the timeline thread when there is one), in id order.
        var streamed: [Int] = []
        _ = Analysis.analyze(
            [path], configuration: configuration, onRecord: { streamed.append($0.info.id.rawValue) }, batch: batch)
        return (AnalyzeReport.render([kept], format: .json, options: ReportOptions()), streamed)
    }

    /// The engine's configuration for one capture: its key log (beside it, when there is one), frames recorded or
    /// not, the timeline stage on its own thread or not.
    static func configuration(_ path: String, thread: Bool, frames: Bool) -> EngineConfiguration {
        var configuration = EngineConfiguration()
        let keylog = String(path.dropLast(".pcap".count)) + ".keylog"
        if let text = try? String(contentsOfFile: keylog, encoding: .utf8) { configuration.keyLog = KeyLog(text: text) }
        configuration.recordFrames = frames
        configuration.timelineThread = thread
        return configuration
    }

    @Test(
        arguments: Paths.allCaptures + Paths.tlsCaptures
            + Paths.pcaps(in: Paths.captures.appendingPathComponent("amqp10")))
    func sameAnswerOnTwoThreads(path: String) {
        let single = Self.report(path, thread: false, frames: true)
        #expect(!single.json.isEmpty && single.streamed == single.streamed.sorted())
        for batch in [1, 7, TimelineThread.batch] {
            let two = Self.report(path, thread: true, batch: batch, frames: true)
            #expect(two.json == single.json, "batch \(batch)")
            #expect(two.streamed == single.streamed, "batch \(batch)")
        }
    }

    /// Without `recordFrames` (as `analyze` runs unless asked for frames) routine frames are only counted, and publish,
    /// deliver and ack frames cross to the timeline thread without their methods: the report must be the one made from
    /// every frame's event, once the frames and messages that only `recordFrames` keeps are set aside.
    @Test(arguments: Paths.allCaptures + Paths.tlsCaptures)
    func countedFramesGiveTheSameReport(path: String) {
        func report(frames: Bool) -> String {
            let configuration = Self.configuration(path, thread: true, frames: frames)
            var result = Analysis.analyze([path], configuration: configuration, batch: TimelineThread.batch)
            for i in result.records.indices {
                result.records[i].frames = []
                result.records[i].messages = []
            }
            return AnalyzeReport.render([result], format: .json, options: ReportOptions())
        }
        let counted = report(frames: false)
        #expect(counted.contains("\"connections\""))
        #expect(counted == report(frames: true))
    }

    /// A capture that could not be read at all still closes the thread and says so.
    @Test func unreadableFileClosesTheThread() {
        var configuration = EngineConfiguration()
        configuration.timelineThread = true
        let result = Analysis.analyzeFiles(["/nonexistent/amqpscope.pcap"], configuration: configuration)
        #expect(result.unreadable && result.records.isEmpty)
    }
}
