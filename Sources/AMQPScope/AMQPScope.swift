// amqpscope as a library: read capture files through the pure engine and get per-connection records.
@_exported import AMQPScopeBrokerLog
import AMQPScopeCapture
@_exported import AMQPScopeCodec
@_exported import AMQPScopePackets
@_exported import AMQPScopeReassembly
@_exported import AMQPScopeReports
@_exported import AMQPScopeTLS
@_exported import AMQPScopeTimeline
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
    /// that cannot be read, or breaks, is named in the result and the next one is still read.
    public static func analyzeFiles(
        _ paths: [String], configuration: EngineConfiguration = EngineConfiguration(),
        logger: Logger = Logger(label: "amqpscope"),
        progress: ((_ bytesRead: Int, _ totalBytes: Int?) -> Void)? = nil,
        onRecord: ((ConnectionRecord) -> Void)? = nil
    ) -> CaptureResult {
        var engine: Engine?
        var linkType: LinkType?
        // Streaming (onRecord): records leave as they end, in id order, so memory does not grow with the file.
        // Otherwise they are all kept and returned.
        var records: [ConnectionRecord] = []
        var orderer = RecordOrderer()
        func take(_ ended: [ConnectionRecord]) {
            guard let onRecord else {
                records.append(contentsOf: ended)
                return
            }
            for record in ended { orderer.add(record, emit: onRecord) }
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
            if engine == nil { engine = Engine(linkType: source.linkType, configuration: configuration) }
            reading: while true {
                do {
                    switch try source.next() {
                    case .packet(var header):
                        part.packets += 1
                        if part.firstTime == nil { part.firstTime = header.timestamp }
                        part.lastTime = header.timestamp
                        header.number += numbered
                        engine!.process(header, source.packetBytes)
                        if engine!.hasEnded { take(engine!.takeEnded()) }
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
        guard var engine else {
            // Nothing could be read at all.
            return CaptureResult(
                path: paths.joined(separator: " + "), linkType: nil, counts: PacketCounts(), records: [],
                error: parts.compactMap(\.error).first, unreadable: true, parts: parts.count > 1 ? parts : [])
        }
        engine.finish()
        take(engine.takeEnded())
        if let onRecord { orderer.finish(emit: onRecord) }
        records.sort { $0.info.id < $1.info.id }
        return CaptureResult(
            path: paths.joined(separator: " + "), linkType: linkType, counts: engine.counts, records: records,
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
