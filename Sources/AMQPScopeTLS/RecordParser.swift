// One TLS record parser per direction of a connection (RFC 8446 section 5.1, RFC 5246 section 6.2). It owns the
// bytes of the record in flight, hands up whole records one at a time, and when it meets bytes that are not a
// record header (or joins mid-stream, or after a gap) it hunts for the next plausible header.
import AMQPScopePackets

/// TLS content types (RFC 8446 section 5.1; 24 is RFC 6520's heartbeat).
package enum ContentType: UInt8, Sendable {
    case changeCipherSpec = 20
    case alert = 21
    case handshake = 22
    case applicationData = 23
    case heartbeat = 24
}

/// Limits from the RFCs, so hostile input never sizes a buffer.
package enum TLSLimits {
    /// The largest record: RFC 5246 section 6.2.3 allows 2^14 + 2048 bytes of ciphertext (RFC 8446: 2^14 + 256).
    package static let maximumRecordLength = (1 << 14) + 2048
    /// Bytes of a record header.
    package static let headerLength = 5
    /// Consecutive plausible record headers that prove a boundary when hunting.
    package static let recordsToSynchronize = 3
    /// Bytes kept while hunting for a record boundary: enough to prove a chain of three maximum records.
    package static let huntBufferLimit = 3 * ((1 << 14) + 2048 + 5)
    /// Handshake messages larger than this are not buffered (certificate chains are the largest real ones): a policy
    /// bound, not an RFC one (RFC 8446 allows 2^24 - 1).
    package static let maximumHandshakeMessage = 1 << 16
    /// Protected records held per connection while a live capture waits for the client to append its secrets to
    /// the key log: the handshake and the first exchanges fit; past this the connection is told without keys.
    package static let maximumWaitingBytes = 1 << 20
    package static let maximumWaitingRecords = 256
    /// Whole records lost in one gap that decryption looks past (by trying the next sequence numbers).
    package static let maximumLostRecords = 64
}

/// A record header: content type, legacy version, length.
package struct RecordHeader: Hashable, Sendable {
    package var contentType: UInt8
    package var version: UInt16
    package var length: Int

    package init(contentType: UInt8, version: UInt16, length: Int) {
        self.contentType = contentType
        self.version = version
        self.length = length
    }

    /// Plausible as a record header: a known content type, a version from SSL 3.0 to TLS 1.3 (0x0300-0x0304), and
    /// a length within the RFC's limit.
    package var isPlausible: Bool {
        ContentType(rawValue: contentType) != nil && (0x0300...0x0304).contains(version) && length > 0
            && length <= TLSLimits.maximumRecordLength
    }

    static func read(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> RecordHeader {
        RecordHeader(
            contentType: bytes[offset], version: bytes.integer(at: offset + 1),
            length: Int(bytes.integer(at: offset + 3, as: UInt16.self)))
    }
}

/// What the record parser hands up.
package enum RecordOutput {
    /// A whole record; its body is valid only until the next call into the parser.
    case record(RecordHeader, body: UnsafeRawBufferPointer, start: UInt64)
    /// A record some of whose bytes were lost in a capture gap: its header is known, its body is not.
    case cutRecord(RecordHeader, start: UInt64)
    /// Bytes that are not records; `skipped` bytes were passed over.
    case malformed(reason: String, start: UInt64, skipped: UInt64)
    /// A record boundary was found after `skipped` bytes (joining mid-stream, after a gap or after bad bytes).
    case synchronized(start: UInt64, skipped: UInt64)
}

package struct RecordParser {
    /// Where the parser is in the stream.
    enum State {
        /// Collecting a record: its header (when `pending` holds fewer than 5 bytes), then its body.
        case record
        /// A record cut by a gap: skipping what remains of it.
        case skip(RecordHeader, start: UInt64, remaining: Int)
        /// Looking for a record boundary in `pending`, which starts at `start`.
        case hunting(start: UInt64, skipped: UInt64)
    }

    private var state: State
    /// The record in flight, header included (or the bytes being hunted through).
    private var pending: [UInt8] = []
    /// Stream offset of the next byte read.
    private(set) var offset: UInt64 = 0
    /// Bytes after a boundary a hunt found, to be read again as records.
    private var replay: [UInt8] = []

    /// `fromStart`: the capture saw the stream begin, so offset 0 is a record boundary.
    package init(fromStart: Bool) {
        state = fromStart ? .record : .hunting(start: 0, skipped: 0)
    }

    /// Bytes this parser holds.
    package var bufferedBytes: Int { pending.count + replay.count }

    /// Reads `input`, handing each output to `out`.
    package mutating func feed(_ input: UnsafeRawBufferPointer, _ out: (RecordOutput) -> Void) {
        var cursor = 0
        read(input, &cursor, out)
        while !replay.isEmpty {
            let bytes = replay
            replay = []
            var position = 0
            bytes.withUnsafeBytes { read($0, &position, out) }
        }
    }

    /// Bytes that never arrived: inside a record of known length they are skipped with it, else the parser hunts.
    package mutating func gap(_ length: UInt64, _ out: (RecordOutput) -> Void) {
        let end = offset + length
        defer { offset = end }
        switch state {
        case .hunting(_, let skipped):
            let held = UInt64(pending.count)
            pending.removeAll(keepingCapacity: true)
            state = .hunting(start: end, skipped: skipped + held)
        case .skip(let header, let start, let remaining) where length < UInt64(remaining):
            state = .skip(header, start: start, remaining: remaining - Int(length))
        case .skip(let header, let start, let remaining):
            out(.cutRecord(header, start: start))
            // A gap that ends exactly where the record does leaves the next boundary known.
            if length == UInt64(remaining) {
                state = .record
                pending.removeAll(keepingCapacity: true)
            } else {
                startHunting(at: end)
            }
        case .record:
            if pending.count >= TLSLimits.headerLength {
                let header = pending.withUnsafeBytes { RecordHeader.read($0, at: 0) }
                let start = offset - UInt64(pending.count)
                let remaining = TLSLimits.headerLength + header.length - pending.count
                pending.removeAll(keepingCapacity: true)
                if length < UInt64(remaining) {
                    state = .skip(header, start: start, remaining: remaining - Int(length))
                } else {
                    out(.cutRecord(header, start: start))
                    if length == UInt64(remaining) { state = .record } else { startHunting(at: end) }
                }
            } else {
                if !pending.isEmpty {
                    let start = offset - UInt64(pending.count)
                    out(.malformed(reason: "record header cut by a capture gap", start: start, skipped: end - start))
                }
                startHunting(at: end)
            }
        }
    }

    private mutating func startHunting(at streamOffset: UInt64) {
        state = .hunting(start: streamOffset, skipped: 0)
        pending.removeAll(keepingCapacity: true)
    }

    private mutating func read(
        _ source: UnsafeRawBufferPointer, _ cursor: inout Int, _ out: (RecordOutput) -> Void
    ) {
        while cursor < source.count {
            switch state {
            case .hunting(let start, let skipped):
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[cursor...]))
                offset += UInt64(source.count - cursor)
                cursor = source.count
                if let output = hunt(start: start, skipped: skipped) { out(output) }
            case .skip(let header, let start, let remaining):
                let n = min(remaining, source.count - cursor)
                cursor += n
                offset += UInt64(n)
                if n < remaining {
                    state = .skip(header, start: start, remaining: remaining - n)
                } else {
                    state = .record
                    out(.cutRecord(header, start: start))
                }
            case .record:
                let start = offset - UInt64(pending.count)
                let available = source.count - cursor
                // The whole record in the input, nothing held: hand it up without a copy.
                if pending.isEmpty && available >= TLSLimits.headerLength {
                    let header = RecordHeader.read(source, at: cursor)
                    guard header.isPlausible else {
                        cursor += TLSLimits.headerLength
                        offset += UInt64(TLSLimits.headerLength)
                        badHeader(header, start: start, out)
                        continue
                    }
                    if available >= TLSLimits.headerLength + header.length {
                        let bodyStart = cursor + TLSLimits.headerLength
                        let body = bodyStart..<bodyStart + header.length
                        cursor = body.upperBound
                        offset += UInt64(TLSLimits.headerLength + header.length)
                        out(.record(header, body: UnsafeRawBufferPointer(rebasing: source[body]), start: start))
                        continue
                    }
                }
                // Collect the header, then the body, in `pending`.
                var needed = TLSLimits.headerLength - pending.count
                if needed <= 0 {
                    let length = pending.withUnsafeBytes { RecordHeader.read($0, at: 0) }.length
                    needed = TLSLimits.headerLength + length - pending.count
                }
                let n = min(needed, available)
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[cursor..<cursor + n]))
                cursor += n
                offset += UInt64(n)
                guard pending.count >= TLSLimits.headerLength else { continue }
                let header = pending.withUnsafeBytes { RecordHeader.read($0, at: 0) }
                guard header.isPlausible else {
                    pending.removeAll(keepingCapacity: true)
                    badHeader(header, start: start, out)
                    continue
                }
                if pending.count == TLSLimits.headerLength + header.length {
                    pending.withUnsafeBytes { raw in
                        let body = UnsafeRawBufferPointer(rebasing: raw[TLSLimits.headerLength...])
                        out(.record(header, body: body, start: start))
                    }
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// Not a record header: report it and hunt from the byte after its start.
    private mutating func badHeader(_ header: RecordHeader, start: UInt64, _ out: (RecordOutput) -> Void) {
        out(.malformed(reason: Self.problem(header), start: start, skipped: 1))
        // The four bytes after the bad header's first byte may begin a record: they are the first hunt bytes.
        let tail: [UInt8] = [
            UInt8(header.version >> 8), UInt8(header.version & 0xff), UInt8(header.length >> 8),
            UInt8(header.length & 0xff),
        ]
        state = .hunting(start: start + 1, skipped: 1)
        pending = tail
    }

    static func problem(_ header: RecordHeader) -> String {
        if ContentType(rawValue: header.contentType) == nil { return "unknown TLS content type \(header.contentType)" }
        if !(0x0300...0x0304).contains(header.version) {
            return "TLS record version 0x\(String(header.version, radix: 16)) is not 0x0300-0x0304"
        }
        return "TLS record length \(header.length) is outside 1-\(TLSLimits.maximumRecordLength) (RFC 5246 6.2.3)"
    }

    /// Looks for consecutive plausible record headers in `pending`; from the first, the bytes are read again.
    private mutating func hunt(start: UInt64, skipped: UInt64) -> RecordOutput? {
        var found: Int?
        var keepFrom = max(0, pending.count - (TLSLimits.headerLength - 1))
        pending.withUnsafeBytes { b in
            var p = 0
            candidates: while p + TLSLimits.headerLength <= b.count {
                var q = p
                var records = 0
                while records < TLSLimits.recordsToSynchronize {
                    if q + TLSLimits.headerLength > b.count {
                        // Needs more bytes to decide (unless one whole record and the end of what arrived agree).
                        if records >= 1 && q == b.count {
                            found = p
                            return
                        }
                        keepFrom = min(keepFrom, p)
                        break candidates
                    }
                    let header = RecordHeader.read(b, at: q)
                    guard header.isPlausible else { break }
                    records += 1
                    q += TLSLimits.headerLength + header.length
                }
                if records == TLSLimits.recordsToSynchronize {
                    found = p
                    return
                }
                p += 1
            }
        }
        if let position = found {
            replay = Array(pending[position...])
            pending.removeAll(keepingCapacity: true)
            offset = start + UInt64(position)
            state = .record
            return .synchronized(start: start + UInt64(position), skipped: skipped + UInt64(position))
        }
        var drop = keepFrom
        if pending.count - drop > TLSLimits.huntBufferLimit { drop = pending.count - TLSLimits.huntBufferLimit }
        if drop > 0 { pending.removeFirst(drop) }
        state = .hunting(start: start + UInt64(drop), skipped: skipped + UInt64(drop))
        return nil
    }
}
