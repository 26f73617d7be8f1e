// The only code in amqpscope that touches libpcap. It opens a saved file (pcap or pcapng), pulls packets with
// pcap_next_ex and hands on plain values; a packet's bytes are libpcap's own, read in place until the next pull.
// Live interfaces open through the same type (see `openLive`), so the rest of the pipeline never knows which.
import AMQPScopePackets
import CPcap
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a capture could not be opened or read. Compared by `code`; `message` is for people.
package struct CaptureError: Error, Hashable, Sendable, CustomStringConvertible {
    package enum Code: Hashable, Sendable {
        /// Nothing could be read: no such file, not a capture, no permission, no such interface.
        case cannotOpen
        /// Opening or activating a live device needs a capability the process lacks (CAP_NET_RAW).
        case permissionDenied
        /// Reading stopped partway: the file is truncated or corrupt after `packetNumber - 1` good packets.
        case truncated
        /// A live interface went away (deleted, its namespace torn down) or went down while capturing.
        case interfaceGone
        /// The capture's link-layer type is one amqpscope cannot decode.
        case unsupportedLinkType
    }

    package var code: Code
    package var source: String
    /// The packet number (1-based) at which the error happened, when known.
    package var packetNumber: Int?
    package var message: String

    package init(code: Code, source: String, packetNumber: Int? = nil, message: String) {
        self.code = code
        self.source = source
        self.packetNumber = packetNumber
        self.message = message
    }

    package static func == (a: CaptureError, b: CaptureError) -> Bool { a.code == b.code }
    package func hash(into hasher: inout Hasher) { hasher.combine(code) }

    package var description: String {
        if let packetNumber { return "\(source): packet \(packetNumber): \(message)" }
        return "\(source): \(message)"
    }
}

/// The result of one pull.
package enum ReadResult: Hashable, Sendable {
    case packet(PacketHeader)
    /// A live capture's read timeout passed with no packet (never returned for files).
    case timeout
    /// The file ended (or a live capture was broken off).
    case end
}

package final class PcapSource {
    package let source: String
    package let linkType: LinkType
    package let isLive: Bool
    /// The capture's snapshot length (the most bytes kept per packet).
    package let snapshotLength: Int
    /// Unchecked (like `currentLength`): a source is read by one caller at a time, and these change on every packet.
    @exclusivity(unchecked) package private(set) var packetsRead = 0

    private var handle: OpaquePointer?
    /// The last packet's bytes in libpcap's buffer (valid until the next pcap_next_ex), or nil before the first.
    @exclusivity(unchecked) private var current: UnsafeRawPointer?
    @exclusivity(unchecked) private var currentLength = 0
    /// Live: the descriptor to poll, and how long `next()` waits for a packet before returning `.timeout`.
    private var selectable: Int32 = -1
    private var timeoutMilliseconds: Int32 = 200
    private let logger: Logger
    /// A saved file's stdio buffer (see `readAheadBytes`), freed after pcap_close has closed the file.
    private var readAhead: UnsafeMutableRawPointer?
    /// A classic pcap file's records, read by amqpscope itself (see `RecordReader`); nil: libpcap reads them.
    /// Unchecked like `current`: one caller at a time.
    @exclusivity(unchecked) private var records: RecordReader?

    private init(handle: OpaquePointer, source: String, isLive: Bool, logger: Logger) {
        self.handle = handle
        self.source = source
        self.isLive = isLive
        self.logger = logger
        self.linkType = LinkType(rawValue: pcap_datalink(handle))
        self.snapshotLength = Int(pcap_snapshot(handle))
    }

    deinit {
        if let handle { pcap_close(handle) }
        readAhead?.deallocate()
        records?.release()
    }

    /// The stdio buffer a saved file is read through: 1 MiB, 256 read system calls where stdio's default makes
    /// one per 4 KiB block.
    static let readAheadBytes = 1 << 20

    /// Opens a saved pcap or pcapng file with nanosecond timestamps. `ownRecords`: classic pcap records are read by
    /// `RecordReader` (false: by libpcap, as the tests compare).
    package static func openFile(
        _ path: String, ownRecords: Bool = true, logger: Logger = Logger(label: "amqpscope.capture")
    ) throws(CaptureError) -> PcapSource {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        let precision = UInt32(PCAP_TSTAMP_PRECISION_NANO)
        var opened: OpaquePointer?
        var readAhead: UnsafeMutableRawPointer?
        var records: RecordReader?
        // A file is read through a stdio buffer of its own, `readAheadBytes` long: libpcap's own open leaves stdio's
        // default (the file system's 4 KiB block), one read system call per 4 KiB. Standard input ("-"), or a path
        // fopen cannot open, goes through libpcap's open, which names the problem as users know it.
        if path != "-", let file = fopen(path, "rb") {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: readAheadBytes, alignment: 16)
            // glibc ignores the size unless given the buffer too.
            setvbuf(file, buffer.assumingMemoryBound(to: CChar.self), _IOFBF, readAheadBytes)
            opened = pcap_fopen_offline_with_tstamp_precision(file, precision, &errorBuffer)
            if let opened {
                readAhead = buffer
                // The file header's magic and version, read where they lie (pread leaves stdio's position alone;
                // a pipe refuses, and stays with libpcap).
                var header = [UInt8](repeating: 0, count: 8)
                let got = pread(fileno(file), &header, header.count, 0)
                if ownRecords && got == header.count {
                    records = RecordReader(
                        file: fileno(file), header: header, linkType: pcap_datalink(opened),
                        snapshot: Int(pcap_snapshot(opened)))
                }
            } else {
                fclose(file)  // pcap_fopen_offline leaves a file it refused open
                buffer.deallocate()
            }
        } else {
            opened = pcap_open_offline_with_tstamp_precision(path, precision, &errorBuffer)
        }
        guard let opened else {
            throw CaptureError(
                code: .cannotOpen, source: path, message: Self.describeOpenError(errorBuffer, path: path))
        }
        let capture = PcapSource(handle: opened, source: path, isLive: false, logger: logger)
        capture.readAhead = readAhead
        capture.records = records
        logger.debug("opened capture file", metadata: ["file": "\(path)", "linktype": "\(capture.linkType.rawValue)"])
        return capture
    }

    /// Opens a live interface (pcap_create + pcap_activate) with nanosecond timestamps when the device offers them.
    /// `timeoutMilliseconds` bounds how long `next()` waits before returning `.timeout`, so callers can run timers.
    /// `bufferBytes` sets the kernel capture buffer (tcpdump's -B, in bytes here); `immediate` hands each packet over
    /// as it arrives instead of in blocks. Reads poll the capture's descriptor, so `next()` returns `.timeout` on
    /// time even with no traffic at all, and an interface that goes away ends the read with `.interfaceGone`.
    package static func openLive(
        interface: String, snapshotLength: Int = 262_144, promiscuous: Bool = false,
        timeoutMilliseconds: Int = 200, filter: String? = nil, bufferBytes: Int? = nil, immediate: Bool = false,
        logger: Logger = Logger(label: "amqpscope.capture")
    ) throws(CaptureError) -> PcapSource {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let created = pcap_create(interface, &errorBuffer) else {
            throw CaptureError(code: .cannotOpen, source: interface, message: cString(errorBuffer))
        }
        pcap_set_snaplen(created, Int32(clamping: snapshotLength))
        pcap_set_promisc(created, promiscuous ? 1 : 0)
        // The block timeout: how long the kernel holds packets before handing a block over (void in immediate mode;
        // the poll below keeps the timers running either way).
        pcap_set_timeout(created, Int32(clamping: timeoutMilliseconds))
        if immediate { pcap_set_immediate_mode(created, 1) }
        if let bufferBytes { pcap_set_buffer_size(created, Int32(clamping: bufferBytes)) }
        _ = pcap_set_tstamp_precision(created, Int32(PCAP_TSTAMP_PRECISION_NANO))
        let status = pcap_activate(created)
        if status < 0 {
            let detail = String(cString: pcap_geterr(created))
            pcap_close(created)
            switch status {
            case PCAP_ERROR_PERM_DENIED:
                throw CaptureError(
                    code: .permissionDenied, source: interface,
                    message: "no permission to capture (needs CAP_NET_RAW, e.g. run as root or "
                        + "`setcap cap_net_raw,cap_net_admin=eip` on the binary): \(detail)")
            case PCAP_ERROR_NO_SUCH_DEVICE:
                throw CaptureError(code: .cannotOpen, source: interface, message: "no such interface: \(detail)")
            default:
                throw CaptureError(code: .cannotOpen, source: interface, message: detail)
            }
        }
        let capture = PcapSource(handle: created, source: interface, isLive: true, logger: logger)
        capture.timeoutMilliseconds = Int32(clamping: timeoutMilliseconds)
        // Non-blocking reads and our own poll: libpcap's read timeout alone does not fire on a quiet interface.
        var nonblockError = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        if pcap_setnonblock(created, 1, &nonblockError) == 0 { capture.selectable = pcap_get_selectable_fd(created) }
        if let filter { try capture.setFilter(filter) }
        logger.debug("opened interface", metadata: ["interface": "\(interface)"])
        return capture
    }

    /// Compiles and installs a BPF filter (tcpdump syntax).
    package func setFilter(_ expression: String) throws(CaptureError) {
        guard let handle else { return }
        var program = bpf_program()
        guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw CaptureError(
                code: .cannotOpen, source: source, message: "bad filter: \(String(cString: pcap_geterr(handle)))")
        }
        defer { pcap_freecode(&program) }
        guard pcap_setfilter(handle, &program) == 0 else {
            throw CaptureError(
                code: .cannotOpen, source: source, message: "cannot set filter: \(String(cString: pcap_geterr(handle)))"
            )
        }
    }

    /// Pulls the next packet. Its bytes are in `packetBytes` until the next call.
    package func next() throws(CaptureError) -> ReadResult {
        guard let handle else { return .end }
        // Whatever comes back, the last packet's bytes are libpcap's (or the record reader's) again.
        current = nil
        currentLength = 0
        if records != nil { return try nextRecord() }
        var headerPointer: UnsafeMutablePointer<pcap_pkthdr>?
        var dataPointer: UnsafePointer<UInt8>?
        var status = pcap_next_ex(handle, &headerPointer, &dataPointer)
        if status == 0 && selectable >= 0 {
            // Nothing buffered: wait on the descriptor, at most the timeout.
            var fd = pollfd(fd: selectable, events: Int16(POLLIN), revents: 0)
            let ready = poll(&fd, 1, timeoutMilliseconds)
            if ready == 0 || (ready < 0 && errno == EINTR) { return .timeout }
            if ready < 0 || fd.revents & Int16(POLLNVAL) != 0 {
                throw CaptureError(
                    code: .interfaceGone, source: source,
                    message: "the capture stopped: \(String(cString: strerror(errno)))")
            }
            status = pcap_next_ex(handle, &headerPointer, &dataPointer)
        }
        switch status {
        case 1:
            guard let header = headerPointer?.pointee, let dataPointer else { return .end }
            packetsRead += 1
            let captured = Int(header.caplen)
            // Read in place: libpcap keeps the bytes until the next pcap_next_ex, and nothing downstream holds a
            // packet's bytes past its turn (the decoders copy what they keep), so a copy here would be a second
            // one (libpcap has already copied the record out of the file's buffer).
            current = UnsafeRawPointer(dataPointer)
            currentLength = captured
            return .packet(
                PacketHeader(
                    number: packetsRead,
                    timestamp: Self.timestamp(seconds: Int64(header.ts.tv_sec), nanoseconds: Int64(header.ts.tv_usec)),
                    capturedLength: captured,
                    originalLength: Int(header.len)
                ))
        case 0:
            return .timeout
        case PCAP_ERROR_BREAK:
            return .end
        default:
            let message = String(cString: pcap_geterr(handle))
            if isLive {
                // ENETDOWN/ENXIO/ENODEV: "The interface went down", "The interface disappeared".
                throw CaptureError(code: .interfaceGone, source: source, message: message)
            }
            throw CaptureError(code: .truncated, source: source, packetNumber: packetsRead + 1, message: message)
        }
    }

    /// Whether amqpscope reads the file's records itself (`RecordReader`) rather than through libpcap.
    package var readsOwnRecords: Bool { records != nil }

    /// `next()` for a file whose records `RecordReader` reads: the same packets and errors as from pcap_next_ex.
    private func nextRecord() throws(CaptureError) -> ReadResult {
        switch records?.next() ?? .end {
        case .packet(let seconds, let nanoseconds, let captured, let original):
            packetsRead += 1
            current = records?.packet.baseAddress
            currentLength = captured
            return .packet(
                PacketHeader(
                    number: packetsRead, timestamp: Self.timestamp(seconds: seconds, nanoseconds: nanoseconds),
                    capturedLength: captured, originalLength: original))
        case .end:
            return .end
        case .damaged(let message):
            throw CaptureError(code: .truncated, source: source, packetNumber: packetsRead + 1, message: message)
        }
    }

    /// How far into a saved file reading has come (for progress), or nil for a live capture.
    package var bytesRead: Int? {
        if let records { return records.offset }
        guard let handle, !isLive, let file = pcap_file(handle) else { return nil }
        let position = ftell(file)
        return position >= 0 ? position : nil
    }

    /// The saved file's size in bytes, or nil.
    package var fileSize: Int? {
        guard let handle, !isLive, let file = pcap_file(handle) else { return nil }
        var info = stat()
        return fstat(fileno(file), &info) == 0 ? Int(info.st_size) : nil
    }

    /// The range classic pcap can express (1970 to 2106): a (corrupt or hostile) timestamp outside it is clamped,
    /// so that differences between any two timestamps fit in Int64 nanoseconds twice over.
    static let latestSecond: Int64 = 4_294_967_295

    static func timestamp(seconds: Int64, nanoseconds: Int64) -> Timestamp {
        Timestamp(seconds: min(max(seconds, 0), latestSecond), nanoseconds: min(max(nanoseconds, 0), 999_999_999))
    }

    /// The captured bytes of the packet `next()` last returned; valid until the next call to `next()`.
    package var packetBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: current, count: currentLength) }

    /// Asks a blocking `next()` to return `.end` (pcap_breakloop).
    package func breakLoop() {
        if let handle { pcap_breakloop(handle) }
    }

    /// The libpcap handle as an integer, for a signal handler to pass to `PcapSource.breakLoop(handle:)`.
    package var handleBits: Int { handle.map { Int(bitPattern: UnsafeRawPointer($0)) } ?? 0 }

    /// pcap_breakloop on a handle given as `handleBits`: async-signal-safe (it sets a flag and wakes the poll).
    package static func breakLoop(handleBits: Int) {
        if let handle = OpaquePointer(bitPattern: handleBits) { pcap_breakloop(handle) }
    }

    /// libpcap's received and dropped counts for a live capture.
    package func statistics() -> (received: UInt32, dropped: UInt32, interfaceDropped: UInt32)? {
        guard let handle, isLive else { return nil }
        var stats = pcap_stat()
        guard pcap_stats(handle, &stats) == 0 else { return nil }
        return (stats.ps_recv, stats.ps_drop, stats.ps_ifdrop)
    }

    private static func describeOpenError(_ buffer: [CChar], path: String) -> String {
        var text = cString(buffer)
        if text.hasPrefix(path + ": ") { text.removeFirst(path.count + 2) }  // libpcap names the file itself
        if text.contains("truncated dump file") || text.contains("unknown file format")
            || text.contains("bad dump file format")
        {
            return "not a readable pcap or pcapng file (\(text))"
        }
        return text
    }
}

/// A capture device as libpcap lists it.
package struct NetworkInterface: Hashable, Sendable {
    /// The name to pass to `-i`.
    package var name: String
    /// libpcap's description, when it has one.
    package var description: String?
}

/// Lists capture devices with their descriptions (pcap_findalldevs).
package func listInterfaces() throws(CaptureError) -> [NetworkInterface] {
    var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
    var devices: UnsafeMutablePointer<pcap_if_t>?
    guard pcap_findalldevs(&devices, &errorBuffer) == 0 else {
        throw CaptureError(code: .cannotOpen, source: "interfaces", message: cString(errorBuffer))
    }
    defer { pcap_freealldevs(devices) }
    var result: [NetworkInterface] = []
    var current = devices
    while let device = current {
        let name = String(cString: device.pointee.name)
        let description = device.pointee.description.map { String(cString: $0) }
        result.append(NetworkInterface(name: name, description: description))
        current = device.pointee.next
    }
    return result
}

private func cString(_ buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
