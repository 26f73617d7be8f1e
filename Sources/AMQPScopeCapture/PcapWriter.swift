// Writes packets to pcap files (nanosecond timestamps) through libpcap's dump API, optionally rotating by size
// into a bounded ring of files, or by time into files named by strftime, as tcpdump's -w, -C, -W and -G do.
import AMQPScopePackets
import CPcap

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

package final class PcapWriter {
    package let basePath: String
    package let linkType: LinkType
    /// Start a new file when the current one reaches this many bytes (tcpdump's -C counts millions of bytes).
    package let rotateBytes: Int?
    /// Keep at most this many files, overwriting the oldest (tcpdump's -W).
    package let fileCount: Int?
    /// Start a new file every this many seconds of packet time, named by passing the path through strftime (local
    /// time), as tcpdump's -G does; with `rotateBytes` a counter follows the name.
    package let rotateSeconds: Int?
    /// Files opened by time rotation (the first one included): with -G, -W bounds this and the capture stops.
    package private(set) var timeFiles = 0
    /// With -G and -W: the number of files was reached; nothing more is written and the capture should stop.
    package private(set) var limitReached = false
    package private(set) var currentPath: String
    package private(set) var filesOpened = 0

    private let dead: OpaquePointer
    private var dumper: OpaquePointer?
    private var bytesInFile = 0
    private var index = 0
    /// When the current time-rotated file began (packet time, seconds).
    private var periodStart: Int64?
    /// The strftime-expanded name of the current period.
    private var periodPath: String

    package init(
        path: String, linkType: LinkType, snapshotLength: Int, rotateBytes: Int? = nil, fileCount: Int? = nil,
        rotateSeconds: Int? = nil
    ) throws(CaptureError) {
        basePath = path
        periodPath = path
        self.linkType = linkType
        self.rotateBytes = rotateBytes
        self.fileCount = fileCount
        self.rotateSeconds = rotateSeconds
        guard
            let dead = pcap_open_dead_with_tstamp_precision(
                linkType.rawValue, Int32(clamping: snapshotLength),
                UInt32(PCAP_TSTAMP_PRECISION_NANO))
        else {
            throw CaptureError(code: .cannotOpen, source: path, message: "cannot prepare a pcap writer")
        }
        self.dead = dead
        currentPath = path
        // With -G the first file opens with the first packet, named by its time.
        if rotateSeconds == nil { try openNext() }
    }

    deinit {
        close()
        pcap_close(dead)
    }

    /// The name of file number `n`: tcpdump's scheme (FILE, FILE1, FILE2, ...; with a ring, FILE0..FILE{N-1},
    /// zero-padded).
    package func name(_ n: Int) -> String {
        let base = rotateSeconds == nil ? basePath : periodPath
        if let fileCount, rotateSeconds == nil {
            let width = String(max(fileCount - 1, 0)).count
            let digits = String(n % fileCount)
            return base + String(repeating: "0", count: width - digits.count) + digits
        }
        return n == 0 ? base : base + String(n)
    }

    /// The path with strftime's conversions applied for `seconds` since the epoch, in local time.
    package static func strftimePath(_ path: String, seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = strftime(&buffer, buffer.count, path, &parts)
        guard n > 0 else { return path }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func openNext() throws(CaptureError) {
        close()
        let path = rotateBytes == nil ? (rotateSeconds == nil ? basePath : periodPath) : name(index)
        guard let opened = pcap_dump_open(dead, path) else {
            throw CaptureError(code: .cannotOpen, source: path, message: String(cString: pcap_geterr(dead)))
        }
        dumper = opened
        currentPath = path
        bytesInFile = 24
        filesOpened += 1
        index += 1
    }

    /// Appends one packet; rotates first when the file is full.
    package func write(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) throws(CaptureError) {
        if let rotateSeconds {
            let second = header.timestamp.nanoseconds / 1_000_000_000
            if periodStart == nil || second - periodStart! >= Int64(rotateSeconds) {
                // tcpdump -G with -W: stop once that many files have been written.
                if let fileCount, timeFiles >= fileCount {
                    limitReached = true
                    close()
                    return
                }
                periodStart = second
                periodPath = Self.strftimePath(basePath, seconds: second)
                index = 0
                timeFiles += 1
                try openNext()
            }
        }
        if let rotateBytes, bytesInFile + 16 + bytes.count > rotateBytes, bytesInFile > 24 {
            try openNext()
        }
        guard let dumper else { return }
        var h = pcap_pkthdr()
        h.ts.tv_sec = Int(header.timestamp.nanoseconds / 1_000_000_000)
        h.ts.tv_usec = Int(header.timestamp.nanoseconds % 1_000_000_000)  // nanoseconds: the file says so in its magic
        h.caplen = UInt32(bytes.count)
        h.len = UInt32(header.originalLength)
        pcap_dump(
            UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &h,
            bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        bytesInFile += 16 + bytes.count
    }

    package func flush() {
        if let dumper { pcap_dump_flush(dumper) }
    }

    package func close() {
        if let dumper {
            pcap_dump_flush(dumper)
            pcap_dump_close(dumper)
        }
        dumper = nil
    }
}
