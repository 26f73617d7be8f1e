// The amqpscope command. Only the executable bootstraps logging and decides exit codes:
//   0 analysed; 1 a diagnosis at --fail-on severity; 2 usage error; 3 an input could not be read at all;
//   4 an input was read only in part (truncated or corrupt).
import AMQPScope
import ArgumentParser
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

enum Exit {
    static let ok: Int32 = 0
    static let diagnosis: Int32 = 1
    static let usage: Int32 = 2
    static let unreadable: Int32 = 3
    static let partial: Int32 = 4
}

struct AMQPScopeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqpscope",
        abstract:
            "Explains AMQP incidents from packets: who stopped heartbeating, who closed, who reset, which error each "
            + "socket got.",
        discussion: """
            Exit codes: 0 analysed; 2 usage error; 3 an input could not be read at all; \
            4 an input was read only in part (truncated or corrupt: what was read is still reported).
            """,
        version: AMQPScopeVersion.string,
        subcommands: [Analyze.self, Report.self, CaptureCommand.self],
        defaultSubcommand: nil
    )
}

enum AMQPScopeVersion {
    static let string = "0.1.0"
}

/// Options every analysing subcommand shares.
struct PipelineOptions: ParsableArguments {
    @Option(
        name: .customLong("port"),
        help: "Another TCP port an AMQP server listens on (repeatable; 5672 and 5671 always count).")
    var ports: [UInt16] = []

    @Flag(help: "Show AMQP passwords and other secrets instead of redacting them.")
    var showCredentials = false

    @Flag(help: "Keep and show message bodies (off by default: bodies may hold personal data).")
    var showBodies = false

    @Option(help: "Out-of-order bytes buffered per direction before the hole is skipped as a gap (bytes).")
    var maxBufferPerDirection: Int = ReassemblyConfiguration().maximumBufferedBytesPerDirection

    @Option(help: "Out-of-order bytes buffered over all connections before holes are skipped (bytes).")
    var maxBufferTotal: Int = ReassemblyConfiguration().maximumBufferedBytesTotal

    @Option(
        help: "End connections silent for this many seconds of capture time (default: keep until the capture ends).")
    var idleTimeout: Double?

    @Option(help: "Connections tracked at once; past it the least recently active is ended and reported.")
    var maxConnections: Int = ReassemblyConfiguration().maximumConnections

    @Flag(help: .hidden)
    var byteAtATime = false

    /// Reads, decodes and builds the timeline on one thread (a check that the second thread never changes the answer).
    @Flag(help: .hidden)
    var singleThread = false

    @Option(
        name: .customLong("keylog"),
        help: "Decrypt TLS with this NSS key log (SSLKEYLOGFILE); read only when given, never echoed.")
    var keylog: String?

    func validate() throws {
        guard maxBufferPerDirection >= 0, maxBufferTotal >= 0 else {
            throw ValidationError("buffer limits must not be negative")
        }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be at least 1") }
        if let idleTimeout, !(idleTimeout > 0) {
            throw ValidationError("--idle-timeout must be a positive number of seconds")
        }
        if ports.contains(0) { throw ValidationError("--port 0 is not a port") }
    }

    func engineConfiguration(recordFrames: Bool) throws -> EngineConfiguration {
        var configuration = EngineConfiguration()
        if let keylog { configuration.keyLog = try readKeyLog(keylog) }
        configuration.reassembly.serverPorts.formUnion(ports)
        configuration.reassembly.maximumBufferedBytesPerDirection = maxBufferPerDirection
        configuration.reassembly.maximumBufferedBytesTotal = maxBufferTotal
        configuration.reassembly.maximumConnections = maxConnections
        configuration.reassembly.idleTimeout = idleTimeout.map { Int64($0 * 1e9) }
        configuration.codec.showCredentials = showCredentials
        configuration.codec.keepBodies = showBodies
        configuration.recordFrames = recordFrames
        configuration.byteAtATime = byteAtATime
        configuration.timelineThread = !singleThread
        // Property values are shown only with frames or bodies; otherwise they are checked, not built.
        configuration.codec.decodeProperties = recordFrames || showBodies
        return configuration
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

enum FailOn: String, ExpressibleByArgument, CaseIterable {
    case warning, error
    var severity: Diagnosis.Severity { self == .warning ? .warning : .error }
}

/// Parses --from/--to: "+SECONDS" from the first packet of the capture, "HH:MM:SS[.frac]" on the capture's first
/// day (UTC), "YYYY-MM-DD HH:MM:SS[.frac]" or "YYYY-MM-DDTHH:MM:SS[.frac][Z]" (UTC), or Unix seconds.
enum TimeArgument {
    static func parse(_ text: String, captureStart: Timestamp?) -> Timestamp? {
        if text.hasPrefix("+"), let seconds = Double(text.dropFirst()), let start = captureStart {
            return start.adding(nanoseconds: Int64(seconds * 1e9))
        }
        if let seconds = Double(text), !text.contains(":") { return Timestamp(nanoseconds: Int64(seconds * 1e9)) }
        var rest = Substring(text.hasSuffix("Z") ? String(text.dropLast()) : text)
        var dayStart: Int64
        if rest.count >= 10, rest.dropFirst(4).first == "-" {
            let parts = rest.prefix(10).split(separator: "-").compactMap { Int64($0) }
            guard parts.count == 3 else { return nil }
            dayStart = days(year: parts[0], month: parts[1], day: parts[2]) * 86_400
            rest = rest.dropFirst(10).drop { $0 == " " || $0 == "T" }
        } else {
            guard let start = captureStart else { return nil }
            dayStart = start.nanoseconds / 1_000_000_000 / 86_400 * 86_400
        }
        let clock = rest.split(separator: ":")
        guard clock.count == 3, let h = Int64(clock[0]), let m = Int64(clock[1]), let s = Double(clock[2]) else {
            return nil
        }
        return Timestamp(nanoseconds: (dayStart + h * 3600 + m * 60) * 1_000_000_000 + Int64(s * 1e9))
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

/// Which connections and what time window a report shows: shared by analyze and report.
struct ViewOptions: ParsableArguments {
    @Option(name: .customLong("connection"), help: "Only this connection id (repeatable).")
    var connectionIDs: [Int] = []

    @Option(
        help: ArgumentHelp(
            "Only what happened from this time: +SECONDS from the capture's start, HH:MM:SS[.frac] (UTC), or a full "
                + "UTC date and time.")
    )
    var from: String?

    @Option(help: "Only what happened up to this time (same forms as --from).")
    var to: String?

    @Option(help: "With heartbeats off, report silences at least this many seconds long.")
    var idle: Double = 30

    @Option(help: "slow-confirms when the 99th percentile of publish-to-confirm latency is above this many seconds.")
    var slowConfirm: Double = 1

    @Option(
        help: "consumer-saturated when a consumer holds its prefetch of unacknowledged deliveries this many seconds.")
    var saturated: Double = 5

    @Option(help: "redelivery-loop when one message (by message-id) is redelivered at least this many times.")
    var redeliveryLoop: Int = 3

    @Option(
        help: ArgumentHelp(
            "RabbitMQ's log (3.x or 4.x text, or JSON): its lines about each connection join the connection's "
                + "timeline and diagnoses.", valueName: "FILE"))
    var brokerLog: String?

    /// The broker log, read and parsed; exits 3 naming the file when it cannot be read.
    func readBrokerLog() throws -> BrokerLog? {
        guard let brokerLog else { return nil }
        let bytes: [UInt8]
        switch readWholeFile(brokerLog, limit: 4 << 30) {
        case .failure(let error):
            printError("amqpscope: \(brokerLog): \(error.reason)")
            throw ExitCode(Exit.unreadable)
        case .success(let read): bytes = read
        }
        let log = BrokerLog.parse(String(decoding: bytes, as: UTF8.self))
        if log.lines.isEmpty {
            printError("amqpscope: \(brokerLog): no line of it names a client connection (not a RabbitMQ log?)")
        }
        return log
    }

    func validate() throws {
        guard idle > 0 else { throw ValidationError("--idle must be a positive number of seconds") }
        guard slowConfirm > 0 else { throw ValidationError("--slow-confirm must be a positive number of seconds") }
        guard saturated > 0 else { throw ValidationError("--saturated must be a positive number of seconds") }
        guard redeliveryLoop > 0 else { throw ValidationError("--redelivery-loop must be a positive count") }
        for (name, value) in [("--from", from), ("--to", to)] {
            // Forms that need the capture's start are checked against a placeholder day here.
            if let value, TimeArgument.parse(value, captureStart: Timestamp(nanoseconds: 0)) == nil {
                throw ValidationError("\(name) \(value): use +SECONDS, HH:MM:SS, YYYY-MM-DD HH:MM:SS or Unix seconds")
            }
        }
    }

    func reportOptions(captureStart: Timestamp?) -> ReportOptions {
        var options = ReportOptions()
        options.connections = connectionIDs.isEmpty ? nil : Set(connectionIDs)
        options.story.idleThreshold = Int64(idle * 1e9)
        options.story.slowConfirmThreshold = Int64(slowConfirm * 1e9)
        options.story.saturationThreshold = Int64(saturated * 1e9)
        options.story.redeliveryLoopCount = redeliveryLoop
        options.from = from.flatMap { TimeArgument.parse($0, captureStart: captureStart) }
        options.to = to.flatMap { TimeArgument.parse($0, captureStart: captureStart) }
        return options
    }
}

/// Which files are read together as one capture.
struct GroupingOptions: ParsableArguments {
    @Flag(
        help: """
            Read all the files as one capture, in time order (rotated files whose connections do not run on \
            from one file to the next).
            """)
    var merge = false

    @Flag(help: "Read each file as a capture of its own, even when they look like rotated parts of one.")
    var separate = false

    func validate() throws {
        if merge && separate { throw ValidationError("--merge and --separate exclude each other") }
    }

    /// Rotated parts of one capture together (detected, or all with --merge), in time order; other files alone.
    func groups(_ files: [String]) -> [[String]] {
        if separate || files.count == 1 { return files.map { [$0] } }
        if merge {
            let ordered = files.map { ($0, Analysis.firstTimestamp($0)?.nanoseconds ?? .max) }.sorted { a, b in
                (a.1, a.0) < (b.1, b.0)
            }
            return [ordered.map(\.0)]
        }
        return Analysis.rotationGroups(files)
    }
}

/// Reads one file, with progress on stderr when it is a terminal; streams its records to `onRecord` when given.
func analyzeFile(_ files: [String], configuration: EngineConfiguration, onRecord: ((ConnectionRecord) -> Void)? = nil)
    -> CaptureResult
{
    let showProgress = isatty(2) == 1
    var lastShown = Clock.now()
    let file = files.joined(separator: " + ")
    let result = Analysis.analyzeFiles(
        files, configuration: configuration, logger: Logger(label: "amqpscope"),
        progress: showProgress
            ? { read, total in
                let now = Clock.now()
                guard now.since(lastShown) >= 500_000_000 else { return }
                lastShown = now
                let percent = total.map { $0 > 0 ? " (\(read * 100 / $0)%)" : "" } ?? ""
                let totalText = total.map { " of \($0 / 1_000_000) MB" } ?? ""
                printError(
                    "\u{1B}[2K\ramqpscope: reading \(file): \(read / 1_000_000) MB\(totalText)\(percent)",
                    terminator: "")
            } : nil, onRecord: onRecord)
    if showProgress { printError("\u{1B}[2K\r", terminator: "") }
    return result
}

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Analyse saved captures (pcap or pcapng): tell the story of every AMQP connection.",
        discussion: """
            By default each connection's diagnoses come first, in plain words, then who the peers were, what they \
            negotiated, how the connection ended, and its timeline with routine traffic collapsed. Exit codes: \
            0 analysed; 1 a diagnosis at --fail-on severity or worse; 2 usage error; 3 an input could not be read \
            at all; 4 an input was read only in part.
            """)

    @Argument(help: "Capture files (pcap or pcapng).")
    var files: [String]

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Flag(
        name: .shortAndLong, help: "Show every frame and packet on the timeline instead of collapsing routine traffic.")
    var verbose = false

    @Flag(help: "List every decoded AMQP frame (in JSON: a frame_list per connection).")
    var frames = false

    @OptionGroup var view: ViewOptions

    @Option(help: "Exit with 1 when a diagnosis of this severity or worse is found: warning or error.")
    var failOn: FailOn?

    @OptionGroup var grouping: GroupingOptions

    @OptionGroup var pipeline: PipelineOptions

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one capture file") }
    }

    func run() throws {
        var configuration = try pipeline.engineConfiguration(recordFrames: frames || verbose)
        configuration.recordPackets = verbose
        // Text and JSON draw no unacked chart (the review's HTML does).
        configuration.keepsUnackedTrace = false
        var options = view.reportOptions(captureStart: files.compactMap { Analysis.firstTimestamp($0) }.min())
        options.brokerLog = try view.readBrokerLog()
        options.showFrames = frames
        options.verbose = verbose
        options.showBodies = pipeline.showBodies
        options.colour =
            format == .text && isatty(1) == 1 && (getenv("NO_COLOR").map { String(cString: $0).isEmpty } ?? true)
        let kind: AnalyzeWriter.Kind = format == .json ? .json : .text
        // Each connection is written as it ends: memory does not grow with the capture.
        var writer = AnalyzeWriter(format: kind, options: options) { writeStandardOutput($0) }
        let results: [CaptureResult]
        let captures = grouping.groups(files)
        if captures.count == 1 {
            results = [ParallelAnalysis.pipelined(captures[0], configuration: configuration, writer: &writer)]
        } else {
            results = try ParallelAnalysis.files(
                captures, configuration: configuration, kind: kind, options: options, writer: &writer)
        }
        writer.finish()
        fflushStandardOutput()
        try exitForInputs(results)
        if let failOn, let worst = writer.worstSeverity, worst >= failOn.severity {
            throw ExitCode(Exit.diagnosis)
        }
    }
}

/// Names each input that could not be read in full, and exits 3 or 4 as the README documents.
func exitForInputs(_ results: [CaptureResult]) throws {
    for result in results {
        if let error = result.error { printError("amqpscope: \(error)") }
    }
    if results.contains(where: \.unreadable) { throw ExitCode(Exit.unreadable) }
    if results.contains(where: { $0.error != nil }) { throw ExitCode(Exit.partial) }
}

enum ReviewFormat: String, ExpressibleByArgument, CaseIterable {
    case html, markdown
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write an incident-review report: one self-contained HTML file (with an SVG timeline per connection), or "
            + "Markdown.",
        discussion: """
            The HTML opens anywhere, from an e-mail attachment too: no scripts, fonts or network. Everything taken \
            from the capture is escaped, credentials stay redacted, and message bodies are never included. \
            Healthy connections are folded when there are more than three. Exit codes as for analyze.
            """)

    @Argument(help: "Capture files (pcap or pcapng).")
    var files: [String]

    @Option(
        name: [.customShort("o"), .customLong("output")],
        help: "Write the report to this file (default: standard output).")
    var output: String?

    @Option(help: "html or markdown.")
    var format: ReviewFormat = .html

    @OptionGroup var view: ViewOptions

    @OptionGroup var grouping: GroupingOptions

    @OptionGroup var pipeline: PipelineOptions

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one capture file") }
        if pipeline.showBodies {
            throw ValidationError("reports never include message bodies; use analyze --show-bodies")
        }
    }

    func run() throws {
        let configuration = try pipeline.engineConfiguration(recordFrames: false)
        let results = grouping.groups(files).map { analyzeFile($0, configuration: configuration) }
        var options = view.reportOptions(captureStart: results.compactMap(\.counts.firstTime).min())
        options.brokerLog = try view.readBrokerLog()
        let text =
            format == .html
            ? HTMLReport.render(results, options: options, version: AMQPScopeVersion.string)
            : MarkdownReport.render(results, options: options, version: AMQPScopeVersion.string)
        if let output {
            guard let file = fopen(output, "w") else {
                printError("amqpscope: cannot write \(output): \(String(cString: strerror(errno)))")
                throw ExitCode(Exit.unreadable)
            }
            fputs(text, file)
            fclose(file)
        } else {
            print(text, terminator: "")
        }
        try exitForInputs(results)
    }
}

/// A whole file's bytes, up to `limit`: `.failure` with the reason when it cannot be opened or is larger.
func readWholeFile(_ path: String, limit: Int) -> Result<[UInt8], FileReadError> {
    guard let file = fopen(path, "r") else { return .failure(FileReadError(reason: String(cString: strerror(errno)))) }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&buffer, 1, buffer.count, file)
        if n <= 0 { break }
        bytes += buffer[..<n]
        guard bytes.count <= limit else { return .failure(FileReadError(reason: "larger than \(limit >> 20) MiB")) }
    }
    return .success(bytes)
}

struct FileReadError: Error {
    var reason: String
}

/// Reads a key log file; a file that cannot be read is a usage error (exit 2). Its contents are never printed.
func readKeyLog(_ path: String) throws -> KeyLog {
    switch readWholeFile(path, limit: 64 << 20) {
    case .failure(let error):
        printError("amqpscope: cannot read the key log \(path): \(error.reason)")
        throw ExitCode(Exit.usage)
    case .success(let bytes):
        let keyLog = KeyLog(text: String(decoding: bytes, as: UTF8.self))
        if keyLog.handshakes == 0 { printError("amqpscope: warning: the key log \(path) has no usable entries") }
        return keyLog
    }
}

func printError(_ message: String, terminator: String = "\n") {
    var standardError = StandardError()
    print(message, terminator: terminator, to: &standardError)
}

/// Writes straight to file descriptor 1 (the report is the only thing on standard output), all of it.
func writeStandardOutput(_ text: String) {
    var text = text
    text.withUTF8 { writeStandardOutput(UnsafeRawBufferPointer($0)) }
}

func writeStandardOutput(_ bytes: UnsafeRawBufferPointer) {
    writeAll(1, bytes)
}

/// Writes all of `bytes` to a file descriptor, retrying after EINTR and short writes.
func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) {
    guard let base = bytes.baseAddress else { return }
    var offset = 0
    while offset < bytes.count {
        let n = write(descriptor, base + offset, bytes.count - offset)
        if n <= 0 {
            if errno == EINTR { continue }
            return
        }
        offset += n
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)) }
    }
}

// Entry point: argument-parser reports usage errors with EX_USAGE (64); amqpscope documents 2, as grep and
// diff use it.
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}
do {
    var command = try AMQPScopeCommand.parseAsRoot()
    try command.run()
} catch {
    let code = AMQPScopeCommand.exitCode(for: error)
    if code == .validationFailure {
        printError(AMQPScopeCommand.fullMessage(for: error))
        printError("Run 'amqpscope --help' for usage.")
        exit(Exit.usage)
    }
    AMQPScopeCommand.exit(withError: error)
}
