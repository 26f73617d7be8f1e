import AMQPScopeCapture
// amqpscope as a library: read capture files through the pure engine and get per-connection records.
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
        let source: PcapSource
        do {
            source = try PcapSource.openFile(path, logger: logger)
        } catch {
            return CaptureResult(
                path: path, linkType: nil, counts: PacketCounts(), records: [], error: error.description,
                unreadable: true)
        }
        guard source.linkType.isSupported else {
            return CaptureResult(
                path: path, linkType: source.linkType, counts: PacketCounts(), records: [],
                error: "\(path): link-layer type \(source.linkType.rawValue) is not one amqpscope decodes",
                unreadable: true)
        }
        var engine = Engine(linkType: source.linkType, configuration: configuration)
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
        var failure: String?
        reading: while true {
            do {
                switch try source.next() {
                case .packet(let header):
                    engine.process(header, source.packetBytes)
                    if engine.hasEnded { take(engine.takeEnded()) }
                    if let progress, header.number % 16_384 == 0, let read = source.bytesRead {
                        progress(read, source.fileSize)
                    }
                case .timeout:
                    continue
                case .end:
                    break reading
                }
            } catch {
                failure = error.description
                logger.debug("capture read stopped", metadata: ["error": "\(error)"])
                break reading
            }
        }
        engine.finish()
        take(engine.takeEnded())
        if let onRecord { orderer.finish(emit: onRecord) }
        records.sort { $0.info.id < $1.info.id }
        return CaptureResult(
            path: path, linkType: source.linkType, counts: engine.counts, records: records,
            error: failure, unreadable: false)
    }
}
