// Classic pcap records, read by amqpscope itself out of large blocks of the file. libpcap opens every file and
// answers for its header (format, link type, snap length); then, for the common format only (classic pcap 2.4 in
// microseconds or nanoseconds, either byte order), the records are taken straight from blocks read with read(2) on
// the file's descriptor: one copy of the file (the kernel's), where pcap_next_ex makes two buffered reads
// per packet and a second copy of every byte (stdio's buffer into libpcap's). Everything else (pcapng, older
// versions, the modified formats, pipes and standard input) stays with libpcap. The reader gives the same packets
// and the same errors, at the same packet, as libpcap (the differential tests hold it to that): only its cost
// differs.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

struct RecordReader {
    /// What one pull found.
    enum Outcome {
        /// A record's header fields as libpcap hands them over (its time already in nanoseconds); its captured
        /// bytes are `packet` until the next pull.
        case packet(seconds: Int64, nanoseconds: Int64, captured: Int, original: Int)
        case end
        /// The file is damaged or ends inside a record: libpcap's words for it.
        case damaged(String)
    }

    /// The classic pcap file header's magic numbers (as read in the writer's byte order).
    static let microsecondMagic: UInt32 = 0xa1b2_c3d4
    static let nanosecondMagic: UInt32 = 0xa1b2_3c4d
    /// The file header's length, and each record header's (struct pcap_sf_pkthdr).
    static let fileHeaderBytes = 24
    static let recordHeaderBytes = 16
    /// libpcap's largest captured length it accepts in a record (MAXIMUM_SNAPLEN) for every link type but three
    /// (D-Bus, USBPcap, EBHSCR, which allow more and are left to libpcap).
    static let largestRecord = 262_144
    static let linkTypesWithLargerRecords: Set<Int32> = [231, 249, 279]
    /// Bytes read at a time (at least one record of the largest size and its header).
    static let blockBytes = 1 << 20

    private let descriptor: Int32
    private let swapped: Bool
    private let nanosecondFile: Bool
    /// libpcap's snap length for the file (after its own clamp): longer records are cut to it.
    private let snapshot: Int
    private let buffer: UnsafeMutableRawPointer
    /// The bytes read and not yet handed over are `buffer[start..<end]`.
    private var start = 0
    private var end = 0
    private var atEnd = false
    /// The read(2) error that ended reading, if one did.
    private var readError: Int32 = 0
    /// Bytes of the file read so far (for progress).
    private(set) var offset: Int
    /// The last packet's captured bytes.
    private(set) var packet = UnsafeRawBufferPointer(start: nil, count: 0)

    /// A reader for the records of the file open as `file` (a regular file, which libpcap opened and will not read
    /// again), just past its file header, when that header (`header`: its first 8 bytes) shows the common format;
    /// nil otherwise. The reader owns a duplicate of the file's descriptor and a buffer: call `release()`.
    init?(file: Int32, header: [UInt8], linkType: Int32, snapshot: Int) {
        guard header.count >= 8, snapshot > 0, !Self.linkTypesWithLargerRecords.contains(linkType) else { return nil }
        let magic = Self.integer(header, 0, swapped: false)
        switch magic {
        case Self.microsecondMagic, Self.nanosecondMagic: swapped = false
        case Self.microsecondMagic.byteSwapped, Self.nanosecondMagic.byteSwapped: swapped = true
        default: return nil
        }
        nanosecondFile = magic == Self.nanosecondMagic || magic == Self.nanosecondMagic.byteSwapped
        // Version 2.4 only: libpcap reads earlier versions' lengths in another order.
        let version = Self.integer(header, 4, swapped: swapped)
        let (major, minor) = swapped ? (version >> 16, version & 0xffff) : (version & 0xffff, version >> 16)
        guard major == 2 && minor == 4 else { return nil }
        let descriptor = dup(file)
        guard descriptor >= 0 else { return nil }
        guard lseek(descriptor, off_t(Self.fileHeaderBytes), SEEK_SET) == off_t(Self.fileHeaderBytes) else {
            close(descriptor)
            return nil
        }
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_SEQUENTIAL)
        self.descriptor = descriptor
        self.snapshot = snapshot
        offset = Self.fileHeaderBytes
        buffer = .allocate(byteCount: Self.blockBytes, alignment: 16)
    }

    func release() {
        buffer.deallocate()
        close(descriptor)
    }

    /// A 32-bit field of the file header's bytes; major and minor are two 16-bit fields read as one here.
    private static func integer(_ bytes: [UInt8], _ at: Int, swapped: Bool) -> UInt32 {
        let little =
            UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16
            | UInt32(bytes[at + 3]) << 24
        return swapped ? little.byteSwapped : little
    }

    /// A record header's field (in the file's byte order: the writer's, told by the magic).
    private func field(_ at: Int) -> UInt32 {
        let raw = (buffer + start + at).loadUnaligned(as: UInt32.self)
        return swapped ? UInt32(bigEndian: raw) : UInt32(littleEndian: raw)
    }

    /// Reads until `count` bytes are buffered or the file ends; false when it ended first.
    private mutating func fill(_ count: Int) -> Bool {
        while end - start < count && !atEnd {
            if start > 0 {
                buffer.copyMemory(from: buffer + start, byteCount: end - start)
                end -= start
                start = 0
            }
            let got = read(descriptor, buffer + end, Self.blockBytes - end)
            if got < 0 && errno == EINTR { continue }
            if got <= 0 {
                atEnd = true
                if got < 0 { readError = errno }
            } else {
                end += got
                offset += got
            }
        }
        return end - start >= count
    }

    private var readFailure: Outcome { .damaged("error reading dump file: \(String(cString: strerror(readError)))") }

    /// The next record, checked as libpcap checks it (sf-pcap.c, pcap_next_packet).
    mutating func next() -> Outcome {
        // The last record is handed over: its bytes may move now.
        packet = UnsafeRawBufferPointer(start: nil, count: 0)
        if !fill(Self.recordHeaderBytes) {
            if readError != 0 { return readFailure }
            let got = end - start
            if got == 0 { return .end }
            return .damaged(
                "truncated dump file; tried to read \(Self.recordHeaderBytes) header bytes, only got \(got)")
        }
        let rawSeconds = field(0)
        let rawFraction = field(4)
        let captured = Int(field(8))
        let original = Int(field(12))
        // As libpcap 1.10 hands them over (held to it by the tests): the time fields are signed in the writer's
        // byte order and unsigned in the other; microseconds are scaled up in 64 bits.
        let seconds = swapped ? Int64(rawSeconds) : Int64(Int32(bitPattern: rawSeconds))
        let fraction = swapped ? Int64(rawFraction) : Int64(Int32(bitPattern: rawFraction))
        let nanoseconds = nanosecondFile ? fraction : fraction * 1000
        if captured > Self.largestRecord {
            return .damaged(
                captured > snapshot
                    ? "invalid packet capture length \(captured), bigger than snaplen of \(snapshot)"
                    : "invalid packet capture length \(captured), bigger than maximum of \(Self.largestRecord)")
        }
        let record = Self.recordHeaderBytes + captured
        if !fill(record) {
            if readError != 0 { return readFailure }
            // A record longer than the snap length is read in two parts, the kept bytes first.
            let got = end - start - Self.recordHeaderBytes
            let wanted = captured > snapshot && got < snapshot ? snapshot : captured
            return .damaged("truncated dump file; tried to read \(wanted) captured bytes, only got \(got)")
        }
        // Longer than the snap length: cut to it, as libpcap hands such a record over.
        let kept = min(captured, snapshot)
        packet = UnsafeRawBufferPointer(start: buffer + start + Self.recordHeaderBytes, count: kept)
        start += record
        return .packet(seconds: seconds, nanoseconds: nanoseconds, captured: kept, original: original)
    }
}
