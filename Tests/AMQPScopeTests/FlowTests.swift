// Message flow on a real capture: pika publishing with confirms (some unroutable) and consuming with prefetch,
// slow acks, nacks with requeue and a poison message; its counts and latencies against the clients' own logs and
// tshark's view of the same packets; and the seed incident with a FIN, whose late publish is lost for certain.
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReports
import Foundation
import Histogram
import Testing

@testable import AMQPScope
@testable import AMQPScopeCapture
@testable import AMQPScopeTimeline

private func flowTruth(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: Paths.captures.appendingPathComponent("\(name).truth.json"))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// The nearest-rank percentile of sorted values.
private func rank(_ sorted: [Double], _ q: Double) -> Double {
    sorted[max(0, min(sorted.count - 1, Int((q / 100 * Double(sorted.count)).rounded(.up)) - 1))]
}

@Suite("Message flow") struct FlowTests {
    static func flows() throws -> (publisher: FlowRecord, consumer: FlowRecord, truth: [String: Any]) {
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path)
        let truth = try flowTruth("flow-confirms-acks")
        let roles = try #require((truth["expect"] as? [String: Any])?["connection_roles"] as? [[String: Any]])
        func flow(_ role: String) throws -> FlowRecord {
            let port = try #require(
                roles.first { $0["role"] as? String == role }.flatMap { ($0["client_port"] as? Int).map(UInt16.init) })
            let record = try #require(result.records.first { $0.info.client.port == port }, "\(role) \(port)")
            return try #require(record.flow)
        }
        return (try flow("publisher"), try flow("consumer"), truth)
    }

    /// The counts equal what the clients logged.
    @Test func countsAsTheClientsLoggedThem() throws {
        let (publisher, consumer, truth) = try Self.flows()
        let counts = try #require(
            ((truth["expect"] as? [String: Any])?["flow"] as? [String: Any])?["counts"] as? [String: Any])
        func count(_ key: String) -> Int? { counts[key] as? Int }
        #expect(publisher.publishes == count("publishes"))
        #expect(publisher.confirmed == count("confirmed"))
        #expect(publisher.nacked == count("nacked"))
        #expect(publisher.returns == count("returns"))
        #expect(publisher.unconfirmedAtEnd == 0)
        #expect(consumer.deliveries == count("deliveries"))
        #expect(consumer.acks == count("acks"))
        #expect(consumer.ackedMessages == count("acked_messages"))
        #expect(consumer.nacks == count("nacks"))
        #expect(consumer.rejects == count("rejects"))
        #expect(consumer.redelivered == count("redelivered"))
        #expect(consumer.maxUnacked == count("max_unacked"))
        #expect(consumer.prefetch == count("prefetch"))
        #expect(publisher.atRisk.isEmpty && consumer.atRisk.isEmpty, "a clean close leaves nothing at risk")
    }

    /// tshark's counts of the same methods per direction.
    @Test func methodCountsMatchTshark() throws {
        let (publisher, consumer, truth) = try Self.flows()
        let observed = try #require(
            (truth["capture_observed"] as? [String: Any])?["basic_method_counts"] as? [String: Any])
        let text = String(describing: observed)
        // basic_method_counts: per direction, method name -> count (from tshark).
        func n(_ direction: String, _ method: String) -> Int {
            ((observed[direction] as? [String: Any])?[method] as? Int) ?? 0
        }
        #expect(publisher.serverAcks + consumer.serverAcks == n("broker_to_client", "basic.ack"), "\(text)")
        #expect(publisher.serverNacks + consumer.serverNacks == n("broker_to_client", "basic.nack"))
        #expect(publisher.returns + consumer.returns == n("broker_to_client", "basic.return"))
        #expect(publisher.deliveries + consumer.deliveries == n("broker_to_client", "basic.deliver"))
        #expect(publisher.acks + consumer.acks == n("client_to_broker", "basic.ack"))
        #expect(publisher.nacks + consumer.nacks == n("client_to_broker", "basic.nack"))
        #expect(publisher.rejects + consumer.rejects == n("client_to_broker", "basic.reject"))
        #expect(publisher.publishes + consumer.publishes == n("client_to_broker", "basic.publish"))
    }

    /// Latency percentiles against the latencies tshark's packets give, message by message: from the packet that
    /// completed the publish (or delivery) to the confirm's (or ack's), within a millisecond (amqpscope starts at
    /// the publish's last frame, tshark's list at its first), and HdrHistogram's 1 % precision.
    @Test func latenciesAsThePacketsGiveThem() throws {
        let (publisher, consumer, truth) = try Self.flows()
        let connections = try #require(
            (truth["capture_observed"] as? [String: Any])?["connections"] as? [[String: Any]])
        var confirms: [Double] = []
        var acks: [Double] = []
        for c in connections {
            guard let flow = c["flow"] as? [String: Any] else { continue }
            for p in flow["publishes"] as? [[String: Any]] ?? [] where p["confirm"] as? String == "ack" {
                if let ms = p["wire_latency_ms"] as? Double { confirms.append(ms) }
            }
            for d in flow["deliveries"] as? [[String: Any]] ?? [] {
                guard (d["settled_by"] as? [String: Any])?["kind"] as? String == "ack",
                    let ms = d["wire_latency_ms"] as? Double
                else { continue }
                acks.append(ms)
            }
        }
        confirms.sort()
        acks.sort()
        let confirm = try #require(publisher.confirmLatency)
        let ack = try #require(consumer.ackLatency)
        #expect(confirm.count == confirms.count && ack.count == acks.count)
        for (ours, theirs, what) in [(confirm, confirms, "confirm"), (ack, acks, "ack")] {
            for (q, value) in [(50.0, ours.p50), (90, ours.p90), (99, ours.p99), (100, ours.max)] {
                let expected = rank(theirs, q)
                #expect(
                    value <= expected * 1.01 + 0.01 && value >= expected - 1.0 - expected * 0.01,
                    "\(what) p\(q): amqpscope \(value) ms, tshark's packets \(expected) ms")
            }
        }
        // The client's own view is never faster than the wire for confirms (pika returns after the ack arrived).
        let clientConfirm = try #require(
            ((truth["expect"] as? [String: Any])?["flow"] as? [String: Any])?["confirm_latency_ms"] as? [String: Any])
        #expect(confirm.p50 <= (clientConfirm["p50"] as? Double ?? 0) + 0.01)
    }

    /// The stories: the saturated consumer, the poison message, the unroutable publishes.
    @Test func flowDiagnoses() throws {
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path)
        let truth = try flowTruth("flow-confirms-acks")
        let plan = try #require(
            ((truth["expect"] as? [String: Any])?["flow"] as? [String: Any])?["plan"] as? [String: Any])
        let codes = result.records.flatMap { Story($0).diagnoses.map(\.code) }
        #expect(codes.contains(.consumerSaturated) && codes.contains(.redeliveryLoop) && codes.contains(.unroutable))
        #expect(!codes.contains(.slowConfirms) && !codes.contains(.messagesAtRisk))
        let stories = result.records.map { Story($0) }
        let loop = try #require(stories.flatMap(\.diagnoses).first { $0.code == .redeliveryLoop })
        let poison = try #require((plan["poison"] as? [String: Any])?["message_id"] as? String)
        let nacks = try #require((plan["poison"] as? [String: Any])?["nacks_requeue"] as? Int)
        #expect(loop.summary.contains("message-id \"\(poison)\"") && loop.summary.contains("again \(nacks) times"))
        let saturated = try #require(stories.flatMap(\.diagnoses).first { $0.code == .consumerSaturated })
        let hold = try #require((plan["hold"] as? [String: Any])?["seconds"] as? Double)
        #expect(saturated.summary.contains("5 of 5"), "\(saturated.summary)")
        #expect(saturated.summary.contains("for \(Int(hold.rounded())) s"), "\(saturated.summary)")
        // A threshold longer than the hold: no diagnosis.
        var options = StoryOptions()
        options.saturationThreshold = Int64((hold + 1) * 1e9)
        #expect(
            !result.records.flatMap { Story($0, options: options).diagnoses.map(\.code) }.contains(.consumerSaturated))
    }

    /// The seed incident with a FIN: pika's late publish reached the wire after the broker's FIN: lost for certain.
    @Test func latePublishAfterAFinIsLost() throws {
        let truth = try flowTruth("missed-heartbeats-fin")
        let late = try #require((truth["expect"] as? [String: Any])?["late_publish"] as? [String: Any])
        let reached = try #require(late["reached_wire"] as? [String: Any])
        #expect(reached["value"] as? Bool == true)
        let segment = try #require((reached["segments"] as? [[String: Any]])?.first)
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("missed-heartbeats-fin.pcap").path)
        let record = try #require(result.records.first { $0.isAMQP })
        let flow = try #require(record.flow)
        #expect(flow.atRisk.lost == 1)
        #expect(flow.atRisk.firstPacket == segment["frame"] as? Int, "the late publish's packet")
        let story = Story(record)
        let d = try #require(story.diagnoses.first { $0.code == .messagesAtRisk })
        #expect(d.severity == .error && d.summary.contains("lost for certain"))
        // The root cause comes first: the client's silence up to the broker's FIN, not up to the late publish.
        let dropped = try #require((truth["expect"] as? [String: Any])?["connection_dropped_by"] as? [String: Any])
        #expect(dropped["side"] as? String == "broker" && dropped["tcp"] as? String == "FIN")
        let cause = try #require(story.diagnoses.first)
        #expect(cause.code == .missedHeartbeats && cause.severity == .error && cause.side == .client)
        #expect(cause.summary.contains("sent nothing for 6 s") && cause.summary.contains("closed the connection (FIN)"))
    }
}

/// A run's body bytes are those of the messages its methods carried. A body follows its method, and its bytes go to
/// that method's run even when another run has opened in the same direction since: an ack between two publishes, or
/// an ack on another channel between a publish and its content. They went to the direction's last run, so a
/// publisher that also acknowledged deliveries showed its publishes' bytes on its acks.
@Suite("Run body bytes") struct RunBodyBytesTests {
    @Test(arguments: [false, true]) func bodiesCountOnTheRunOfTheirMethod(recordFrames: Bool) throws {
        var c = Conversation()
        c.open()
        c.amqpHandshake(heartbeat: 60)
        for channel: UInt16 in [1, 2] {
            c.client(Encode.methodFrame(channel, 20, 10, [.shortString("")]))
            c.server(Encode.methodFrame(channel, 20, 11, [.longString(LongString(""))]))
        }
        let publish = Encode.methodFrame(
            1, 60, 40, [.short(0), .shortString(""), .shortString("q"), .bit(false), .bit(false)])
        func deliver(_ tag: UInt64) -> [UInt8] {
            Encode.methodFrame(
                2, 60, 60, [.shortString("ctag"), .longlong(tag), .bit(false), .shortString(""), .shortString("q")])
        }
        func ack(_ tag: UInt64) -> [UInt8] { Encode.methodFrame(2, 60, 80, [.longlong(tag), .bit(false)]) }
        func content(_ channel: UInt16, _ size: Int) -> [UInt8] {
            Encode.contentHeader(channel, bodySize: UInt64(size))
                + Encode.frame(3, channel, Array(repeating: 0x41, count: size))
        }
        c.client(publish + content(1, 100))
        c.server(deliver(1) + content(2, 10))
        c.client(ack(1))
        c.client(publish + content(1, 200))
        c.server(deliver(2) + content(2, 20))
        // The ack on channel 2 comes between channel 1's publish and its content.
        c.client(publish + ack(2) + content(1, 300))
        let story = try #require(c.stories { $0.recordFrames = recordFrames }.first)
        let runs = story.record.timeline.compactMap { entry -> Run? in
            if case .run(let run) = entry { return run }
            return nil
        }
        func bytes(_ methodID: UInt16, _ direction: Direction) -> [UInt64] {
            runs.filter { $0.classID == 60 && $0.methodID == methodID && $0.direction == direction }.map(\.bodyBytes)
        }
        #expect(bytes(40, .clientToServer) == [600])
        #expect(bytes(80, .clientToServer) == [0])
        #expect(bytes(60, .serverToClient) == [30])
        #expect(story.record.frameCounts[.clientToServer].bodyBytes == 600)
    }

    /// The methods whose run takes the bodies that follow are the spec's methods with content, and only those.
    @Test func contentMethodsAreTheSpecs() {
        for method in AMQPSpec.methods {
            #expect(
                RecordBuilder.carriesContent(method.classID, method.methodID) == method.carriesContent, "\(method.name)"
            )
        }
        #expect(AMQPSpec.methods.filter(\.carriesContent).count == 4)
    }
}

/// amqpscope's latency histogram against hdrhistogram-swift with the same layout (two significant digits from
/// 1 µs): the same percentile for every value set tried.
@Suite("Latency histogram") struct LatencyHistogramTests {
    @Test(arguments: [1, 2, 3, 4, 5]) func percentilesEqualHdrHistogram(seed: Int) {
        var generator = SeededGenerator(seed: UInt64(seed))
        var ours = LatencyHistogram()
        var theirs = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        let count = 1 + Int(generator.next() % 5000)
        for _ in 0..<count {
            // Log-uniform over 1 µs to 1000 s, as latencies spread.
            let exponent = Double(generator.next() % 1_000_000) / 1_000_000 * 9
            let micros = UInt64(pow(10, exponent))
            ours.record(microseconds: micros)
            _ = theirs.record(micros)
        }
        #expect(ours.total == theirs.totalCount)
        #expect(ours.maxRecorded == theirs.maxRecorded)
        for q in [0.1, 1, 25, 50, 75, 90, 99, 99.9, 100] {
            #expect(
                ours.value(atPercentile: q) == theirs.valueAtPercentile(q),
                "p\(q): \(ours.value(atPercentile: q)) against \(theirs.valueAtPercentile(q)) (\(count) values)")
        }
    }

    /// A histogram stages its values, lists them `stagedLimit` at a time and spreads them into counts `listedLimit` at
    /// a time, and when read: with none listed or spread yet, some, or all, the same percentiles and buckets as
    /// hdrhistogram-swift.
    @Test(arguments: [1, 2, 4, 5, 6, 57, 59, 60, 61, 64, 120, 123, 300])
    func listedValuesAreReadAsCounts(count: Int) {
        var generator = SeededGenerator(seed: UInt64(count))
        var ours = LatencyHistogram()
        var theirs = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        for _ in 0..<count {
            let micros = 200 + generator.next() % 4_000
            ours.record(microseconds: micros)
            _ = theirs.record(micros)
        }
        #expect(ours.stagedCount == count % LatencyHistogram.stagedLimit)
        #expect(ours.listed.count + ours.stagedCount == count % LatencyHistogram.listedLimit)
        #expect(ours.counts.isEmpty == (count < LatencyHistogram.listedLimit))
        #expect(ours.total == theirs.totalCount && ours.maxRecorded == theirs.maxRecorded)
        for q in [0.1, 1, 25, 50, 75, 90, 99, 99.9, 100] {
            #expect(ours.value(atPercentile: q) == theirs.valueAtPercentile(q), "p\(q) of \(count)")
        }
        var from: UInt64 = 0
        for bucket in ours.buckets {
            let to = UInt64((bucket.upToMilliseconds * 1000).rounded())
            let expected = (0..<(LatencyHistogram.index(to) + 1)).reduce(0) { sum, i in
                let value = LatencyHistogram.value(i)
                return value > from && value <= to ? sum + Int(theirs.countForValue(value)) : sum
            }
            #expect(bucket.count == expected, "bucket up to \(to) µs of \(count)")
            from = to
        }
        #expect(ours.buckets.reduce(0) { $0 + $1.count } == count)
    }

    /// Values recorded across several histograms (some staged, some listed, some spread; ranges that do and do not
    /// overlap; counts past 16 bits), then added together: the same total, largest value, percentiles and buckets as
    /// all of them recorded in one. A connection's latencies are the sum of its channels'.
    @Test(arguments: [1, 2, 3, 7, 60, 61, 500, 84_000])
    func addedHistogramsEqualOneRecordedWithAll(count: Int) {
        var generator = SeededGenerator(seed: UInt64(count) &+ 99)
        var all = LatencyHistogram()
        var parts = [LatencyHistogram](repeating: LatencyHistogram(), count: 4)
        for n in 0..<count {
            // Part 0 takes small latencies, part 3 large ones; past 4,000 values one latency repeats, split between
            // parts 1 and 2 so that neither carries past 16 bits and their sum does.
            var part = Int(generator.next() % 4)
            let exponent = Double(generator.next() % 1_000_000) / 1_000_000 * 3 + Double(part) * 1.5
            var micros = UInt64(pow(10, exponent))
            if n >= 4_000 { (part, micros) = (1 + n % 2, 777) }
            all.record(microseconds: micros)
            parts[part].record(microseconds: micros)
        }
        if count > 65_536 { #expect(parts.allSatisfy { $0.spreadOut.carries.isEmpty }) }
        var sum = LatencyHistogram()
        for part in parts.shuffled(using: &generator) { sum.add(part) }
        #expect(sum.total == all.total && sum.maxRecorded == all.maxRecorded)
        for q in [0.1, 1, 25, 50, 75, 90, 99, 99.9, 100] {
            #expect(sum.value(atPercentile: q) == all.value(atPercentile: q), "p\(q) of \(count)")
        }
        #expect(sum.buckets == all.buckets)
        #expect(sum.summary == all.summary)
        if count > 65_536 { #expect(!sum.spreadOut.carries.isEmpty, "the test reaches the carries") }
    }

    /// Confirms on 40 channels, more than get parts of their own: the connection's latencies (its channels' parts
    /// summed, with the channels that have none) are all the confirms', and each channel part has its own.
    @Test func connectionLatenciesAreItsChannelsSummed() {
        var tracker = FlowTracker()
        var generator = SeededGenerator(seed: 40)
        var all = LatencyHistogram()
        var byChannel: [UInt16: LatencyHistogram] = [:]
        var packet = 0
        let start = Timestamp(nanoseconds: 1_000_000_000_000)
        for channel in UInt16(1)...40 {
            tracker.method(
                .confirmSelect(ConfirmSelect(nowait: false)), channel: channel, direction: .clientToServer,
                time: start, packet: packet)
        }
        for round in 0..<25 {
            for channel in UInt16(1)...40 {
                let sent = start.adding(nanoseconds: Int64(round) * 1_000_000_000)
                packet += 1
                tracker.message(
                    FlowMessage(channel: channel, carrier: .publish(exchange: "", routingKey: "work")),
                    direction: .clientToServer, time: sent, packet: packet)
                // Each channel is slower than the one before: the parts differ.
                let latency = Int64(channel) * 20_000 + Int64(generator.next() % 900_000)
                packet += 1
                tracker.routine(
                    .ack(deliveryTag: UInt64(round + 1), multiple: false), channel: channel,
                    direction: .serverToClient, time: sent.adding(nanoseconds: latency), packet: packet)
                all.record(latency)
                byChannel[channel, default: LatencyHistogram()].record(latency)
            }
        }
        let flow = tracker.summary(ended: true, died: false)
        #expect(flow.confirmed == 1000)
        #expect(flow.confirmLatency == all.summary)
        #expect(flow.confirmBuckets == all.buckets)
        // One part is the key's; the other 31 are the first channels', and the last 9 have none.
        #expect(flow.byChannel.count == FlowLimits.maximumParts - 1)
        #expect(tracker.confirmLatencyRest.total == 9 * 25)
        for part in flow.byChannel {
            let channel = UInt16(part.name.dropFirst("channel ".count))!
            #expect(part.confirmLatency == byChannel[channel]?.summary, "\(part.name)")
        }
    }

    /// More than 65,535 values in one index carry past the 16-bit count: totals, percentiles and buckets stay those
    /// of hdrhistogram-swift.
    @Test func countsCarryPastSixteenBits() {
        var ours = LatencyHistogram()
        var theirs = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        var generator = SeededGenerator(seed: 18)
        var values: [UInt64] = Array(repeating: 5, count: 66_000) + Array(repeating: 1_000, count: 2_000)
        values += (0..<2_000).map { _ in 1 + generator.next() % 2_000_000 }
        values.shuffle(using: &generator)
        for micros in values {
            ours.record(microseconds: micros)
            _ = theirs.record(micros)
        }
        #expect(!ours.spreadOut.carries.isEmpty, "the test reaches the carries")
        #expect(ours.total == theirs.totalCount)
        for q in [0.1, 1, 25, 50, 75, 90, 94.3, 97, 99, 99.9, 100] {
            #expect(ours.value(atPercentile: q) == theirs.valueAtPercentile(q), "p\(q)")
        }
        #expect(ours.buckets.reduce(0) { $0 + $1.count } == values.count)
        #expect(
            ours.buckets.first?.count == Int(theirs.countForValue(5)) + values.filter { $0 <= 100 && $0 != 5 }.count)
    }

    /// Latencies in a narrow range, in random order (so the range grows down as well as up): the same percentiles
    /// and buckets as hdrhistogram-swift, and counts that cover exactly the indices from the smallest to the largest.
    @Test(arguments: [(UInt64(1_000), UInt64(5_000)), (3, 7), (1_000_000, 1_000_300), (40, 3_600_000_000)])
    func narrowRangesAreKeptExactly(_ low: UInt64, _ high: UInt64) {
        var generator = SeededGenerator(seed: low ^ high)
        var ours = LatencyHistogram()
        var theirs = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        var smallest = UInt64.max
        for _ in 0..<2000 {
            let micros = low + generator.next() % (high - low + 1)
            smallest = min(smallest, micros)
            ours.record(microseconds: micros)
            _ = theirs.record(micros)
        }
        for q in [0.1, 1, 25, 50, 75, 90, 99, 99.9, 100] {
            #expect(ours.value(atPercentile: q) == theirs.valueAtPercentile(q), "p\(q) in \(low)...\(high)")
        }
        let spread = ours.spreadOut
        #expect(spread.isSpread && spread.base == LatencyHistogram.index(smallest))
        #expect(spread.counts.count == LatencyHistogram.index(ours.maxRecorded) - spread.base + 1)
        // The buckets (doubling from 0.1 ms) count what hdrhistogram-swift counts in the same value ranges.
        var from: UInt64 = 0
        for bucket in ours.buckets {
            let to = UInt64((bucket.upToMilliseconds * 1000).rounded())
            var expected = 0
            for i in 0..<(LatencyHistogram.index(3_600_000_000) + 1) {
                let value = LatencyHistogram.value(i)
                guard value > from || (from == 0 && value == 0), value <= to else { continue }
                expected += Int(theirs.countForValue(value))
            }
            #expect(bucket.count == expected, "bucket up to \(to) µs in \(low)...\(high)")
            from = to
        }
        // The last bucket is the first to reach the largest value's index: none trails it.
        let largest = LatencyHistogram.value(LatencyHistogram.index(ours.maxRecorded))
        let bounds = ours.buckets.map { UInt64(($0.upToMilliseconds * 1000).rounded()) }
        #expect(bounds.last! >= largest && (bounds.count == 1 || bounds[bounds.count - 2] < largest))
    }
}

/// A live capture's flow warnings, replayed packet by packet: the saturated consumer is warned of once, five
/// seconds into its hold, and not before.
@Suite("Live flow warnings") struct LiveFlowAlertTests {
    @Test func saturationIsWarnedOfOnceAfterTheThreshold() throws {
        let source = try PcapSource.openFile(Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path)
        var engine = Engine(linkType: source.linkType)
        var alerts: [(Timestamp, FlowAlert)] = []
        var last = Timestamp(nanoseconds: 0)
        while case .packet(let header) = try source.next() {
            // As a live capture's timer does: every 100 ms, also while no packet comes.
            while last.nanoseconds != 0 && header.timestamp.since(last) >= 100_000_000 {
                last = last.adding(nanoseconds: 100_000_000)
                for alert in engine.flowAlerts(now: last, options: StoryOptions()) { alerts.append((last, alert)) }
            }
            if last.nanoseconds == 0 { last = header.timestamp }
            engine.process(header, source.packetBytes)
        }
        let saturated = alerts.filter { $0.1.code == .consumerSaturated }
        #expect(saturated.count == 1, "\(alerts.map(\.1.summary))")
        engine.finish()
        let record = try #require(engine.takeEnded().first { $0.flow?.saturations.isEmpty == false })
        let stretch = try #require(record.flow?.saturations.first)
        if let (time, alert) = saturated.first {
            #expect(time.since(stretch.from) >= 5_000_000_000 && time.since(stretch.from) < 5_300_000_000)
            #expect(alert.summary.contains("5 of 5"))
        }
        #expect(!alerts.contains { $0.1.code == .slowConfirms })
    }
}

/// The live check skips a flow's channels while none is saturated: the count it reads must follow every saturation
/// that starts and ends, and a skipped look must not hide a warning.
@Suite("Live flow checks skip what cannot warn") struct LiveFlowSkipTests {
    @Test(arguments: ["flow-confirms-acks.pcap", "many-connections.pcap", "blocked.pcap", "channel-error-404.pcap"])
    func saturationCountFollowsTheChannels(_ path: String) throws {
        let source = try PcapSource.openFile(Paths.captures.appendingPathComponent(path).path)
        var engine = Engine(linkType: source.linkType)
        var saturatedAtSomePoint = 0
        while case .packet(let header) = try source.next() {
            engine.process(header, source.packetBytes)
            for case let box? in engine.state.entries {
                guard let tracker = box.entry.builder.flow?.tracker else { continue }
                var counted = 0
                for channel in tracker.channels {
                    if channel.saturatedSince != nil { counted += 1 }
                    counted += channel.consumers.filter { $0.saturatedSince != nil }.count
                }
                #expect(tracker.saturating == counted, "\(path) at packet \(header.number)")
                saturatedAtSomePoint += counted
            }
        }
        if path == "flow-confirms-acks.pcap" { #expect(saturatedAtSomePoint > 0) }
    }

    /// Slow confirms are warned of when the threshold is under the latencies, and not when it is over them all.
    @Test(arguments: [(Int64(1), true), (Int64(3_600_000_000_000), false)])
    func slowConfirmsAreStillWarnedOf(_ threshold: Int64, _ warned: Bool) throws {
        let source = try PcapSource.openFile(Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path)
        var engine = Engine(linkType: source.linkType)
        var options = StoryOptions()
        options.slowConfirmThreshold = threshold
        var alerts: [FlowAlert] = []
        var last = Timestamp(nanoseconds: 0)
        while case .packet(let header) = try source.next() {
            while last.nanoseconds != 0 && header.timestamp.since(last) >= 100_000_000 {
                last = last.adding(nanoseconds: 100_000_000)
                alerts += engine.flowAlerts(now: last, options: options)
            }
            if last.nanoseconds == 0 { last = header.timestamp }
            engine.process(header, source.packetBytes)
        }
        #expect(alerts.contains { $0.code == .slowConfirms } == warned, "\(alerts.map(\.summary))")
    }
}

/// The unacked trace covers the whole connection in a bounded number of points, and keeps its peaks.
@Suite("Unacked trace") struct UnackedTraceTests {
    /// Without the trace (analyze and capture, which draw no chart), each flow record is the same but for it.
    @Test func leftOutItChangesNothingElse() throws {
        let path = Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path
        var configuration = EngineConfiguration()
        let traced = Analysis.analyzeFile(path, configuration: configuration)
        configuration.keepsUnackedTrace = false
        let untraced = Analysis.analyzeFile(path, configuration: configuration)
        #expect(traced.records.count == untraced.records.count)
        #expect(traced.records.contains { ($0.flow?.unackedSamples.count ?? 0) >= 2 }, "the consumer's trace is drawn")
        for (a, b) in zip(traced.records, untraced.records) {
            #expect(b.flow?.unackedSamples.isEmpty ?? true)
            var flow = a.flow
            flow?.unackedSamples = []
            #expect(flow == b.flow, "connection \(a.info.id.rawValue)")
        }
        #expect(AnalyzeReport.json([traced]) == AnalyzeReport.json([untraced]))
        #expect(AnalyzeReport.text([traced]) == AnalyzeReport.text([untraced]))
    }

    @Test(arguments: [100, 511, 512, 513, 5000, 40_000])
    func boundedWholeAndPeaked(changes: Int) {
        var tracker = FlowTracker()
        var generator = SeededGenerator(seed: UInt64(changes))
        let peakAt = changes * 3 / 5
        var exact: [UnackedSample] = []
        for n in 0..<changes {
            tracker.unacked = n == peakAt ? 999 : Int(generator.next() % 50)
            let time = Timestamp(nanoseconds: 1_000_000_000 + Int64(n) * 1_000_000)
            tracker.sampleUnacked(time)
            exact.append(UnackedSample(time: time, unacked: tracker.unacked))
        }
        let samples = tracker.record.unackedSamples
        #expect(samples.count <= FlowLimits.keptSamples)
        if changes < FlowLimits.keptSamples {
            #expect(samples == exact, "while there are few, every change is a point")
        } else {
            #expect(samples.count >= FlowLimits.keptSamples / 2 - 1)
            // The last stretch holds at most `sampleStretch` changes: the trace reaches the end.
            #expect(samples.last!.time >= exact[changes - tracker.sampleStretch].time)
        }
        #expect(samples.contains(exact[peakAt]), "the peak is kept, with its time")
        #expect(zip(samples, samples.dropFirst()).allSatisfy { $0.time < $1.time })
    }
}
