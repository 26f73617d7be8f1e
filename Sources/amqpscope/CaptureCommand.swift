// `amqpscope capture`: watch an interface, tell each connection's story as it happens, warn before a broker
// drops a connection for missed heartbeats, and keep the raw packets for re-analysis.
import AMQPScope
import AMQPScopeCapture
import ArgumentParser
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Set by SIGINT/SIGTERM; the capture loop wakes at least every read timeout and checks it.
let stopRequested = Atomic<Bool>(false)
/// The live libpcap handle (as an integer), so the signal handler can break a blocking read at once.
let activeHandle = Atomic<Int>(0)

enum LiveFormat: String, ExpressibleByArgument, CaseIterable {
    case text, jsonl
}

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture live from an interface and tell each AMQP connection's story as it happens.",
        discussion: """
            Shaped like tcpdump: trailing words are a BPF filter (default: tcp port 5672, plus any --port). \
            Prints each connection's timeline events and diagnoses as they happen, and a heartbeat-overdue \
            warning as soon as one side of a connection has been silent past its heartbeat interval while the \
            other keeps sending, before the broker drops it. Ctrl-C (or SIGTERM, -c, --duration, -G with -W) stops: \
            the pcap is flushed, the final report printed with libpcap's received and dropped counts, and the exit \
            code is 0. Capturing needs CAP_NET_RAW: without it the exit code is 3. An interface that goes away ends \
            the capture the same way, with exit code 4. --metrics-listen serves Prometheus metrics on /metrics.
            """)

    @Option(
        name: [.customShort("i"), .customLong("interface")],
        help: "The interface to capture on (see --list-interfaces).")
    var interface: String?

    @Flag(help: "List the interfaces libpcap can capture on, and exit.")
    var listInterfaces = false

    @Option(name: .customShort("c"), help: "Stop after this many packets.")
    var count: Int?

    @Option(help: "Stop after this many seconds (tshark's -a duration:N).")
    var duration: Double?

    @Option(
        name: .customShort("G"),
        help: ArgumentHelp(
            "With -w: start a new file every this many seconds, its name passed through strftime (as tcpdump -G); "
                + "with -W, stop after that many files.", valueName: "seconds"))
    var rotateSeconds: Int?

    @Option(
        name: .customShort("B"),
        help: ArgumentHelp(
            "The kernel capture buffer, in KiB (as tcpdump -B; default \(CaptureCommand.defaultBufferKiB), not "
                + "libpcap's 2048: see the README's Live capture under load).", valueName: "KiB"))
    var bufferKiB: Int?

    /// The kernel buffer when -B is not given. Measured with scripts/load-test: at 200,000 packets/s libpcap's 2 MiB
    /// dropped 11 % and 8 MiB 1.6 %, while 64 MiB dropped nothing; amqpscope's work comes in bursts (a connection's
    /// end, a hand-off to the printer) that a small buffer cannot absorb, where tcpdump's does not.
    static let defaultBufferKiB = 65536

    @Flag(help: "Hand each packet over as it arrives, not in blocks (lower latency, more CPU).")
    var immediateMode = false

    @Option(
        help: ArgumentHelp(
            "Serve Prometheus metrics at http://ADDR:PORT/metrics (OpenMetrics when asked).", valueName: "addr:port"))
    var metricsListen: String?

    @Flag(help: "Label per-queue metrics with queue names (unbounded with many queues: off by default).")
    var metricsLabelQueues = false

    @Option(name: .customShort("s"), help: "Bytes kept per packet (snap length).")
    var snaplen: Int = 262_144

    @Option(name: .customShort("w"), help: "Also write the raw packets to this pcap file, for later re-analysis.")
    var writeFile: String?

    @Option(
        name: .customShort("C"),
        help: "With -w: start a new file when the current one reaches this many millions of bytes.")
    var fileSize: Int?

    @Option(name: .customShort("W"), help: "With -C: keep at most this many files, overwriting the oldest.")
    var fileCount: Int?

    @Option(
        name: .customShort("Z"),
        help: "After opening the interface, drop privileges to this user (before opening -w files).")
    var user: String?

    @Option(help: "Output: text (one line per event) or jsonl (one JSON object per line).")
    var format: LiveFormat = .text

    /// Live, connections silent this long are ended unless --idle-timeout says otherwise: memory stays bounded for
    /// captures that run for days.
    static let defaultLiveIdleTimeout: Double = 7200

    @OptionGroup var pipeline: PipelineOptions

    @Argument(help: "A BPF filter, in tcpdump's syntax.")
    var filter: [String] = []

    func validate() throws {
        if !listInterfaces && interface == nil {
            throw ValidationError("name an interface with -i (see --list-interfaces)")
        }
        if let count, count <= 0 { throw ValidationError("-c must be at least 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if let rotateSeconds {
            if rotateSeconds <= 0 { throw ValidationError("-G must be a positive number of seconds") }
            if writeFile == nil { throw ValidationError("-G needs -w") }
        }
        // libpcap takes the size in bytes as a C int.
        if let bufferKiB, bufferKiB <= 0 || bufferKiB > Int(Int32.max) / 1024 {
            throw ValidationError("-B must be between 1 and \(Int(Int32.max) / 1024) KiB")
        }
        if let metricsListen, Self.listenAddress(metricsListen) == nil {
            throw ValidationError("--metrics-listen \(metricsListen): use ADDR:PORT, e.g. 127.0.0.1:9465 or [::]:9465")
        }
        if snaplen < 64 || snaplen > 262_144 { throw ValidationError("-s must be between 64 and 262144") }
        if fileSize != nil && writeFile == nil { throw ValidationError("-C needs -w") }
        if fileCount != nil && fileSize == nil && rotateSeconds == nil { throw ValidationError("-W needs -C or -G") }
        if let fileSize, fileSize <= 0 { throw ValidationError("-C must be at least 1") }
        if let fileCount, fileCount <= 0 { throw ValidationError("-W must be at least 1") }
    }

    /// "127.0.0.1:9465", "[::1]:9465", ":9465" (every address).
    static func listenAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    var bpf: String {
        if !filter.isEmpty { return filter.joined(separator: " ") }
        return (["tcp port 5672"] + pipeline.ports.map { "tcp port \($0)" }).joined(separator: " or ")
    }

    func run() throws {
        if listInterfaces {
            do {
                for device in try AMQPScopeCapture.listInterfaces() {
                    print(device.description.map { "\(device.name)\t\($0)" } ?? device.name)
                }
            } catch {
                printError("amqpscope: \(error)")
                throw ExitCode(Exit.unreadable)
            }
            return
        }
        let source: PcapSource
        do {
            source = try PcapSource.openLive(
                interface: interface!, snapshotLength: snaplen, timeoutMilliseconds: 200, filter: bpf,
                bufferBytes: (bufferKiB ?? Self.defaultBufferKiB) * 1024, immediate: immediateMode)
        } catch {
            printError("amqpscope: \(error)")
            throw ExitCode(Exit.unreadable)
        }
        if let user { try dropPrivileges(to: user) }
        var writer: PcapWriter?
        if let writeFile {
            do {
                writer = try PcapWriter(
                    path: writeFile, linkType: source.linkType, snapshotLength: snaplen,
                    rotateBytes: fileSize.map { $0 * 1_000_000 }, fileCount: fileCount, rotateSeconds: rotateSeconds)
            } catch {
                printError("amqpscope: \(error)")
                throw ExitCode(Exit.unreadable)
            }
        }
        var metrics: (exporter: MetricsExporter, server: MetricsServer)?
        if let metricsListen, let (host, port) = Self.listenAddress(metricsListen) {
            let exporter = MetricsExporter(labelQueues: metricsLabelQueues, version: AMQPScopeVersion.string)
            do {
                let server = try MetricsServer(host: host, port: port, exporter: exporter)
                metrics = (exporter, server)
                printError("amqpscope: metrics at http://\(metricsListen)/metrics")
            } catch {
                printError("amqpscope: cannot listen on \(metricsListen) for metrics: \(error)")
                throw ExitCode(Exit.unreadable)
            }
        }
        defer { metrics?.server.stop() }
        activeHandle.store(source.handleBits, ordering: .relaxed)
        installSignalHandlers()
        printError("amqpscope: listening on \(interface!), link type \(source.linkType.name), filter \"\(bpf)\"")

        var configuration = try pipeline.engineConfiguration(recordFrames: false)
        configuration.streamEntries = true
        // Live reports draw no unacked chart (the review's HTML does).
        configuration.keepsUnackedTrace = false
        // Clients append their secrets to the key log after the capture has seen their handshake: re-read it.
        configuration.keyLogMayGrow = pipeline.keylog != nil
        var watcher = pipeline.keylog.map { KeyLogWatcher(path: $0) }
        configuration.reassembly.idleTimeout = Int64((pipeline.idleTimeout ?? Self.defaultLiveIdleTimeout) * 1e9)
        var printer = LivePrinter(format: format)
        printer.metrics = metrics?.exporter
        let storyOptions = printer.storyOptions
        // The printer (events, diagnoses, metrics) runs on the second core; this thread reads and decodes.
        let output = LiveOutput(printer)
        var engine = Engine(linkType: source.linkType, configuration: configuration)
        let started = Clock.now()
        var lastCheck = Timestamp(nanoseconds: 0)
        var lastMetrics = Timestamp(nanoseconds: 0)
        var packets = 0
        var failure: CaptureError?
        var batch = LiveBatch()
        /// Hands what the engine made since the last hand-off to the printer, with the metrics once a second.
        func handOff(_ now: Timestamp, forceMetrics: Bool = false) {
            LiveBatch.collect(&engine, into: &batch)
            batch.now = now
            if metrics != nil, forceMetrics || now.since(lastMetrics) >= 1_000_000_000 {
                lastMetrics = now
                batch.metrics = MetricsUpdate(
                    totals: engine.trafficTotals(), overdueNow: engine.overdueNow(now: now),
                    pcap: source.statistics().map {
                        CaptureStatistics(
                            received: Int($0.received), dropped: Int($0.dropped),
                            interfaceDropped: Int($0.interfaceDropped))
                    }, captured: packets, buffered: engine.bufferedBytes + engine.codecBufferedBytes,
                    tracked: engine.liveConnections)
            }
            output.send(batch)
            batch = LiveBatch()
        }

        // The options are read once: an argument parser's property wrapper costs a call on every packet.
        let stopAfter = count
        let stopAt = duration.map { started.adding(nanoseconds: Int64($0 * 1e9)) }
        reading: while !stopRequested.load(ordering: .relaxed) {
            let result: ReadResult
            do {
                result = try source.next()
            } catch {
                printError("amqpscope: \(error)")
                failure = error
                break reading
            }
            switch result {
            case .packet(let header):
                packets += 1
                if let writer {
                    do { try writer.write(header, source.packetBytes) } catch {
                        printError("amqpscope: \(error)")
                        writer.close()
                    }
                    if writer.limitReached {
                        printError("amqpscope: -G with -W: \(fileCount ?? 0) files written")
                        break reading
                    }
                }
                engine.process(header, source.packetBytes)
                let checked = Self.check(
                    now: header.timestamp, last: &lastCheck, engine: &engine, into: &batch, options: storyOptions,
                    keyLog: &watcher)
                if checked || engine.pendingOutput >= LiveBatch.handOffEntries { handOff(header.timestamp) }
                if let stopAfter, packets >= stopAfter { break reading }
            case .timeout:
                let now = Clock.now()
                _ = Self.check(
                    now: now, last: &lastCheck, engine: &engine, into: &batch, options: storyOptions, keyLog: &watcher)
                handOff(now)
            case .end:
                break reading
            }
            if let stopAt, Clock.now() >= stopAt { break reading }
        }

        writer?.close()
        engine.finish()
        handOff(Clock.now(), forceMetrics: true)
        output.finish(linkType: engine.linkType, counts: engine.counts, interface: interface!)
        if let stats = source.statistics() {
            printError(
                "amqpscope: \(packets) packets captured, \(stats.received) received by filter, \(stats.dropped) "
                    + "dropped by kernel, \(stats.interfaceDropped) dropped by interface"
            )
        }
        if let writer {
            printError(
                "amqpscope: wrote \(writer.filesOpened) file\(writer.filesOpened == 1 ? "" : "s"), last "
                    + "\(writer.currentPath)"
            )
        }
        if let failure {
            // The interface went away (or the read failed): everything up to here is reported, the exit says so.
            printError("amqpscope: the capture on \(interface!) ended early: \(failure.message)")
            throw ExitCode(Exit.partial)
        }
    }

    /// At most every 100 ms (of packet time, or of the clock on read timeouts): idle eviction, overdue heartbeats and
    /// flow warnings, into `batch`. Returns whether it ran (the batch is then handed off).
    static func check(
        now: Timestamp, last: inout Timestamp, engine: inout Engine, into batch: inout LiveBatch,
        options: StoryOptions, keyLog watcher: inout KeyLogWatcher?
    ) -> Bool {
        guard now.since(last) >= 100_000_000 else { return false }
        last = now
        if let keyLog = watcher?.poll() { engine.update(keyLog: keyLog) }
        engine.tick(now: now)
        for overdue in engine.overdueHeartbeats(now: now) {
            batch.overdue.append((overdue, engine.openRecord(overdue.info.id)))
        }
        batch.alerts += engine.flowAlerts(now: now, options: options)
        return true
    }
}

/// Re-reads the key log when it has grown (clients append to it as they connect).
struct KeyLogWatcher {
    let path: String
    var size = -1

    /// The whole key log when the file's size changed since the last look, else nil.
    mutating func poll() -> KeyLog? {
        var info = stat()
        guard stat(path, &info) == 0, Int(info.st_size) != size else { return nil }
        size = Int(info.st_size)
        return try? readKeyLog(path)
    }
}

/// Prints live events and keeps the bounded state that needs: which diagnoses were already printed, and the
/// records of the most recently ended connections for the final report.
struct LivePrinter {
    let format: LiveFormat
    /// Thresholds for the message-flow warnings.
    var storyOptions = StoryOptions()
    var printed: [ConnectionID: Set<String>] = [:]
    /// Metrics to count diagnoses and ended connections into (with --metrics-listen).
    var metrics: MetricsExporter?
    var recent: [ConnectionRecord] = []
    static let recentKept = 200

    /// Prints one hand-off: overdue heartbeats and flow warnings, the events in the order they were made, the
    /// diagnoses of open connections with key events (as they become true), then those of the connections that ended.
    mutating func print(_ batch: LiveBatch) {
        for (o, record) in batch.overdue {
            metrics?.overdueStarted(o)
            overdue(o, now: batch.now, story: record.map { Story($0) })
        }
        for alert in batch.alerts { flowAlert(alert, now: batch.now) }
        for (info, entry) in batch.entries { event(info, entry) }
        for record in batch.touched { diagnoses(Story(record)) }
        for record in batch.ended {
            metrics?.ended(record)
            diagnoses(Story(record))
            printed[record.info.id] = nil
            recent.append(record)
            // Trimmed in batches: removing the first of 200 records on every end would move the other 199.
            if recent.count >= 2 * Self.recentKept { recent.removeFirst(recent.count - Self.recentKept) }
        }
        if let m = batch.metrics {
            metrics?.update(
                m.totals, overdueNow: m.overdueNow, pcap: m.pcap, captured: m.captured, buffered: m.buffered,
                tracked: m.tracked)
        }
        writeOutput()
    }

    func prefix(_ info: ConnectionInfo) -> String { "[\(info.id.rawValue) \(info.client)>\(info.server)]" }

    mutating func event(_ info: ConnectionInfo, _ entry: TimelineEntry) {
        switch format {
        case .text:
            let line = AnalyzeReport.entryLine(entry)
            emit(
                "\(Format.time(line.time).suffix(15)) \(prefix(info)) \(line.arrow) #\(line.packet) "
                    + "\(Format.safe(line.text, limit: 300))"
            )
        case .jsonl:
            // The connection's members are serialised once per connection, the entry's after them.
            if cachedInfo?.id != info.id {
                cachedInfo = info
                var prefix = JSONOutput()
                JSON.object([("type", .string("event"))] + connectionMembers(info)).write(into: &prefix, indent: nil)
                prefix.removeLast()  // "}"
                cachedPrefix = prefix.bytes
            }
            scratch.json.removeAll()
            AnalyzeReport.writeEntry(entry, into: &scratch.json, indent: nil)
            guard scratch.json.count > 2 else { return }
            output.append(contentsOf: cachedPrefix)
            output.append(UInt8(ascii: ","))
            scratch.json.withBytes(from: 1) { output.append(contentsOf: $0) }
            output.append(UInt8(ascii: "\n"))
            if output.count >= Self.outputFlushBytes { writeOutput() }
        }
    }

    mutating func diagnoses(_ story: Story) {
        let id = story.record.info.id
        for d in story.diagnoses {
            let key = "\(d.code) \(d.side?.rawValue ?? "-") \(d.evidence.first?.packetNumber ?? 0)"
            guard printed[id, default: []].insert(key).inserted else { continue }
            metrics?.diagnosis(d)
            switch format {
            case .text:
                emit(
                    "\(Format.time(d.evidence.last?.time ?? story.record.lastTime).suffix(15)) "
                        + "\(prefix(story.record.info)) "
                        + "\(d.severity.rawValue.uppercased()) \(d.code): \(Format.safe(d.summary, limit: 2000))")
                for detail in d.details { emit("    \(Format.safe(detail, limit: 2000))") }
            case .jsonl:
                let members = connectionMembers(story.record.info)
                emitObject(type: "diagnosis") { o, out in
                    for (key, value) in members { o.member(key, value, &out) }
                    AnalyzeReport.writeDiagnosis(d, &o, &out)
                }
            }
        }
    }

    mutating func flowAlert(_ alert: FlowAlert, now: Timestamp) {
        switch format {
        case .text:
            emit(
                "\(Format.time(now).suffix(15)) \(prefix(alert.info)) WARNING \(alert.code): "
                    + Format.safe(alert.summary, limit: 2000))
        case .jsonl:
            emit(
                JSON.object(
                    [("type", .string("warning")), ("code", .string(alert.code.rawValue))]
                        + connectionMembers(alert.info)
                        + [("time", .string(Format.rfc3339(now))), ("summary", .string(alert.summary))]
                ).serialized())
        }
    }

    mutating func overdue(_ o: HeartbeatOverdue, now: Timestamp, story: Story?) {
        let who = story?.describe(o.side) ?? "the \(o.side)"
        let last = "last frame #\(o.lastFramePacket) at \(Format.time(o.lastFrame).suffix(15))"
        let window =
            "between \(Format.time(o.earliestDrop).suffix(15)) and \(Format.time(o.latestDrop).suffix(15)), unless "
            + "the \(o.side) sends."
        let summary =
            o.idleTimeOutMilliseconds.map { ms in
                "\(who) has sent nothing for \(Format.duration(nanoseconds: o.silentFor)) (the \(o.side.peer) "
                    + "advertised idle-time-out \(ms) ms; \(last)) while the \(o.side.peer) keeps sending; the "
                    + "\(o.side.peer) may close once its idle timeout has passed, and peers usually allow twice it: "
                    + window
            }
            ?? "\(who) has sent nothing for \(Format.duration(nanoseconds: o.silentFor)) (heartbeat \(o.heartbeat) s, "
            + "\(last)) while the \(o.side.peer) keeps sending; RabbitMQ drops a peer after two to three silent "
            + "intervals: "
            + window
        switch format {
        case .text:
            emit("\(Format.time(now).suffix(15)) \(prefix(o.info)) WARNING heartbeat-overdue: \(summary)")
        case .jsonl:
            emit(
                JSON.object(
                    [("type", .string("warning")), ("code", .string("heartbeat-overdue"))] + connectionMembers(o.info)
                        + [
                            ("time", .string(Format.rfc3339(now))), ("side", .string(o.side.rawValue)),
                            ("heartbeat", .int(o.heartbeat)),
                            ("idle_timeout_ms", .optional(o.idleTimeOutMilliseconds)),
                            ("last_frame", .string(Format.rfc3339(o.lastFrame))),
                            ("last_frame_packet", .int(o.lastFramePacket)),
                            ("silent_seconds", .double(Double(o.silentFor) / 1e9)),
                            (
                                "drop_between",
                                .array([.string(Format.rfc3339(o.earliestDrop)), .string(Format.rfc3339(o.latestDrop))])
                            ),
                            ("summary", .string(summary)),
                        ]
                ).serialized())
        }
    }

    /// One JSON line: an object whose `type` comes first and whose other members `body` writes.
    mutating func emitObject(
        type: StaticString, _ body: (inout JSONObjectWriter, inout JSONOutput) -> Void
    ) {
        var out = JSONOutput()
        var o = JSONObjectWriter(&out, indent: nil)
        o.name("type", type, &out)
        body(&o, &out)
        o.end(&out)
        emit(out.string)
    }

    func connectionMembers(_ info: ConnectionInfo) -> [(String, JSON)] {
        [
            ("connection", .int(info.id.rawValue)), ("client", .string(info.client.description)),
            ("server", .string(info.server.description)),
        ]
    }

    /// Everything at the end: the stories of the connections (the most recent ones, for a long capture).
    mutating func finalReport(linkType: LinkType, counts: PacketCounts, interface: String) {
        let records = recent.suffix(Self.recentKept).sorted { $0.info.id < $1.info.id }
        let result = CaptureResult(
            path: "live capture on \(interface)", linkType: linkType, counts: counts,
            records: records, error: nil, unreadable: false)
        switch format {
        case .text:
            emit("")
            emit(
                "final report"
                    + (records.count == Self.recentKept ? " (the \(Self.recentKept) most recent connections)" : ""))
            emit(AnalyzeReport.text([result]), terminator: "")
        case .jsonl:
            for story in AnalyzeReport.stories(result, options: ReportOptions()) {
                emitObject(type: "connection") { o, out in
                    AnalyzeReport.writeConnection(story, capture: 0, options: ReportOptions(), &o, &out)
                }
            }
        }
    }

    /// Output waits here and goes out in one write at every timer tick (100 ms), on a quiet read timeout, at the end,
    /// or when this much has gathered: a write per line cost more than making the line.
    var output: [UInt8] = []
    static let outputFlushBytes = 1 << 16
    var cachedInfo: ConnectionInfo?
    var cachedPrefix: [UInt8] = []
    /// Where each entry is written before it joins the output, kept from one entry to the next.
    let scratch = Scratch()

    final class Scratch {
        var json = JSONOutput(capacity: 4096)
    }

    mutating func emit(_ line: String, terminator: String = "\n") {
        output.append(contentsOf: line.utf8)
        output.append(contentsOf: terminator.utf8)
        if output.count >= Self.outputFlushBytes { writeOutput() }
    }

    mutating func writeOutput() {
        guard !output.isEmpty else { return }
        fflushStandardOutput()  // anything print()ed before goes first
        output.withUnsafeBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = write(1, bytes.baseAddress! + done, bytes.count - done)
                if n > 0 {
                    done += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break  // stdout is gone (a closed pipe): the capture goes on
                }
            }
        }
        output.removeAll(keepingCapacity: true)
    }
}

/// The wall clock, for a live capture's timers only (everything below the CLI takes time as a value).
enum Clock {
    static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(seconds: Int64(spec.tv_sec), nanoseconds: Int64(spec.tv_nsec))
    }
}

func fflushStandardOutput() { fflush(nil) }

func installSignalHandlers() {
    signal(SIGINT) { _ in
        stopRequested.store(true, ordering: .relaxed)
        PcapSource.breakLoop(handleBits: activeHandle.load(ordering: .relaxed))
    }
    signal(SIGTERM) { _ in
        stopRequested.store(true, ordering: .relaxed)
        PcapSource.breakLoop(handleBits: activeHandle.load(ordering: .relaxed))
    }
}

/// tcpdump's -Z: give up root after the device is open.
func dropPrivileges(to user: String) throws {
    guard let entry = getpwnam(user) else {
        printError("amqpscope: -Z: no such user \(user)")
        throw ExitCode(Exit.usage)
    }
    let uid = entry.pointee.pw_uid
    let gid = entry.pointee.pw_gid
    guard setgroups(0, nil) == 0 || getuid() != 0, setgid(gid) == 0, setuid(uid) == 0 else {
        printError("amqpscope: -Z: cannot change to user \(user): \(String(cString: strerror(errno)))")
        throw ExitCode(Exit.unreadable)
    }
}

/// What the capture loop hands to the printer's thread: what the engine made since the last hand-off, taken out of
/// the engine (records are values: the printer's thread never touches the engine).
struct LiveBatch: Sendable {
    var entries: [(ConnectionInfo, TimelineEntry)] = []
    /// Open connections with key events in `entries`, as they stand (their diagnoses may have become true).
    var touched: [ConnectionRecord] = []
    var ended: [ConnectionRecord] = []
    /// Sides newly overdue, with their connection's record as it stands.
    var overdue: [(HeartbeatOverdue, ConnectionRecord?)] = []
    var alerts: [FlowAlert] = []
    var now = Timestamp(nanoseconds: 0)
    var metrics: MetricsUpdate?

    /// Entries and ended connections waiting in the engine before they are handed off between two ticks.
    static let handOffEntries = 8192

    /// Takes the engine's new entries and ended records into `batch`, with the records of the open connections that
    /// had key events.
    static func collect(_ engine: inout Engine, into batch: inout LiveBatch) {
        let entries = engine.takeLiveEntries()
        let ended = engine.takeEnded()
        let endedIDs = Set(ended.map(\.info.id))
        var seen = Set<ConnectionID>()
        for (info, entry) in entries {
            if case .run = entry { continue }
            guard !endedIDs.contains(info.id), seen.insert(info.id).inserted, let record = engine.openRecord(info.id)
            else { continue }
            batch.touched.append(record)
        }
        batch.entries += entries
        batch.ended += ended
    }
}

/// The metrics as of one moment, computed on the capture's thread and applied on the printer's.
struct MetricsUpdate: Sendable {
    var totals: TrafficTotals
    var overdueNow: [HeartbeatOverdue]
    var pcap: CaptureStatistics?
    var captured: Int
    var buffered: Int
    var tracked: Int
}

/// The printer on its own serial queue. At most `inFlight` hand-offs wait: when the printer falls behind, the capture
/// waits for it (and the kernel's buffer, then its drop count, tell).
final class LiveOutput: @unchecked Sendable {
    private var printer: LivePrinter
    private let queue = DispatchQueue(label: "amqpscope.live-output")
    private let slots = DispatchSemaphore(value: 8)

    init(_ printer: LivePrinter) { self.printer = printer }

    func send(_ batch: LiveBatch) {
        slots.wait()
        queue.async {
            self.printer.print(batch)
            self.slots.signal()
        }
    }

    /// Waits for everything sent, then prints the final report.
    func finish(linkType: LinkType, counts: PacketCounts, interface: String) {
        queue.sync {
            printer.finalReport(linkType: linkType, counts: counts, interface: interface)
            printer.writeOutput()
        }
    }
}
