// Incident-review reports: escaping, a hostile capture rendered inert, golden Markdown, and real headless Chromium.
import Foundation
import Testing

@testable import AMQPScope
@testable import AMQPScopeCodec
@testable import AMQPScopeReports
@testable import AMQPScopeTimeline

private let chromium = Tools.which("chromium")
private let chromiumReady = chromium != nil || Tools.requireTshark  // CI installs it (scripts/setup)
private let reviewDirectory = Paths.root.appendingPathComponent(".build/review")

/// A connection whose every name carries hostile text: markup, quotes, control bytes and 10 KB strings.
private func hostileCapture() -> String {
    let script = "<script>alert('x')</script>\"'&\u{07}\u{1B}[31m"
    let huge = String(repeating: "A", count: 10_000)
    var c = Conversation()
    c.open()
    c.client(Encode.header091)
    let serverProps = FieldTable([.init(key: "product", value: .longString(LongString(script + huge)))])
    c.server(
        Encode.methodFrame(
            0, 10, 10,
            [
                .octet(0), .octet(9), .table(serverProps), .longString(LongString("PLAIN")),
                .longString(LongString("en_US")),
            ]))
    let clientProps = FieldTable([
        .init(key: "product", value: .longString(LongString(script))),
        .init(key: "connection_name", value: .longString(LongString(huge + script))),
        .init(key: "<img src=x onerror=alert(1)>", value: .longString(LongString("</td></tr></table>"))),
    ])
    c.client(
        Encode.methodFrame(
            0, 10, 11,
            [
                .table(clientProps), .shortString("PLAIN"),
                .longString(LongString([0] + Array("guest\0s3cret-password".utf8))), .shortString("en_US"),
            ]))
    c.server(Encode.methodFrame(0, 10, 30, [.short(2047), .long(131_072), .short(60)]))
    c.client(Encode.methodFrame(0, 10, 31, [.short(2047), .long(131_072), .short(60)]))
    c.client(Encode.methodFrame(1, 20, 10, [.shortString("")]))
    c.client(
        Encode.methodFrame(
            1, 50, 10,
            [
                .short(0), .shortString(String((script + huge).prefix(255))), .bit(true), .bit(false), .bit(false),
                .bit(false), .bit(false), .table(FieldTable()),
            ]))
    c.server(
        Encode.methodFrame(
            1, 20, 40,
            [.short(404), .shortString(String(("NOT_FOUND - " + script + huge).prefix(255))), .short(50), .short(10)]))
    c.server(
        Encode.methodFrame(
            0, 10, 50,
            [
                .short(541), .shortString(String((script + "| **bold** [link](http://x) `code`").prefix(255))),
                .short(0), .short(0),
            ]))
    c.clientFIN()
    c.serverRST()
    return Paths.temporaryFile("hostile.pcap", Build.pcap(packets: c.packets.map { ($0.time, $0.bytes, nil) }))
}

@Suite("Review reports") struct ReviewReportTests {
    @Test func escaping() {
        #expect(HTML.escape("<a href=\"x\">'&'</a>") == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;")
        #expect(HTML.escape("bell\u{07}esc\u{1B}") == "bell\\x07esc\\x1b")
        #expect(HTML.escape(String(repeating: "x", count: 2000), limit: 100).count == 101)
        #expect(MarkdownReport.escape("a|b *c* [d](e) <f> `g`") == "a\\|b \\*c\\* \\[d\\](e) &lt;f&gt; \\`g\\`")
    }

    @Test func jsonEscaping() throws {
        #expect(
            JSON.string("a\"b\\c\n\u{01}\u{7F}é\u{2028}\u{2029}✓").serialized()
                == #""a\"b\\c\n\u0001\u007fé\u2028\u2029✓""#)
        // Every character class at every position round-trips through a real JSON parser, and the output carries no
        // raw control byte and no U+2028/2029.
        let pieces = [
            "\"", "\\", "\n", "\r", "\t", "\u{00}", "\u{1F}", "\u{7F}", "\u{2028}", "\u{2029}", "\u{2027}", "é", "€",
            "😀", "plain", "0123456789abcdef~ ",
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let text = (0..<Int.random(in: 0...12, using: &generator)).map { _ in
                pieces.randomElement(using: &generator)!
            }
            .joined()
            let out = JSON.string(text).serialized()
            #expect(
                !out.utf8.contains { $0 < 0x20 || $0 == 0x7F } && !out.contains("\u{2028}") && !out.contains("\u{2029}")
            )
            let parsed = try JSONSerialization.jsonObject(with: Data(out.utf8), options: .fragmentsAllowed) as? String
            #expect(parsed == text, "\(out)")
        }
    }

    /// Objects written member by member (`JSONObjectWriter`, whose member starts are stored in one step with eight
    /// spaces at a time) give the same bytes as the tree, whose keys take the general path, at every depth and
    /// indentation, compact or not.
    @Test func writtenObjectsMatchTheTree() throws {
        let keys: [StaticString] = [
            "", "a", "id", "packet", "direction", "confirm_latency_ms", "twenty_four_bytes_of_key",
        ]
        func tree(_ depth: Int) -> JSON {
            var members: [(String, JSON)] = keys.enumerated().map { ($1.description, .int(Int64($0))) }
            members += [("flag", .bool(depth % 2 == 0)), ("none", .null), ("ratio", .double(0.25))]
            if depth > 0 {
                members += [("inner", tree(depth - 1)), ("list", .array([tree(depth - 1), tree(depth - 1)]))]
            }
            return .object(members)
        }
        func write(_ depth: Int, _ o: inout JSONObjectWriter, _ out: inout JSONOutput) {
            for (i, key) in keys.enumerated() { o.int(key, i, &out) }
            o.bool("flag", depth % 2 == 0, &out)
            o.null("none", &out)
            o.double("ratio", 0.25, &out)
            if depth > 0 {
                o.object("inner", &out) { o, out in write(depth - 1, &o, &out) }
                o.objects("list", 2, &out) { _, o, out in write(depth - 1, &o, &out) }
            }
        }
        for indent in [nil] + (0...9).map(Optional.some) {
            var expected = JSONOutput(capacity: 16)
            tree(4).write(into: &expected, indent: indent)
            // A small first capacity, so that the room is made again and again.
            var out = JSONOutput(capacity: 16)
            var o = JSONObjectWriter(&out, indent: indent)
            write(4, &o, &out)
            o.end(&out)
            #expect(out.string == expected.string, "indent \(String(describing: indent))")
        }
    }

    /// Descriptions written straight into a JSON string (`TextSink`) give the bytes of the same words built as a
    /// String and then escaped: with quotes, backslashes, control characters, U+2028 and other non-ASCII text from
    /// the capture, numbers up to UInt64's largest, singular and plural runs, and durations in every unit.
    @Test func descriptionsWrittenAsBytesMatchTheirText() throws {
        let hostile = "ex\"ch\\ange\u{1}\n\u{2028}é×\u{7f}"
        var frames: [Frame] = []
        func method(_ m: Method, cut: Bool = false) {
            frames.append(Frame(type: 1, channel: 1, size: 0, content: .method(m), cut: cut))
        }
        method(
            .basicPublish(
                BasicPublish(ticket: 0, exchange: hostile, routingKey: hostile, mandatory: true, immediate: false)))
        method(
            .basicPublish(
                BasicPublish(
                    ticket: 7, exchange: "", routingKey: String(repeating: "k", count: 300), mandatory: false,
                    immediate: false)), cut: true)
        method(
            .basicDeliver(
                BasicDeliver(consumerTag: hostile, deliveryTag: .max, redelivered: true, exchange: "x", routingKey: ""))
        )
        method(.connectionClose(ConnectionClose(replyCode: 320, replyText: hostile, classId: 60, methodId: 40)))
        method(.channelClose(ChannelClose(replyCode: 999, replyText: "", classId: 0, methodId: 0)))
        method(.connectionBlocked(ConnectionBlocked(reason: hostile)))
        let properties = FieldTable([
            .init(key: "product", value: .longString(LongString(Array(hostile.utf8)))),
            .init(key: "version", value: .longString(LongString(Array("1.0".utf8)))),
            .init(
                key: "connection_name", value: .longString(LongString(Array(String(repeating: "n\"", count: 50).utf8)))),
        ])
        method(
            .connectionStartOk(
                ConnectionStartOk(
                    clientProperties: properties, mechanism: "PLAIN",
                    response: LongString([0] + Array("alice\u{7}\0pw".utf8)), locale: "en_US")))
        method(.connectionTune(ConnectionTune(channelMax: 0, frameMax: .max, heartbeat: 60)))
        method(
            .queueDeclare(
                QueueDeclare(
                    ticket: 0, queue: hostile, passive: false, durable: true, exclusive: false, autoDelete: true,
                    nowait: false, arguments: properties)))
        // A content header with a content type (flag bit 15) and a delivery mode (flag bit 12).
        let header =
            Encode.u16(60) + Encode.u16(0) + Encode.u64(.max) + Encode.u16(0x9000) + Encode.shortString(hostile) + [2]
        let decoded = try header.withUnsafeBytes { raw in
            var reader = FieldReader(raw)
            return try ContentHeader(from: &reader)
        }
        frames.append(Frame(type: 2, channel: 1, size: 0, content: .header(decoded), cut: true))
        frames.append(Frame(type: 3, channel: 1, size: 0, content: .body(length: 12_345)))
        frames.append(Frame(type: 8, channel: 0, size: 0, content: .heartbeat))

        func same(_ text: String, _ write: (inout JSONOutput) -> Void) {
            var expected = JSONOutput()
            JSON.escape(text, into: &expected)
            var out = JSONOutput(capacity: 16)
            out.append(UInt8(ascii: "\""))
            write(&out)
            out.append(UInt8(ascii: "\""))
            #expect(out.string == expected.string)
        }
        for frame in frames {
            same(Describe.frame(frame)) { Describe.write(frame, into: &$0) }
        }
        #expect(Describe.frame(frames[0]).contains("exchange=\"ex\"ch\\ange\\x01\\n"))
        #expect(Describe.frame(frames[1]).hasSuffix("k…\" (cut by the capture: the rest unknown)"))

        let start = Timestamp(nanoseconds: 1_000_000_000)
        for (count, spacing) in [
            (1, 0), (2, 999), (3, 2_500_000), (4, 1_500_000_000), (5, 90_000_000_000), (6, 7_300_000_000_000),
        ] {
            for (classID, methodID, inferred, amqp10) in [
                (0, 0, false, false), (60, 80, false, false), (0, 0, true, false), (0, 1, true, false),
                (0, 0, false, true), (0, 0x14, false, true),
            ] {
                let run = Run(
                    classID: UInt16(classID), methodID: UInt16(methodID), direction: .clientToServer, count: count,
                    first: start, last: Timestamp(nanoseconds: start.nanoseconds + Int64(spacing * (count - 1))),
                    firstPacket: 10, lastPacket: 10 + count, bodyBytes: UInt64(count % 2 * 1000), inferred: inferred,
                    amqp10: amqp10)
                same(AnalyzeReport.runText(run)) { AnalyzeReport.writeRun(run, into: &$0) }
            }
        }
    }

    /// The object writer formats times straight into its bytes: the same text as `Timestamp.utc`, which Foundation's
    /// formatter checks, out to the years nanoseconds since 1970 reach in 64 bits (1677 and 2262).
    @Test func timesWrittenAsBytes() throws {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        for nanoseconds: Int64 in [0, 1_764_658_767_123_456_789, -1_000, -86_400_000_000_000, .max, .min] {
            let t = Timestamp(nanoseconds: nanoseconds)
            var out = JSONOutput()
            var object = JSONObjectWriter(&out, indent: nil)
            object.time("t", t, &out)
            object.end(&out)
            let text = Format.rfc3339(t)
            #expect(out.string == #"{"t":""# + text + #""}"#)
            // Foundation keeps milliseconds: the text up to them is its text.
            let (quotient, remainder) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000)
            let milliseconds = remainder < 0 ? quotient - 1 : quotient
            let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
            #expect(text.prefix(23) == formatter.string(from: date).prefix(23), "\(nanoseconds)")
        }
    }

    @Test func hostileCaptureRendersInert() throws {
        let result = Analysis.analyzeFile(hostileCapture())
        #expect(result.records.count == 1)
        let html = HTMLReport.render([result], version: "test")
        // The only markup is ours: no script element, no event handler, no injected image, nothing unescaped.
        #expect(!html.contains("<script"))
        #expect(!html.contains("<img"))
        #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
        #expect(!html.contains("\u{07}") && !html.contains("\u{1B}"))
        #expect(!html.contains("s3cret-password"), "credentials stay redacted")
        // Strings from the capture are cut: no 10 KB run of one character.
        #expect(!html.contains(String(repeating: "A", count: 3001)))
        let markdown = MarkdownReport.render([result], version: "test")
        #expect(
            !markdown.contains("<script") && !markdown.contains("[link](http://x)")
                && !markdown.contains("s3cret-password"))
        #expect(markdown.contains("\\| \\*\\*bold\\*\\*"))
        let text = AnalyzeReport.text([result])
        #expect(!text.contains("\u{1B}[31m"), "no terminal escape from the capture reaches the terminal")
    }

    /// Golden Markdown of each recorded capture (re-record with AMQPSCOPE_UPDATE_GOLDEN=1).
    @Test(arguments: Paths.recordedCaptures)
    func goldenMarkdown(path: String) throws {
        var result = Analysis.analyzeFile(path)
        let name = URL(fileURLWithPath: path).lastPathComponent
        result.path = name
        let output = MarkdownReport.render([result], version: "golden")
        let file = GoldenReportTests.directory.appendingPathComponent("\(name).md")
        if GoldenReportTests.update {
            try output.write(to: file, atomically: true, encoding: .utf8)
            return
        }
        let golden = try String(contentsOf: file, encoding: .utf8)
        #expect(
            golden == output,
            "\(name).md differs from its golden file (re-record with AMQPSCOPE_UPDATE_GOLDEN=1 if intended)")
    }
}

/// Renders in real headless Chromium: no console errors, the SVG's lanes and RST marker, and a layout that holds.
@Suite("Chromium", .enabled(if: chromiumReady, "chromium is not installed (scripts/setup installs it)"), .serialized)
struct ChromiumTests {
    func run(_ arguments: [String]) throws -> ProcessResult {
        let tool = try #require(chromium, "chromium is not installed")
        return try Tools.run(
            tool,
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--enable-logging=stderr", "--v=0", "--user-data-dir=\(reviewDirectory.path)/profile",
            ] + arguments)
    }

    /// Console messages and refused loads (CSP) in Chromium's log.
    func consoleProblems(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains(":CONSOLE") || $0.contains("Refused to") }
    }

    func write(_ html: String, _ name: String) throws -> URL {
        try FileManager.default.createDirectory(at: reviewDirectory, withIntermediateDirectories: true)
        let url = reviewDirectory.appendingPathComponent(name)
        try html.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func incidentReportRendersWithLanesAndReset() throws {
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("missed-heartbeats-104.pcap").path)
        let page = try write(HTMLReport.render([result], version: "test"), "missed-heartbeats-104.html")
        let png = reviewDirectory.appendingPathComponent("missed-heartbeats-104.png")
        try? FileManager.default.removeItem(at: png)
        let shot = try run(["--window-size=1280,1400", "--screenshot=\(png.path)", page.absoluteString])
        #expect(FileManager.default.fileExists(atPath: png.path), "\(shot.stderr.suffix(500))")
        #expect(((try? FileManager.default.attributesOfItem(atPath: png.path)[.size] as? Int) ?? 0) > 10_000)
        #expect(consoleProblems(shot.stderr).isEmpty, "\(consoleProblems(shot.stderr))")
        // The DOM as Chromium parsed it.
        let dom = try run(["--dump-dom", page.absoluteString]).stdout
        #expect(dom.contains("<g class=\"lane\" data-direction=\"client_to_server\">"))
        #expect(dom.contains("<g class=\"lane\" data-direction=\"server_to_client\">"))
        #expect(dom.contains("<path class=\"rst\""))
        #expect(dom.contains(">ECONNRESET (104)</text>"))
        #expect(dom.contains("class=\"deadline\""))
    }

    /// An AMQP 1.0 incident renders the same way: the client silent past the broker's 2 s idle timeout, its
    /// deadlines, the broker's RST and the client's ECONNRESET; and a missing queue's session error with the link.
    @Test func amqp10ReportRenders() throws {
        let results = ["rabbitmq10-idle-timeout", "rabbitmq10-not-found"].map {
            Analysis.analyzeFile(Paths.captures.appendingPathComponent("amqp10/\($0).pcap").path)
        }
        let page = try write(HTMLReport.render(results, version: "test"), "amqp10.html")
        let png = reviewDirectory.appendingPathComponent("amqp10.png")
        try? FileManager.default.removeItem(at: png)
        let shot = try run(["--window-size=1280,2400", "--screenshot=\(png.path)", page.absoluteString])
        #expect(FileManager.default.fileExists(atPath: png.path), "\(shot.stderr.suffix(500))")
        #expect(consoleProblems(shot.stderr).isEmpty, "\(consoleProblems(shot.stderr))")
        let dom = try run(["--dump-dom", page.absoluteString]).stdout
        #expect(dom.contains("<path class=\"rst\""))
        #expect(dom.contains(">ECONNRESET (104)</text>"))
        #expect(dom.contains("idle-timeout deadline: 1 idle timeout after the last frame"))
        #expect(dom.contains("session-error"))
        #expect(dom.contains("<circle class=\"m-err\""), "the not-found end is drawn as an error")
        #expect(dom.contains("/amq/queue/amqpscope.amqp10.missing"))
    }

    /// The message-flow charts render: both latency histograms, the unacked step chart with its prefetch line.
    @Test func flowChartsRender() throws {
        let result = Analysis.analyzeFile(Paths.captures.appendingPathComponent("flow-confirms-acks.pcap").path)
        let page = try write(HTMLReport.render([result], version: "test"), "flow.html")
        let png = reviewDirectory.appendingPathComponent("flow.png")
        try? FileManager.default.removeItem(at: png)
        let shot = try run(["--window-size=1280,2600", "--screenshot=\(png.path)", page.absoluteString])
        #expect(consoleProblems(shot.stderr).isEmpty, "\(consoleProblems(shot.stderr))")
        let dom = try run(["--dump-dom", page.absoluteString]).stdout
        for chart in ["confirm-latency", "ack-latency", "unacked"] {
            #expect(dom.contains("data-chart=\"\(chart)\""), "\(chart)")
        }
        #expect(dom.contains("<title>prefetch 5</title>"))
        #expect(dom.contains("consumer-saturated") && dom.contains("redelivery-loop"))
    }

    /// A thousand clients that stopped heartbeating at once: one incident, told once with its members, and an
    /// overview of a thousand thin lanes with the wave shaded, rendered by Chromium.
    @Test func thousandConnectionsOneIncident() throws {
        let path = Paths.temporaryFile("thousand.pcap", manyClients(1000))
        let result = Analysis.analyzeFile(path)
        #expect(result.records.count == 1000)
        let incidents = IncidentFinder.incidents(of: AnalyzeReport.stories(result, options: ReportOptions()))
        #expect(incidents.count == 1 && incidents.first?.connections.count == 1000, "\(incidents.map(\.summary))")
        #expect(incidents.first?.code == .missedHeartbeats)
        #expect(incidents.first?.summary.hasPrefix("1000 connections' clients stopped heartbeating") == true)
        // Text and JSON carry it.
        let text = AnalyzeReport.text([result])
        #expect(text.contains("incidents (connections that ended the same way at about the same time):"))
        let json = try JSONSerialization.jsonObject(with: Data(AnalyzeReport.json([result]).utf8)) as! [String: Any]
        let first = (json["incidents"] as? [[String: Any]])?.first
        #expect((first?["connections"] as? [Int])?.count == 1000 && first?["code"] as? String == "missed-heartbeats")
        let html = HTMLReport.render([result], version: "test")
        #expect(html.components(separatedBy: "class=\"ov-lane\"").count - 1 == 1000)
        #expect(html.contains("<rect class=\"wave\""))
        let page = try write(html, "thousand.html")
        let png = reviewDirectory.appendingPathComponent("thousand.png")
        try? FileManager.default.removeItem(at: png)
        let shot = try run(["--window-size=1280,1800", "--screenshot=\(png.path)", page.absoluteString])
        #expect(FileManager.default.fileExists(atPath: png.path), "\(shot.stderr.suffix(500))")
        #expect(consoleProblems(shot.stderr).isEmpty, "\(consoleProblems(shot.stderr))")
        let dom = try run(["--dump-dom", page.absoluteString]).stdout
        #expect(dom.contains("<svg class=\"overview\""))
    }

    /// The console check can fail: a page that breaks the policy is caught.
    @Test func consoleCheckCatchesErrors() throws {
        let bad =
            "<!DOCTYPE html><meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
            + "'none'\"><script>console.error('boom')</script>"
        let page = try write(bad, "negative-control.html")
        #expect(!consoleProblems(try run(["--dump-dom", page.absoluteString]).stderr).isEmpty)
    }

    /// The hostile page stays inert in a real browser and within its layout: its width is the window's.
    @Test func hostilePageStaysInLayout() throws {
        let html = HTMLReport.render([Analysis.analyzeFile(hostileCapture())], version: "test")
        let page = try write(html, "hostile.html")
        let rendered = try run([
            "--window-size=1280,2000", "--screenshot=\(reviewDirectory.path)/hostile.png", page.absoluteString,
        ])
        #expect(consoleProblems(rendered.stderr).isEmpty, "\(consoleProblems(rendered.stderr))")
        let dom = try run(["--dump-dom", page.absoluteString]).stdout
        #expect(!dom.contains("<script") && !dom.contains("<img"))
        // A copy of the same page with a measuring script (and without the policy that forbids scripts) reports
        // the document's width through its title.
        let measuring = html.replacingOccurrences(
            of:
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
                + "'unsafe-inline'\">",
            with: ""
        )
        .replacingOccurrences(
            of: "</body>", with: "<script>document.title='width='+document.documentElement.scrollWidth</script></body>")
        let probe = try write(measuring, "hostile-measure.html")
        let measured = try run(["--window-size=1280,2000", "--dump-dom", probe.absoluteString]).stdout
        let width = measured.range(of: "<title>width=").flatMap { r in
            Int(measured[r.upperBound...].prefix { $0.isNumber })
        }
        #expect(
            width != nil && width! <= 1280,
            "document width \(width.map(String.init) ?? "unknown") exceeds the 1280 px window")
    }
}

/// The seed capture's one client as `count` clients (ports 20000 and up), each starting a millisecond after the last:
/// they all stop heartbeating and are reset within a second. Packets are interleaved in time order.
func manyClients(_ count: Int) -> [UInt8] {
    let bytes = Array(try! Data(contentsOf: Paths.captures.appendingPathComponent("missed-heartbeats-104.pcap")))
    var packets: [(time: Int64, header: [UInt8], data: [UInt8])] = []
    var at = 24
    var original: [(Int64, [UInt8], [UInt8])] = []
    func u32(_ i: Int) -> Int64 {
        Int64(bytes[i]) | Int64(bytes[i + 1]) << 8 | Int64(bytes[i + 2]) << 16 | Int64(bytes[i + 3]) << 24
    }
    while at + 16 <= bytes.count {
        let caplen = Int(u32(at + 8))
        original.append(
            (
                u32(at) * 1_000_000 + u32(at + 4), Array(bytes[at + 8..<at + 16]),
                Array(bytes[at + 16..<at + 16 + caplen])
            ))
        at += 16 + caplen
    }
    for k in 0..<count {
        for (time, lengths, data) in original {
            var d = data
            let tcp = 14 + Int(d[14] & 0x0f) * 4
            let port = UInt16(20000 + k)
            for offset in [tcp, tcp + 2] where Int(d[offset]) << 8 | Int(d[offset + 1]) == 37554 {
                d[offset] = UInt8(port >> 8)
                d[offset + 1] = UInt8(port & 0xff)
            }
            packets.append((time + Int64(k) * 1000, lengths, d))
        }
    }
    packets.sort { $0.time < $1.time }
    var out = Array(bytes[0..<24])
    for p in packets {
        for v in [p.time / 1_000_000, p.time % 1_000_000] {
            out += [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24 & 0xff)]
        }
        out += p.header + p.data
    }
    return out
}
