// The amqpscope command. Only the executable bootstraps logging and decides exit codes:
//   0 analysed; 1 a diagnosis at --fail-on severity; 2 usage error; 3 an input could not be read at all;
//   4 an input was read only in part (truncated or corrupt).
import AMQPScope
import ArgumentParser
import Logging

#if canImport(Glibc)
import Glibc
#endif

enum Exit {
    static let ok: Int32 = 0
    static let usage: Int32 = 2
    static let unreadable: Int32 = 3
    static let partial: Int32 = 4
}

struct AMQPScopeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqpscope",
        abstract: "Explains AMQP incidents from packets: who stopped heartbeating, who closed, who reset, which error each socket got.",
        discussion: """
            Exit codes: 0 analysed; 2 usage error; 3 an input could not be read at all; \
            4 an input was read only in part (truncated or corrupt: what was read is still reported).
            """,
        version: AMQPScopeVersion.string,
        subcommands: [Analyze.self],
        defaultSubcommand: nil
    )
}

enum AMQPScopeVersion {
    static let string = "0.1.0"
}

/// Options every analysing subcommand shares.
struct PipelineOptions: ParsableArguments {
    @Option(name: .customLong("port"), help: "Another TCP port an AMQP server listens on (repeatable; 5672 and 5671 always count).")
    var ports: [UInt16] = []

    @Flag(help: "Show AMQP passwords and other secrets instead of redacting them.")
    var showCredentials = false

    @Flag(help: "Keep and show message bodies (off by default: bodies may hold personal data).")
    var showBodies = false

    @Option(help: "Out-of-order bytes buffered per direction before the hole is skipped as a gap (bytes).")
    var maxBufferPerDirection: Int = ReassemblyConfiguration().maximumBufferedBytesPerDirection

    @Option(help: "Out-of-order bytes buffered over all connections before holes are skipped (bytes).")
    var maxBufferTotal: Int = ReassemblyConfiguration().maximumBufferedBytesTotal

    @Option(help: "End connections silent for this many seconds of capture time (default: keep until the capture ends).")
    var idleTimeout: Double?

    @Option(help: "Connections tracked at once; past it the least recently active is ended and reported.")
    var maxConnections: Int = ReassemblyConfiguration().maximumConnections

    @Flag(help: .hidden)
    var byteAtATime = false

    func validate() throws {
        guard maxBufferPerDirection >= 0, maxBufferTotal >= 0 else { throw ValidationError("buffer limits must not be negative") }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be at least 1") }
        if let idleTimeout, !(idleTimeout > 0) { throw ValidationError("--idle-timeout must be a positive number of seconds") }
        if ports.contains(0) { throw ValidationError("--port 0 is not a port") }
    }

    func engineConfiguration(recordFrames: Bool) -> EngineConfiguration {
        var configuration = EngineConfiguration()
        configuration.reassembly.serverPorts.formUnion(ports)
        configuration.reassembly.maximumBufferedBytesPerDirection = maxBufferPerDirection
        configuration.reassembly.maximumBufferedBytesTotal = maxBufferTotal
        configuration.reassembly.maximumConnections = maxConnections
        configuration.reassembly.idleTimeout = idleTimeout.map { Int64($0 * 1e9) }
        configuration.codec.showCredentials = showCredentials
        configuration.codec.keepBodies = showBodies
        configuration.recordFrames = recordFrames
        configuration.byteAtATime = byteAtATime
        return configuration
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Analyse saved captures (pcap or pcapng): every TCP connection, and the AMQP it carried.")

    @Argument(help: "Capture files (pcap or pcapng).")
    var files: [String]

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Flag(help: "List every decoded AMQP frame per connection.")
    var frames = false

    @OptionGroup var pipeline: PipelineOptions

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one capture file") }
    }

    func run() throws {
        let logger = Logger(label: "amqpscope")
        let configuration = pipeline.engineConfiguration(recordFrames: frames)
        let results = files.map { Analysis.analyzeFile($0, configuration: configuration, logger: logger) }
        var options = ReportOptions()
        options.showFrames = frames
        options.showBodies = pipeline.showBodies
        switch format {
        case .text: print(AnalyzeReport.text(results, options: options), terminator: "")
        case .json: print(AnalyzeReport.json(results, options: options).serialized(indent: true))
        }
        for result in results {
            if let error = result.error { printError("amqpscope: \(error)") }
        }
        if results.contains(where: \.unreadable) { throw ExitCode(Exit.unreadable) }
        if results.contains(where: { $0.error != nil }) { throw ExitCode(Exit.partial) }
    }
}

func printError(_ message: String) {
    var standardError = StandardError()
    print(message, to: &standardError)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
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
