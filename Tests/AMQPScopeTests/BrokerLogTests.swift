// The broker's log joined to captures: its formats, its connections, the clock between them.
import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopeBrokerLog

private func logText(_ name: String) throws -> String {
    try String(contentsOf: Paths.captures.appendingPathComponent("\(name).broker.log"), encoding: .utf8)
}

private func told(_ capture: String, log: String) -> (stories: [Story], log: BrokerLogSummary?) {
    var options = ReportOptions()
    options.brokerLog = BrokerLog.parse(log)
    let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("\(capture).pcap").path)
    return AnalyzeReport.storiesWithLog(result, options: options)
}

@Suite("Broker logs") struct BrokerLogTests {
    /// 3.9+ text: a message of two lines (same time, level, process) is one message; the process names it.
    @Test func rabbitmq310Text() throws {
        let log = BrokerLog.parse(try logText("missed-heartbeats-fin"))
        #expect(log.lines.count == 4 && log.lineCount == 5)
        let closing = try #require(log.lines.last)
        #expect(closing.kind == .missedHeartbeats && closing.level == "error" && closing.number == 4)
        #expect(closing.text.hasSuffix("): missed heartbeats from client, timeout: 2s"))
        #expect(closing.client.description == "127.0.0.1:33804" && closing.server.description == "127.0.0.1:5672")
        #expect(closing.time == Timestamp(seconds: 1_796_136_016, nanoseconds: 141_362_000))
    }

    /// The JSON formatter's lines, as the recorded broker wrote them.
    @Test func jsonFormatter() throws {
        let log = BrokerLog.parse(try logText("missed-heartbeats-jsonlog"))
        #expect(log.lines.count == 4)
        #expect(log.lines.map(\.kind) == [.accepting, .other, .authenticated, .missedHeartbeats])
        #expect(log.lines[3].text.contains("): missed heartbeats from client, timeout: 2s"))
    }

    /// 3.8 (local time, unprefixed continuation lines) and 4.x (no process in the text, IPv6 in brackets, a JSON
    /// `connection` field), as RabbitMQ's own issues quote them.
    @Test func otherVersions() {
        let log = BrokerLog.parse(
            """
            2017-09-26 08:04:53.596 [warning] <0.2375.628> closing AMQP connection <0.2375.628> (127.0.0.1:54720 -> 127.0.0.1:5672):
            missed heartbeats from client, timeout: 8s
            2017-09-26 08:04:54.000 [info] <0.1.0> Memory high watermark set to 3000 MiB
            2025-03-18 10:00:00.000000+01:00 [info] <0.946.0> accepting AMQP connection [::1]:49321 -> [::1]:5672
            2025-03-18 10:00:00.100000+01:00 [error] <0.946.0> closing AMQP connection [::1]:49321 -> [::1]:5672 (duration: '0ms'):
            2025-03-18 10:00:00.100000+01:00 [error] <0.946.0> client did not start with AMQP protocol header: <<"hello">>
            2021-10-11 10:13:02.519 [info] <0.28299.435> connection <0.28299.435> (::1:22241 -> ::1:5672): user 'aic_qd' authenticated and granted access to vhost 'qd_vhost'
            {"time":"2024-08-12 17:08:12.461291+02:00","level":"debug","msg":"User 'guest' authenticated","pid":"<0.1078.0>","domain":"rabbitmq","connection":"[::ffff:10.0.0.7]:57213 -> [::ffff:10.0.0.11]:5672","meta":{"a":[1,"}"]}}
            not a log line
            """)
        #expect(log.lines.count == 5, "\(log.lines.map(\.text))")
        #expect(log.skipped == 1 && log.unreadable == 1)
        #expect(log.lines[0].kind == .missedHeartbeats && log.lines[0].text.hasSuffix("timeout: 8s"))
        #expect(log.lines[1].client.description == "[::1]:49321" && log.lines[1].kind == .accepting)
        // The offset in the line is applied: 10:00 at +01:00 is 09:00 UTC.
        #expect(log.lines[1].time == Timestamp(seconds: 1_742_288_400, nanoseconds: 0))
        #expect(log.lines[2].text.hasSuffix("<<\"hello\">>"))
        #expect(log.lines[3].server.description == "[::1]:5672" && log.lines[3].kind == .authenticated)
        // A JSON line takes no continuation: the line after it is unreadable.
        #expect(log.lines[4].client.description == "10.0.0.7:57213", "IPv4-mapped addresses are IPv4")
    }

    /// The seed incident with its broker's log: the log line is in the cause's evidence and on the timeline, and
    /// the clock offset is the few milliseconds the broker takes to log an accepted connection.
    @Test(arguments: ["missed-heartbeats-fin", "missed-heartbeats-jsonlog", "haproxy-idle"])
    func joinedToTheRecordedIncident(name: String) throws {
        let (stories, summary) = told(name, log: try logText(name))
        let s = try #require(stories.first { !$0.brokerLog.isEmpty })
        #expect(s.brokerLog.count == 4)
        let head = try #require(s.diagnoses.first)
        let logged = try #require(head.details.first { $0.hasPrefix("the broker logged at ") }, "\(head.details)")
        #expect(
            logged.contains(
                name == "haproxy-idle"
                    ? "client unexpectedly closed TCP connection" : "missed heartbeats from client, timeout: 2s"))
        #expect(!head.details.contains { $0.hasPrefix("RabbitMQ's log should have") })
        let offset = try #require(summary?.clockOffset)
        #expect(offset > 0 && offset < 50_000_000, "\(offset)")
        #expect(summary?.matchedConnections == 1 && summary?.unmatchedCount == 0)
        // On the capture's clock the broker's "closing" comes within a few ms of the TCP close it sent or got.
        let closing = try #require(s.brokerLog.last)
        let close = try #require(
            s.record.moments.first {
                if case .fin = $0.kind { return true }
                if case .reset = $0.kind { return true }
                return false
            })
        #expect(abs(closing.time.since(close.time)) < 20_000_000, "\(closing.time) vs \(close.time)")
        // JSON: kind log, source broker, the line, no direction.
        let json = AnalyzeReport.connectionJSON(s, capture: 0, options: ReportOptions()).serialized()
        #expect(json.contains("\"kind\":\"log\",\"source\":\"broker\",\"direction\":null"))
    }

    /// A broker whose clock runs an hour and a half second ahead (or logs local time): the offset is found and the
    /// lines land where they belong; a connection the capture does not hold is reported apart.
    @Test func clockOffsetAndStrangers() throws {
        let shifted = try logText("missed-heartbeats-fin").split(separator: "\n").map { line -> String in
            let t = BrokerLog.timestamp(line.prefix(32))!
            let moved = Timestamp(nanoseconds: t.nanoseconds + 3_600_500_000_000)
            return Format.time(moved) + "+00:00" + line.dropFirst(32)
        }.joined(separator: "\n")
        let stranger =
            "\n2026-12-01 15:40:15.000000+00:00 [info] <0.999.0> accepting AMQP connection <0.999.0> (10.1.1.1:40000 -> 10.1.1.2:5672)"
        let (stories, summary) = told("missed-heartbeats-fin", log: shifted + stranger)
        let offset = try #require(summary?.clockOffset)
        #expect(abs(offset - 3_600_502_378_000) < 1_000_000, "\(offset)")
        let s = try #require(stories.first)
        #expect(s.brokerLog.count == 4)
        #expect(s.brokerLog.first!.time == s.record.firstTime)
        #expect(summary?.unmatchedCount == 1 && summary?.unmatched.first?.client.description == "10.1.1.1:40000")
    }
}
