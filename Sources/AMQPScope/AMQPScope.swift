// amqpscope as a library: read capture files through the pure engine and get per-connection records.
@_exported import AMQPScopeBrokerLog
import AMQPScopeCapture
@_exported import AMQPScopeCodec
@_exported import AMQPScopePackets
@_exported import AMQPScopeReassembly
@_exported import AMQPScopeReports
@_exported import AMQPScopeTLS
@_exported import AMQPScopeTimeline
import Dispatch
import Logging

/// Reads saved captures through the pipeline: the embeddable entry point.
public enum Analysis {
    /// The first packet's timestamp of a saved capture (for times given relative to its start), or nil.
    public static func firstTimestamp(_ path: String) -> Timestamp? {
        guard let source = try? PcapSource.openFile(path), case .packet(let header)? = try? source.next() else {
            return nil
        }
        return header.timestamp
    }

    /// Reads one saved capture to its end (or to where it breaks) and returns what it held.
    public static func analyzeFile(
        _ path: String, configuration: EngineConfiguration = EngineConfiguration(),
        logger: Logger = Logger(label: "amqpscope"),
        progress: ((_ bytesRead: Int, _ totalBytes: Int?) -> Void)? = nil,
        onRecord: ((ConnectionRecord) -> Void)? = nil
    ) -> CaptureResult {
        analyzeFiles([path], configuration: configuration, logger: logger, progress: progress, onRecord: onRecord)
    }

    /// Reads files that are parts of one capture (rotated by `capture -C -W`, `tcpdump -C`, `editcap -c`), in the
    /// order given, as one capture: connections run on from one file into the next, packets are numbered across
    /// them as mergecap numbers them, and each file's packets, time span and errors are kept as a part. A file
    /// that cannot be read, or breaks, is named in the result and the next one is still read. With
    /// `configuration.timelineThread`, `onRecord` is called on the timeline thread (one call at a time, all of them
    /// before this returns), while `progress` is called on this one.
    public static func analyzeFiles(
        _ paths: [String], configuration: EngineConfiguration = EngineConfiguration(),
        logger: Logger = Logger(label: "amqpscope"),
        progress: ((_ bytesRead: Int, _ totalBytes: Int?) -> Void)? = nil,
        onRecord: ((ConnectionRecord) -> Void)? = nil
    ) -> CaptureResult {
        analyze(
            paths, configuration: configuration, logger: logger, progress: progress, onRecord: onRecord,
            batch: TimelineThread.batch)
    }

    /// `analyzeFiles`, handing the timeline thread (with `timelineThread`) `batch` operations at a time.
    static func analyze(
        _ paths: [String], configuration: EngineConfiguration, logger: Logger = Logger(label: "amqpscope"),
        progress: ((_ bytesRead: Int, _ totalBytes: Int?) -> Void)? = nil,
        onRecord: ((ConnectionRecord) -> Void)? = nil, batch: Int
    ) -> CaptureResult {
        var decoding: DecodingStage?
        var linkType: LinkType?
        // Streaming (onRecord): records leave as they end, in id order, so memory does not grow with the file.
        // Otherwise they are all kept and returned. The timeline stage and what it hands on run on the timeline
        // thread when there is one.
        let timeline = TimelineRunner(configuration: configuration, onRecord: onRecord)
        let thread = configuration.timelineThread ? TimelineThread(timeline) : nil
        var spare = OpBuffer()
        /// Hands the decoding stage's operations to the timeline stage: on its thread, in batches (once `waiting`,
        /// as `process` counts them, reaches `batch`); or here, now.
        func handOver(_ decoding: inout DecodingStage, waiting: Int) {
            guard let thread else {
                decoding.apply(to: &timeline.stage)
                timeline.takeEnded()
                return
            }
            guard waiting >= batch else { return }
            decoding.takeOps(leaving: &spare)
            thread.send(spare)
            spare = thread.spare()
        }
        var parts: [CapturePart] = []
        var numbered = 0
        for path in paths {
            var part = CapturePart(path: path)
            defer { parts.append(part) }
            let source: PcapSource
            do {
                source = try PcapSource.openFile(path, logger: logger)
            } catch {
                part.error = error.description
                part.unreadable = true
                continue
            }
            guard source.linkType.isSupported else {
                part.error = "\(path): link-layer type \(source.linkType.rawValue) is not one amqpscope decodes"
                part.unreadable = true
                continue
            }
            if let linkType, linkType != source.linkType {
                part.error =
                    "\(path): link-layer type \(source.linkType.rawValue) differs from the first part's "
                    + "\(linkType.rawValue): not read as part of the same capture"
                part.unreadable = true
                continue
            }
            linkType = source.linkType
            var stage = decoding.take() ?? DecodingStage(linkType: source.linkType, configuration: configuration)
            defer { decoding = stage }
            reading: while true {
                do {
                    switch try source.next() {
                    case .packet(var header):
                        part.packets += 1
                        if part.firstTime == nil { part.firstTime = header.timestamp }
                        part.lastTime = header.timestamp
                        header.number += numbered
                        let waiting = stage.process(header, source.packetBytes)
                        handOver(&stage, waiting: waiting)
                        if let progress, header.number % 16_384 == 0, let read = source.bytesRead {
                            progress(read, source.fileSize)
                        }
                    case .timeout:
                        continue
                    case .end:
                        break reading
                    }
                } catch {
                    part.error = error.description
                    logger.debug("capture read stopped", metadata: ["error": "\(error)"])
                    break reading
                }
            }
            numbered += part.packets
        }
        guard var decoding else {
            thread?.close()
            // Nothing could be read at all.
            return CaptureResult(
                path: paths.joined(separator: " + "), linkType: nil, counts: PacketCounts(), records: [],
                error: parts.compactMap(\.error).first, unreadable: true, parts: parts.count > 1 ? parts : [])
        }
        decoding.finish()
        handOver(&decoding, waiting: .max)
        // The timeline thread has applied everything once it is closed; the runner is this thread's again.
        thread?.close()
        timeline.finish()
        return CaptureResult(
            path: paths.joined(separator: " + "), linkType: linkType, counts: decoding.counts,
            records: timeline.records.sorted { $0.info.id < $1.info.id },
            error: parts.compactMap(\.error).first, unreadable: false, parts: parts.count > 1 ? parts : [])
    }

    /// Groups files that are parts of one capture, each group in time order; files that belong to no other stand
    /// alone (in the order given). Parts of one capture share a link type, and each starts with packets of a
    /// connection already running in an earlier part (no SYN seen for it there): connections run on from file to
    /// file, as in a rotated capture. Only each file's first packets are read to decide.
    public static func rotationGroups(_ paths: [String], sample: Int = 10_000) -> [[String]] {
        struct Head {
            var path: String
            var linkType: LinkType
            var first: Timestamp
            /// Connections (either direction) in its first packets.
            var flows: Set<[Endpoint]>
            /// Those among them that were already running (their first packet here is not a SYN).
            var running: Set<[Endpoint]>
        }
        var heads: [Head] = []
        var alone: [String] = []
        for path in paths {
            guard let source = try? PcapSource.openFile(path), source.linkType.isSupported else {
                alone.append(path)
                continue
            }
            var head: Head?
            var seen = 0
            while seen < sample, case .packet(let header)? = try? source.next() {
                seen += 1
                if head == nil {
                    head = Head(path: path, linkType: source.linkType, first: header.timestamp, flows: [], running: [])
                }
                guard case .tcp(let segment) = PacketDecoder.decode(source.packetBytes, linkType: source.linkType)
                else { continue }
                let flow = [segment.source, segment.destination].sorted()
                if head!.flows.insert(flow).inserted && !segment.flags.contains(.syn) { head!.running.insert(flow) }
            }
            if let head { heads.append(head) } else { alone.append(path) }
        }
        heads.sort { ($0.first, $0.path) < ($1.first, $1.path) }
        var groups: [[Head]] = []
        for head in heads {
            // A later part: a connection running at its start was seen in the last part of a group.
            if let g = groups.lastIndex(where: { group in
                group.last!.linkType == head.linkType && !group.last!.flows.isDisjoint(with: head.running)
            }) {
                groups[g].append(head)
            } else {
                groups.append([head])
            }
        }
        // In the order given: each group where its first file was named.
        let merged = groups.map { $0.map(\.path) } + alone.map { [$0] }
        return merged.sorted { a, b in
            (paths.firstIndex(of: a[0]) ?? 0) < (paths.firstIndex(of: b[0]) ?? 0)
        }
    }
}

/// The timeline stage and where its records go: to `onRecord` in id order, or kept.
final class TimelineRunner {
    /// Unchecked: one thread at a time runs the stage (the reading thread, or the timeline thread when there is one),
    /// and no access overlaps another; the runtime check was a call on every packet when there is no timeline thread.
    @exclusivity(unchecked) var stage: TimelineStage
    let onRecord: ((ConnectionRecord) -> Void)?
    var records: [ConnectionRecord] = []
    var orderer = RecordOrderer()

    init(configuration: EngineConfiguration, onRecord: ((ConnectionRecord) -> Void)?) {
        stage = TimelineStage(configuration: configuration)
        self.onRecord = onRecord
    }

    /// Records handed on at a time while a batch is applied: at a capture's end, its last batch ends every
    /// connection still open, and their reports are written (on other threads) while the rest end.
    static let handOnEvery = 16

    func apply(_ ops: OpBuffer) {
        stage.apply(ops, every: Self.handOnEvery) { hand($0) }
        takeEnded()
    }

    func takeEnded() {
        // Taken (a mutating call, made in place) rather than asked about first: reading a property of the stage
        // through this class copied the whole stage, once a packet when there is no timeline thread.
        let ended = stage.takeEnded()
        guard !ended.isEmpty else { return }
        hand(ended)
    }

    private func hand(_ ended: [ConnectionRecord]) {
        guard let onRecord else {
            records.append(contentsOf: ended)
            return
        }
        for record in ended { orderer.add(record, emit: onRecord) }
    }

    /// Everything was applied (the decoding stage's `finish` included).
    func finish() {
        stage.finish()
        takeEnded()
        if let onRecord { orderer.finish(emit: onRecord) }
    }
}

/// Runs the timeline stage on a thread of its own, fed batches of the decoding stage's operations in order, so that
/// one capture uses two cores: this thread reads, reassembles and decodes; that one builds the records and hands them
/// on (`onRecord` is called there). At most `depth` batches wait, so memory stays flat.
final class TimelineThread: @unchecked Sendable {
    /// Operations per batch (by default).
    static let batch = 2048
    /// Batches handed over and not yet applied, at most.
    static let depth = 4

    private let runner: TimelineRunner
    /// Guards `queue` and `spares` (a semaphore used as a lock).
    private let lock = DispatchSemaphore(value: 1)
    private var queue: [OpBuffer] = []
    private var spares: [OpBuffer] = []
    private let filled = DispatchSemaphore(value: 0)
    private let room = DispatchSemaphore(value: depth)
    private let done = DispatchSemaphore(value: 0)

    init(_ runner: TimelineRunner) {
        self.runner = runner
        // A serial queue of its own: its work item gets a thread even when every thread of the global pool is busy.
        DispatchQueue(label: "amqpscope.timeline").async { self.run() }
    }

    private func run() {
        while true {
            filled.wait()
            lock.wait()
            let next = queue.isEmpty ? nil : queue.removeFirst()
            lock.signal()
            // Woken with nothing queued: closed.
            guard let batch = next else { break }
            runner.apply(batch)
            lock.wait()
            spares.append(batch)
            lock.signal()
            room.signal()
        }
        done.signal()
    }

    /// Hands over a batch (waits while `depth` batches wait).
    func send(_ ops: OpBuffer) {
        room.wait()
        lock.wait()
        queue.append(ops)
        lock.signal()
        filled.signal()
    }

    /// An emptied batch to fill next (its capacity kept), or a new one.
    func spare() -> OpBuffer {
        lock.wait()
        defer { lock.signal() }
        return spares.popLast() ?? OpBuffer(capacity: TimelineThread.batch)
    }

    /// No more batches: returns once every batch handed over was applied.
    func close() {
        filled.signal()
        done.wait()
    }
}
