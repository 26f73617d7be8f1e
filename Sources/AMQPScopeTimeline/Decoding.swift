// The engine's first stage: reassembly's events through each connection's TLS layer and AMQP codecs. What it finds is
// not applied here but recorded, in order, as the calls the timeline stage (`EngineState`) makes on the connection's
// record builder. The two stages share nothing else, so they can run one after the other on one thread (`Engine`) or
// on two threads with the recorded operations handed over in batches, and give the same answer either way.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

/// One thing the decoding stage found, for the timeline stage to apply to a connection's builder.
package enum StageOp {
    /// A reassembly event other than data (opened, packet, gap, fin, reset, ended, ...).
    case stream(StreamEvent)
    /// A codec event (waiting in the batch's queue of them: `OpBuffer.takeCodecEvent`).
    case codec(ConnectionID)
    /// A content-header, body, heartbeat or routine method frame when frames are not recorded: all the timeline takes
    /// from one, in place of its codec event (most frames are these, and an event is twice the size of an operation).
    case counted(ConnectionID, Direction, Timestamp, packet: Int, CountedFrame)
    /// A content-header frame and the body frame right after it, in the same packet: the two `counted` operations
    /// they would be, in one (most messages are small: such pairs were a sixth of the small mix's operations).
    case content(ConnectionID, Direction, Timestamp, packet: Int, bodyLength: Int)
    /// A 1.0 codec event (`OpBuffer.takeAMQP10Event`).
    case amqp10(ConnectionID)
    case tls(ConnectionID, TLSEvent)
    /// What the decoders concluded as the connection ends: its TLS summary, its verdict, and how many in-order bytes
    /// each direction's stream handed them (boxed, as it is large and rare: every operation is as large as the
    /// largest kind).
    indirect case concluded(ConnectionID, tls: TLSSummary?, verdict: Verdict, streamBytes: PerDirection<UInt64>)
    /// Reassembly's final word on the TCP states of a connection still open when the capture ends.
    case absorb(ConnectionSummary)
}

/// Values in the order they were added, each moved out once as it is taken: an array would copy each one out
/// (retaining what it holds) and destroy it again when emptied.
struct MoveQueue<Element> {
    private var base: UnsafeMutablePointer<Element>
    private var capacity: Int
    /// Where the next value goes; values from `head` to here wait.
    private var end = 0
    private var head = 0

    /// Values waiting.
    var count: Int { end - head }

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        base = .allocate(capacity: self.capacity)
    }

    /// Destroys what is left and frees the storage (the owner's deinit calls it).
    func release() {
        (base + head).deinitialize(count: end - head)
        base.deallocate()
    }

    mutating func append(_ element: consuming Element) {
        if end == capacity {
            let grown = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: base + head, count: end - head)
            base.deallocate()
            base = grown
            capacity *= 2
            end -= head
            head = 0
        }
        (base + end).initialize(to: element)
        end += 1
    }

    /// Changes the newest value in place (there must be one).
    mutating func changeLast<R>(_ body: (inout Element) -> R) -> R {
        precondition(head < end, "no value to change")
        return body(&(base + end - 1).pointee)
    }

    /// The oldest value not yet taken, moved out.
    mutating func take() -> Element {
        precondition(head < end, "taken more than was added")
        defer {
            head += 1
            if head == end {
                head = 0
                end = 0
            }
        }
        return (base + head).move()
    }
}

/// Operations in the order they were found. The codecs' events, which are large, wait in queues of their own, so
/// that the other operations stay small. Handed whole from one thread to another, and used by one at a time.
package final class OpBuffer: @unchecked Sendable {
    // Unchecked: one stage owns a buffer at a time (it is handed between threads whole), and no access to a queue
    // overlaps another; the runtime check cost one call per operation on the hottest path.
    @exclusivity(unchecked) private var ops: MoveQueue<StageOp>
    @exclusivity(unchecked) private var codec: MoveQueue<CodecEvent>
    @exclusivity(unchecked) private var amqp10: MoveQueue<AMQP10Event>

    package init(capacity: Int = 256) {
        ops = MoveQueue(capacity: capacity)
        codec = MoveQueue(capacity: capacity / 2)
        amqp10 = MoveQueue(capacity: 16)
    }

    deinit {
        ops.release()
        codec.release()
        amqp10.release()
    }

    /// Operations waiting.
    package var count: Int { ops.count }
    package var isEmpty: Bool { ops.count == 0 }

    func append(_ op: consuming StageOp) { ops.append(op) }
    func append(_ id: ConnectionID, _ event: consuming CodecEvent) {
        codec.append(event)
        ops.append(.codec(id))
    }
    func append(_ id: ConnectionID, _ event: consuming AMQP10Event) {
        amqp10.append(event)
        ops.append(.amqp10(id))
    }

    /// Turns the last operation, when it is the header frame counted just before this body frame (same connection,
    /// direction, time and packet), into one `content` operation for both; false when it is not.
    func join(body length: Int, to id: ConnectionID, _ direction: Direction, _ time: Timestamp, packet: Int) -> Bool {
        guard ops.count > 0 else { return false }
        return ops.changeLast { op in
            guard case .counted(id, direction, time, packet, .header) = op else { return false }
            op = .content(id, direction, time, packet: packet, bodyLength: length)
            return true
        }
    }

    /// The codec event of a `.codec` operation just taken.
    func takeCodecEvent() -> CodecEvent { codec.take() }
    /// The 1.0 codec event of an `.amqp10` operation just taken.
    func takeAMQP10Event() -> AMQP10Event { amqp10.take() }

    /// Hands each operation to `body`, in order, and leaves the buffer empty (its capacity kept). `body` takes the
    /// event of each `.codec` and `.amqp10` operation from the buffer.
    func drain(_ body: (consuming StageOp) -> Void) {
        while ops.count > 0 { body(ops.take()) }
        precondition(codec.count == 0 && amqp10.count == 0, "an event was not taken with its operation")
    }
}

/// Records the decoders' events as operations for the timeline stage.
struct OpRecorder: CodecSink, AMQP10Sink, TLSSink {
    var ops = OpBuffer()
    /// The connection whose decoders are running.
    var connection = ConnectionID(rawValue: 0)
    /// Frames are recorded whole (`EngineConfiguration.recordFrames`): none is only counted.
    var recordFrames = false
    /// Messages are kept whole (`EngineConfiguration.keepsMessages`): none is only followed.
    var keepsMessages = false
    var takesFlowMessages: Bool { !keepsMessages }

    mutating func consume(_ event: consuming CodecEvent) { ops.append(connection, event) }

    /// Unless frames are recorded, header, body, heartbeat and routine method frames are only counted: the decoder
    /// offers each here before making its event, and makes none.
    mutating func count(_ frame: CountedFrame, direction: Direction, time: Timestamp, packetNumber: Int) -> Bool {
        guard !recordFrames else { return false }
        if case .body(let length) = frame,
            ops.join(body: length, to: connection, direction, time, packet: packetNumber)
        {
            return true
        }
        ops.append(.counted(connection, direction, time, packet: packetNumber, frame))
        return true
    }
    mutating func consume(_ event: consuming AMQP10Event) { ops.append(connection, event) }
    mutating func consume(_ event: TLSEvent) { ops.append(.tls(connection, event)) }
}

/// A connection's TLS layer, held by reference: it is large, and most connections are not TLS.
final class TLSBox {
    /// Unchecked, like the other per-connection boxes: one owner, no overlapping access.
    @exclusivity(unchecked) var session: TLSSession
    init(_ session: TLSSession) { self.session = session }
}

/// The decoding half of one open connection: its TLS layer and codecs, and what they hold.
struct DecodeEntry {
    var decoder: ConnectionDecoder
    /// The AMQP 1.0 codec, once the 0-9-1 one saw a 1.0 protocol header; or, on a connection joined mid-stream on
    /// an AMQP port, hunting for 1.0 frames beside the 0-9-1 codec until one of them finds its frames.
    var amqp10: AMQP10Box?
    /// The 1.0 codec is only a candidate (hunting beside the 0-9-1 one).
    var amqp10Candidate = false
    /// The TLS layer, when the connection is TLS: on 5671 always, elsewhere when the client's first bytes are
    /// a TLS record header. Without keys it tells the story of the records; the codec then sees nothing.
    var tls: TLSBox?
    /// Whether the first client bytes have been looked at for TLS.
    var layerDecided: Bool
    /// The TLS layer has read bytes (or a gap): from then on an open connection's record shows its summary.
    var tlsRead = false
    /// What the decoder (and the TLS layer) held after the last call into them.
    var held = 0
    /// In-order bytes each direction's stream handed the decoders. Counted here and handed over as the connection
    /// ends, not sent as an operation of every segment: that was over a fifth of all operations, each 96 bytes moved
    /// from one thread to the other.
    var streamBytes = PerDirection<UInt64>(repeating: 0)
    /// The buffers decrypted application data is swapped into for the codec (kept, so they are not reallocated).
    var plaintext: [UInt8] = []
    var plaintextPieces: [PlaintextPiece] = []

    /// The TLS port (IANA "amqps").
    static let tlsPort: UInt16 = 5671
    /// The connection's server port (for the verdict of a TLS connection that was never decrypted).
    let serverPort: UInt16

    /// Secrets for decrypting, when a key log was given.
    var keyLog: KeyLog?

    /// The key log may still grow.
    let keysMayArrive: Bool

    init(decoder: ConnectionDecoder, info: ConnectionInfo, keyLog: KeyLog?, keysMayArrive: Bool) {
        self.decoder = decoder
        if info.opening == .midstream && decoder.onAMQPPort {
            amqp10 = AMQP10Box(AMQP10Decoder(configuration: decoder.configuration.amqp10, hunting: true))
            amqp10Candidate = true
        }
        self.keyLog = keyLog
        self.keysMayArrive = keysMayArrive
        serverPort = info.server.port
        if info.server.port == Self.tlsPort {
            tls = TLSBox(
                TLSSession(fromStart: info.opening == .handshake, keyLog: keyLog, keysMayArrive: keysMayArrive))
            layerDecided = true
        } else {
            layerDecided = info.opening != .handshake
        }
    }

    /// Hands what the TLS layer decrypted to the codec, record by record in arrival order, each with its own
    /// direction and the packet that completed it.
    mutating func feedPlaintext(byteAtATime: Bool = false, into out: inout OpRecorder) {
        guard tls != nil else { return }
        var bytes: [UInt8] = []
        var pieces: [PlaintextPiece] = []
        swap(&bytes, &plaintext)
        swap(&pieces, &plaintextPieces)
        defer {
            bytes.removeAll(keepingCapacity: true)
            pieces.removeAll(keepingCapacity: true)
            swap(&bytes, &plaintext)
            swap(&pieces, &plaintextPieces)
        }
        guard tls?.session.swapPlaintext(&bytes, &pieces) == true else { return }
        bytes.withUnsafeBytes { raw in
            var from = 0
            for piece in pieces {
                if piece.gap > 0 {
                    codecGap(piece.gap, piece.direction, piece.time, piece.packetNumber, into: &out)
                }
                let step = byteAtATime ? 1 : max(piece.end - from, 1)
                for start in stride(from: from, to: piece.end, by: step) {
                    codecData(
                        UnsafeRawBufferPointer(rebasing: raw[start..<min(start + step, piece.end)]),
                        piece.direction, piece.time, piece.packetNumber, into: &out)
                }
                from = piece.end
            }
        }
    }

    /// The client's first bytes: a TLS handshake record header (type 22, version 3.x) makes the connection TLS.
    mutating func decideLayer(_ bytes: UnsafeRawBufferPointer, _ event: StreamEvent) {
        guard !layerDecided, event.direction == .clientToServer, event.offset == 0, !bytes.isEmpty else { return }
        layerDecided = true
        if bytes[0] == ContentType.handshake.rawValue && (bytes.count < 2 || bytes[1] == 3) {
            tls = TLSBox(TLSSession(fromStart: true, keyLog: keyLog, keysMayArrive: keysMayArrive))
        }
    }

    /// In-order bytes of one direction, through the TLS layer (when there is one) into the codecs.
    mutating func data(
        _ bytes: UnsafeRawBufferPointer, _ event: StreamEvent, byteAtATime: Bool, into out: inout OpRecorder
    ) {
        decideLayer(bytes, event)
        if tls != nil {
            // Fed one byte at a time when asked, like the codec: chunking must not change the answer.
            let step = byteAtATime ? 1 : max(bytes.count, 1)
            for start in stride(from: 0, to: bytes.count, by: step) {
                tls?.session.data(
                    UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + step, bytes.count)]),
                    direction: event.direction, time: event.time, packetNumber: event.packetNumber, into: &out)
            }
            tlsRead = true
            feedPlaintext(byteAtATime: byteAtATime, into: &out)
        } else if byteAtATime {
            for i in 0..<bytes.count {
                codecData(
                    UnsafeRawBufferPointer(rebasing: bytes[i..<i + 1]), event.direction, event.time,
                    event.packetNumber, into: &out)
            }
        } else {
            codecData(bytes, event.direction, event.time, event.packetNumber, into: &out)
        }
    }

    /// Bytes lost from one direction's stream.
    mutating func gap(_ length: UInt64, _ event: StreamEvent, into out: inout OpRecorder) {
        if tls != nil {
            tls?.session.gap(
                length, direction: event.direction, time: event.time, packetNumber: event.packetNumber, into: &out)
            tlsRead = true
        } else {
            codecGap(length, event.direction, event.time, event.packetNumber, into: &out)
        }
    }

    /// Bytes given to the AMQP codecs: the 0-9-1 one, until a 1.0 header (or 1.0 frames found by sync) hand the
    /// connection to the 1.0 one.
    mutating func codecData(
        _ bytes: UnsafeRawBufferPointer, _ direction: Direction, _ time: Timestamp, _ packet: Int,
        into out: inout OpRecorder
    ) {
        if amqp10Candidate {
            // Both hunt; the first to find its frames keeps the connection.
            amqp10?.decoder.data(bytes, direction: direction, time: time, packetNumber: packet, into: &out)
            if amqp10?.decoder.isHunting(direction) == false {
                amqp10Candidate = false
                decoder.handOver(to: .amqp10(.amqp10), direction: direction, into: &out)
                return
            }
            decoder.data(bytes, direction: direction, time: time, packetNumber: packet, into: &out)
            switch decoder.verdict {
            case .undetermined: break
            default:
                amqp10Candidate = false
                amqp10 = nil
            }
            return
        }
        if amqp10 != nil {
            amqp10?.decoder.data(bytes, direction: direction, time: time, packetNumber: packet, into: &out)
            return
        }
        // Where the stream was, for the 1.0 codec if this call hands the connection over. Read only when it can (no
        // verdict yet, or 1.0 already): the call copied the whole decoder, and destroyed the copy, on every segment.
        let before: UInt64
        switch decoder.verdict {
        case .undetermined, .amqp10: before = decoder.streamOffset(direction)
        default: before = 0  // not read: the verdict does not change from here to 1.0
        }
        decoder.data(bytes, direction: direction, time: time, packetNumber: packet, into: &out)
        guard case .amqp10 = decoder.verdict else { return }
        // The 0-9-1 codec read the 1.0 protocol header (the stream's first eight bytes): the 1.0 codec reads the
        // rest, starting with what this call held after the header.
        var consumed = PerDirection<UInt64>(repeating: 0)
        consumed[direction] = 8
        amqp10 = AMQP10Box(AMQP10Decoder(configuration: decoder.configuration.amqp10, consumed: consumed))
        let skip = Int(min(UInt64(bytes.count), 8 - min(before, 8)))
        if skip < bytes.count {
            amqp10?.decoder.data(
                UnsafeRawBufferPointer(rebasing: bytes[skip...]), direction: direction, time: time,
                packetNumber: packet, into: &out)
        }
    }

    mutating func codecGap(
        _ length: UInt64, _ direction: Direction, _ time: Timestamp, _ packet: Int, into out: inout OpRecorder
    ) {
        if amqp10Candidate || amqp10 == nil {
            decoder.gap(length, direction: direction, time: time, packetNumber: packet, into: &out)
        }
        if amqp10 == nil, case .undetermined = decoder.verdict, decoder.onAMQPPort {
            // The protocol header was lost before anything decided the protocol: both codecs hunt from here, as
            // on a connection joined mid-stream.
            amqp10 = AMQP10Box(
                AMQP10Decoder(
                    configuration: decoder.configuration.amqp10,
                    consumed: PerDirection(
                        clientToServer: decoder.streamOffset(.clientToServer),
                        serverToClient: decoder.streamOffset(.serverToClient)), hunting: true))
            amqp10Candidate = true
            return
        }
        amqp10?.decoder.gap(length, direction: direction, time: time, packetNumber: packet, into: &out)
    }

    mutating func codecFinish(_ direction: Direction, _ time: Timestamp, _ packet: Int, into out: inout OpRecorder) {
        if amqp10Candidate {
            amqp10 = nil
            amqp10Candidate = false
        }
        if amqp10 != nil {
            amqp10?.decoder.finish(direction: direction, time: time, packetNumber: packet, into: &out)
        } else {
            decoder.finish(direction: direction, time: time, packetNumber: packet, into: &out)
        }
    }

    /// Mutating, like the decoders' own counts: read in place.
    var codecBufferedBytes: Int { mutating get { decoder.bufferedBytes + (amqp10?.decoder.bufferedBytes ?? 0) } }

    /// Keeps the total of what decoders hold; past the cap, the decoder that just grew sheds what it holds.
    mutating func account(_ event: StreamEvent, limit: Int, totalHeld: inout Int, into out: inout OpRecorder) {
        var now = codecBufferedBytes + (tls?.session.bufferedBytes ?? 0)
        if now != held || totalHeld > limit {
            totalHeld += now - held
            if totalHeld > limit && now > 0 {
                decoder.shed(time: event.time, packetNumber: event.packetNumber, into: &out)
                amqp10?.decoder.shed(time: event.time, packetNumber: event.packetNumber, into: &out)
                tls?.session.shed(into: &out)
                let after = codecBufferedBytes + (tls?.session.bufferedBytes ?? 0)
                totalHeld += after - now
                now = after
            }
            held = now
        }
    }

    /// The connection ended: the decoders give up what they hold, and say what they concluded.
    mutating func conclude(_ event: StreamEvent, configuration: EngineConfiguration, into out: inout OpRecorder) {
        tls?.session.finish(into: &out)
        feedPlaintext(into: &out)
        for direction in Direction.allCases {
            codecFinish(direction, event.time, event.packetNumber, into: &out)
        }
        let verdict: Verdict
        if let tls, !tls.session.summary.decrypted {
            verdict = .encrypted(
                onAMQPPort: serverPort == Self.tlsPort || configuration.reassembly.serverPorts.contains(serverPort))
        } else {
            verdict = decoder.verdict
        }
        out.ops.append(
            .concluded(event.connection, tls: tls?.session.summary, verdict: verdict, streamBytes: streamBytes))
    }
}

/// The decoding halves of the open connections. Receives reassembly's events and records, for the timeline stage,
/// every call the original single stage made on a builder, in the same order.
struct DecodingState: StreamSink {
    let configuration: EngineConfiguration
    /// The open connections' decoding halves, in place: a connection's entry is changed where it lies, with no
    /// reference to count per packet (a box per connection cost a retain and a release on every segment).
    var entries: [DecodeEntry?] = []
    var freeSlots: [Int] = []
    /// Open connections' slots in `entries`, by id.
    var slots = ConnectionTable<Int>()
    var cachedID = ConnectionID(rawValue: 0)
    var cachedSlot = -1
    /// What all decoders hold together (kept up to date around every call into a decoder).
    var totalHeld = 0
    /// The operations recorded since the timeline stage last took them.
    var out = OpRecorder()
    /// The current key log (a live capture hands over newer ones).
    var keyLog: KeyLog?

    init(configuration: EngineConfiguration) {
        self.configuration = configuration
        keyLog = configuration.keyLog
        out.recordFrames = configuration.recordFrames
        out.keepsMessages = configuration.keepsMessages
    }

    mutating func slot(of id: ConnectionID) -> Int? {
        if id == cachedID { return cachedSlot }
        guard let slot = slots[id] else { return nil }
        cachedID = id
        cachedSlot = slot
        return slot
    }

    /// An open connection's decoding half (a copy: for looking, not for changing).
    func entry(_ id: ConnectionID) -> DecodeEntry? { slots[id].flatMap { entries[$0] } }

    mutating func consume(_ event: StreamEvent) {
        switch event.kind {
        case .opened(let info):
            let onPort = configuration.reassembly.serverPorts.contains(info.server.port)
            let entry = DecodeEntry(
                decoder: ConnectionDecoder(
                    fromStart: info.opening == .handshake, onAMQPPort: onPort, configuration: configuration.codec),
                info: info, keyLog: keyLog, keysMayArrive: configuration.keyLogMayGrow)
            if let free = freeSlots.popLast() {
                entries[free] = entry
                slots[info.id] = free
            } else {
                entries.append(entry)
                slots[info.id] = entries.count - 1
            }
            out.ops.append(.stream(event))
        case .data(let bytes):
            guard let s = slot(of: event.connection) else { return }
            out.connection = event.connection
            // The two settings are read out first: passing the whole configuration copied it (170 bytes) per segment.
            // One access to the slot, through a function taking it inout: optional chaining on the array's element
            // left its accessor a call, twice per segment.
            Self.data(
                &entries[s], bytes, event, byteAtATime: configuration.byteAtATime,
                limit: configuration.maximumCodecBufferedBytes, totalHeld: &totalHeld, into: &out)
        case .gap(let length, _):
            out.ops.append(.stream(event))
            guard let s = slot(of: event.connection) else { return }
            out.connection = event.connection
            entries[s]?.gap(length, event, into: &out)
            entries[s]?.account(
                event, limit: configuration.maximumCodecBufferedBytes, totalHeld: &totalHeld, into: &out)
        case .ended:
            if let s = slots.removeValue(forKey: event.connection), var entry = entries[s].take() {
                freeSlots.append(s)
                if cachedID == event.connection {
                    cachedSlot = -1
                    cachedID = ConnectionID(rawValue: 0)
                }
                totalHeld -= entry.held
                out.connection = event.connection
                entry.conclude(event, configuration: configuration, into: &out)
            }
            out.ops.append(.stream(event))
        case .packet, .fin, .reset, .overlapConflict, .dataAfterFIN:
            out.ops.append(.stream(event))
        }
    }

    @inline(__always)
    private static func data(
        _ entry: inout DecodeEntry?, _ bytes: UnsafeRawBufferPointer, _ event: StreamEvent, byteAtATime: Bool,
        limit: Int, totalHeld: inout Int, into out: inout OpRecorder
    ) {
        entry?.streamBytes[event.direction] += UInt64(bytes.count)
        entry?.data(bytes, event, byteAtATime: byteAtATime, into: &out)
        entry?.account(event, limit: limit, totalHeld: &totalHeld, into: &out)
    }

    /// A newer key log: connections opened from now on use it, and open ones waiting for their secrets look again.
    mutating func update(keyLog: KeyLog) {
        self.keyLog = keyLog
        for s in entries.indices {
            entries[s]?.keyLog = keyLog
            entries[s]?.tls?.session.update(keyLog: keyLog)
        }
    }
}
