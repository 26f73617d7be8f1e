// Writes packets to pcap files (nanosecond timestamps) through libpcap's dump API, optionally rotating by size
// into a bounded ring of files, as tcpdump's -w, -C and -W do.
import AMQPScopePackets
import CPcap

package final class PcapWriter {
    package let basePath: String
    package let linkType: LinkType
    /// Start a new file when the current one reaches this many bytes (tcpdump's -C counts millions of bytes).
    package let rotateBytes: Int?
    /// Keep at most this many files, overwriting the oldest (tcpdump's -W).
    package let fileCount: Int?
    package private(set) var currentPath: String
    package private(set) var filesOpened = 0

    private let dead: OpaquePointer
    private var dumper: OpaquePointer?
    private var bytesInFile = 0
    private var index = 0

    package init(path: String, linkType: LinkType, snapshotLength: Int, rotateBytes: Int? = nil, fileCount: Int? = nil)
        throws(CaptureError)
    {
        basePath = path
        self.linkType = linkType
        self.rotateBytes = rotateBytes
        self.fileCount = fileCount
        guard
            let dead = pcap_open_dead_with_tstamp_precision(
                linkType.rawValue, Int32(clamping: snapshotLength),
                UInt32(PCAP_TSTAMP_PRECISION_NANO))
        else {
            throw CaptureError(code: .cannotOpen, source: path, message: "cannot prepare a pcap writer")
        }
        self.dead = dead
        currentPath = path
        try openNext()
    }

    deinit {
        close()
        pcap_close(dead)
    }

    /// The name of file number `n`: tcpdump's scheme (FILE, FILE1, FILE2, ...; with a ring, FILE0..FILE{N-1},
    /// zero-padded).
    package func name(_ n: Int) -> String {
        if let fileCount {
            let width = String(max(fileCount - 1, 0)).count
            let digits = String(n % fileCount)
            return basePath + String(repeating: "0", count: width - digits.count) + digits
        }
        return n == 0 ? basePath : basePath + String(n)
    }

    private func openNext() throws(CaptureError) {
        close()
        let path = rotateBytes == nil ? basePath : name(index)
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
