// Using both cores. One capture (a file, or rotated files read as one): the engine reads and decodes on this thread
// while the connections it hands over are rendered on other threads and written in order by a serial queue (a
// semaphore bounds the hand-off, so memory stays flat). Several files: they are analysed in parallel, each rendering
// into its own temporary file, and joined in capture order afterwards.
import AMQPScope
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

/// The writer, owned by the render queue (only ever touched from it, or after it is drained).
final class WriterBox: @unchecked Sendable {
    var writer: AnalyzeWriter
    init(_ writer: AnalyzeWriter) { self.writer = writer }
}

/// Connections being rendered: set once by their renderer, read by the writer after `ready`.
final class Pending: @unchecked Sendable {
    var rendered: [AnalyzeWriter.Rendered] = []
    let ready = DispatchSemaphore(value: 0)
}

enum ParallelAnalysis {
    /// Connections rendered together (one task on the render threads, one on the writer's queue).
    static let batch = 16
    /// Connections handed to the render queue and not yet written, at most. Sixteen batches: when many connections
    /// end at once (at a capture's end), four waiting batches starved the render threads while the timeline thread
    /// ended the next connections, and both cores were busy only four fifths of the time (README, "Limits that keep
    /// hostile input cheap", lists it with the rest).
    static let handOff = 16 * batch

    static func pipelined(_ files: [String], configuration: EngineConfiguration, writer: inout AnalyzeWriter)
        -> CaptureResult
    {
        let box = WriterBox(writer)
        let queue = DispatchQueue(label: "amqpscope.render")
        box.writer.begin(capture: files.joined(separator: " + "))
        guard let renderer = box.writer.renderer else {
            // A joined broker log: rendered in order on the writer's queue.
            let slots = DispatchSemaphore(value: handOff)
            let result = analyzeFile(files, configuration: configuration) { record in
                slots.wait()
                queue.async {
                    box.writer.connection(record, capture: 0)
                    slots.signal()
                }
            }
            queue.sync { box.writer.end(capture: result) }
            writer = box.writer
            return result
        }
        // Rendered on any thread, a batch at a time (both cores when the engine is done and many connections end at
        // once, as at the end of a capture), and written in the order the connections ended.
        let slots = DispatchSemaphore(value: handOff / batch)
        var records: [ConnectionRecord] = []
        var handed = 0
        func handOver() {
            guard !records.isEmpty else { return }
            slots.wait()
            let pending = Pending()
            let group = records
            let first = handed
            handed += group.count
            records.removeAll(keepingCapacity: true)
            DispatchQueue.global().async {
                pending.rendered = group.enumerated().map { renderer($1, 0, first + $0) }
                pending.ready.signal()
            }
            queue.async {
                pending.ready.wait()
                for rendered in pending.rendered { box.writer.append(rendered) }
                slots.signal()
            }
        }
        let result = analyzeFile(files, configuration: configuration) { record in
            records.append(record)
            if records.count == batch { handOver() }
        }
        handOver()
        queue.sync { box.writer.end(capture: result) }
        writer = box.writer
        return result
    }

    /// Results of files analysed in parallel, in their order; their reports are joined into `writer`. Each file's
    /// report goes to its own temporary file as bytes and is copied to standard output as bytes: text is never
    /// re-decoded, so a character split across a read boundary stays whole.
    static func files(
        _ files: [[String]], configuration: EngineConfiguration, kind: AnalyzeWriter.Kind, options: ReportOptions,
        writer: inout AnalyzeWriter
    ) throws -> [CaptureResult] {
        let directory = try temporaryDirectory()
        defer { rmdir(directory) }
        let outputs = files.indices.map { "\(directory)/\($0)" }
        let slots = Mutex<[(CaptureResult, AnalyzeWriter.FragmentSummary)?]>(Array(repeating: nil, count: files.count))
        DispatchQueue.concurrentPerform(iterations: files.count) { index in
            let handle = fopen(outputs[index], "w")
            var fragment = AnalyzeWriter(format: kind, options: options, fragment: true) { bytes in
                guard let handle else { return }
                _ = fwrite(bytes.baseAddress, 1, bytes.count, handle)
            }
            fragment.begin(capture: files[index].joined(separator: " + "))
            // The files already share the cores: each is read on one thread.
            var configuration = configuration
            configuration.timelineThread = false
            let result = Analysis.analyzeFiles(
                files[index], configuration: configuration, logger: Logger(label: "amqpscope"),
                onRecord: { fragment.connection($0, capture: index) })
            fragment.end(capture: result)
            if let handle {
                fclose(handle)
            } else {
                printError("amqpscope: cannot write a temporary file in \(directory)")
            }
            let summary = fragment.fragmentSummary()
            slots.withLock { $0[index] = (result, summary) }
        }
        let done = slots.withLock { $0.map { $0! } }
        let results = done.map(\.0)
        let summaries = done.map(\.1)
        writer.joinFragments(summaries) { index in
            copyToStandardOutput(outputs[index])
            unlink(outputs[index])
        }
        return results
    }

    /// A private directory under $TMPDIR (or /tmp), made by mkdtemp from a buffer Swift owns.
    static func temporaryDirectory() throws -> String {
        let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/amqpscope-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            printError("amqpscope: cannot make a temporary directory in \(base): \(String(cString: strerror(errno)))")
            throw ExitCode(Exit.unreadable)
        }
        return String(cString: template)
    }

    /// Copies a file to standard output byte for byte.
    static func copyToStandardOutput(_ path: String) {
        guard let handle = fopen(path, "r") else { return }
        defer { fclose(handle) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buffer, 1, buffer.count, handle)
            if n <= 0 { break }
            buffer.withUnsafeBytes { writeStandardOutput(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
    }
}
