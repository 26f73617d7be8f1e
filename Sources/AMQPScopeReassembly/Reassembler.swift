// TCP reassembly: sequence numbers modulo 2^32, out-of-order bytes buffered under caps, gaps reported as skips.
// The in-order path hands the packet's own bytes to the sink: no copy, no allocation.
import AMQPScopePackets

/// Limits and ports for TCP reassembly.
public struct ReassemblyConfiguration: Hashable, Sendable {
    /// Ports on which the server side of a mid-stream connection is recognised.
    public var serverPorts: Set<UInt16> = [5672, 5671]
    /// Out-of-order bytes buffered per direction before the hole is skipped as a gap.
    public var maximumBufferedBytesPerDirection = 4 * 1024 * 1024
    /// Out-of-order bytes buffered over all connections before holes are skipped.
    public var maximumBufferedBytesTotal = 64 * 1024 * 1024
    /// Open connections silent this long (nanoseconds of capture time) are ended; nil keeps them to the end.
    public var idleTimeout: Int64? = nil
    /// Closed connections (both FINs, or an RST) are forgotten after this much capture time (nanoseconds).
    public var closedLinger: Int64 = 60 * 1_000_000_000
    /// Closed connections kept lingering at once. Past it, those closed longest ago are forgotten first, though none
    /// before `minimumClosedLinger`: a busy host that opens and closes thousands of connections a second would
    /// otherwise keep a minute of them.
    public var maximumClosedLingering = 4096
    /// How long a closed connection lingers at least (for the last ACK and a retransmitted FIN), in nanoseconds.
    public var minimumClosedLinger: Int64 = 1_000_000_000
    /// Connections tracked at once; past it the least recently active one is ended.
    public var maximumConnections = 100_000

    /// The defaults.
    public init() {}
}

struct Chunk {
    var offset: UInt64
    var bytes: [UInt8]  // the captured prefix
    var missing: Int  // bytes after the prefix that were on the wire but not captured
    /// The packet that carried it, and its time: the stamp its bytes take when a hole before it is given up on.
    var packetNumber: Int
    var time: Timestamp
    var end: UInt64 { offset + UInt64(bytes.count + missing) }
}

/// Buffered chunks in stream order; consumed from the front by moving `head`, compacted now and then,
/// so that draining one chunk costs O(1) however many wait behind it.
struct ChunkQueue {
    private var storage: [Chunk] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Chunk? { isEmpty ? nil : storage[head] }
    var firstOffset: UInt64? { isEmpty ? nil : storage[head].offset }

    mutating func popFirst() -> Chunk? {
        guard !isEmpty else { return nil }
        let chunk = storage[head]
        storage[head].bytes = []  // release its bytes now
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return chunk
    }

    /// The chunks overlapping [start, end). Chunks are disjoint and sorted, so their ends are sorted too.
    func overlapping(_ start: UInt64, _ end: UInt64) -> ArraySlice<Chunk> {
        var low = head
        var high = storage.count
        while low < high {
            let mid = (low + high) / 2
            if storage[mid].end <= start { low = mid + 1 } else { high = mid }
        }
        var upper = low
        while upper < storage.count && storage[upper].offset < end { upper += 1 }
        return storage[low..<upper]
    }

    /// Inserts keeping the queue ordered by offset (searching from the back: arrivals are mostly in order).
    mutating func insert(_ chunk: Chunk) {
        var position = storage.count
        while position > head && storage[position - 1].offset > chunk.offset { position -= 1 }
        storage.insert(chunk, at: position)
    }
}

struct HalfConnection {
    var started = false
    var base: UInt32 = 0  // sequence number of stream offset 0
    var nextOffset: UInt64 = 0  // next in-order stream offset expected
    var sentSYN = false
    var synSequence: UInt32 = 0
    var finRank = 0  // 0: no FIN; else 1 for the connection's first FIN, 2 for the second
    var finOffset: UInt64 = 0
    var sentRST = false
    var windowScale: UInt8?
    var lastWindow: UInt32 = 65_535
    var chunks = ChunkQueue()
    var bufferedBytes = 0
    var packetsSeen = 0

    var sentFIN: Bool { finRank != 0 }

    /// The first buffered chunk, taken out when it starts at or before the next offset expected. A mutating method
    /// so that the half is used in place: reading `chunks.first` through `PerDirection`'s getter copied the whole
    /// half (its chunk queue retained and released) on every segment, though the queue is nearly always empty.
    mutating func popReady() -> Chunk? {
        guard let first = chunks.firstOffset, first <= nextOffset else { return nil }
        return chunks.popFirst()
    }

    var nextSequence: UInt32 { base &+ UInt32(truncatingIfNeeded: nextOffset) }
    /// The stream offset of the next sequence number the peer expects: a FIN consumes one.
    var expectedOffset: UInt64 { sentFIN && nextOffset >= finOffset ? finOffset + 1 : nextOffset }

    /// Stream offset of a sequence number, taken within ±2^31 of the next expected one.
    func offset(of sequence: UInt32) -> Int64 {
        Int64(nextOffset) + Int64(Int32(bitPattern: sequence &- nextSequence))
    }
}

struct Connection {
    var info: ConnectionInfo
    var halves = PerDirection(repeating: HalfConnection())
    var firstTime: Timestamp
    var lastTime: Timestamp
    var synAckSeen = false
    var handshakeDone = false
    var endReason: EndReason?
    /// In the reassembler's queue of closed connections.
    var lingering = false

    /// Its id, last packet time and end reason (mutating only so that callers reach it in place).
    mutating func identity() -> (ConnectionID, Timestamp, EndReason?) { (info.id, lastTime, endReason) }

    /// Marks a connection that TCP has just closed as lingering, and gives its id; nil if it is not closed or already
    /// lingers. (Mutating, so that the caller reaches it in place rather than copying it.)
    mutating func startLingering() -> ConnectionID? {
        guard !lingering, isClosed else { return nil }
        lingering = true
        return info.id
    }
    var scalingOn: Bool { halves.clientToServer.windowScale != nil && halves.serverToClient.windowScale != nil }

    func state(of side: Side) -> TCPState {
        let own = halves[sentBy: side]
        let peer = halves[sentBy: side.peer]
        if own.sentRST || peer.sentRST { return .closed }
        if own.sentFIN && peer.sentFIN { return own.finRank < peer.finRank ? .timeWait : .lastAck }
        if own.sentFIN { return .finWait }
        if peer.sentFIN { return .closeWait }
        if info.opening == .handshake && !handshakeDone {
            if side == .client { return synAckSeen ? .established : .synSent }
            return .synReceived
        }
        return .established
    }

    /// Closed as far as TCP goes: both FINs, or an RST.
    var isClosed: Bool {
        halves.clientToServer.sentRST || halves.serverToClient.sentRST
            || (halves.clientToServer.sentFIN && halves.serverToClient.sentFIN)
    }
}

struct FlowKey: Hashable {
    var a: Endpoint
    var b: Endpoint
    init(_ x: Endpoint, _ y: Endpoint) {
        if x < y {
            a = x
            b = y
        } else {
            a = y
            b = x
        }
    }

    /// Looked up once per packet. Two IPv4 endpoints fit whole in two words, which the hasher takes at once rather
    /// than field by field; the words say everything the fields do, so hostile addresses collide no more than before.
    func hash(into hasher: inout Hasher) {
        if !a.address.isIPv6 && !b.address.isIPv6 {
            hasher.combine(a.address.low | b.address.low << 32)
            hasher.combine(UInt64(a.port) | UInt64(b.port) << 16)
        } else {
            hasher.combine(a.address.high)
            hasher.combine(a.address.low)
            hasher.combine(b.address.high)
            hasher.combine(b.address.low)
            hasher.combine(
                UInt64(a.port) | UInt64(b.port) << 16 | (a.address.isIPv6 ? 1 << 32 : 0)
                    | (b.address.isIPv6 ? 1 << 33 : 0))
        }
    }
}

/// A connection's summary, for reports.
package struct ConnectionSummary: Hashable, Sendable {
    package var info: ConnectionInfo
    package var firstTime: Timestamp
    package var lastTime: Timestamp
    package var endReason: EndReason?
    package var clientState: TCPState
    package var serverState: TCPState
}

package struct Reassembler {
    package let configuration: ReassemblyConfiguration
    private var connections: [Connection?] = []
    private var freeSlots: [Int] = []
    private var index: [FlowKey: Int] = [:]
    /// The slot each 4-tuple was last found in, by a cheap hash of the 4-tuple: checked against the slot's own
    /// endpoints, so a stale or colliding entry is only a miss, and `index` (hashed with a seeded SipHash, as a capture
    /// chooses its 4-tuples) answers. Most packets hit, which saves hashing the key. Needs no upkeep: a slot holds a
    /// connection exactly while `index` maps that connection's 4-tuple to it.
    private var recent = [Int32](repeating: -1, count: Reassembler.recentCount)
    private static let recentCount = 8192
    private var nextID = 1
    private var totalBuffered = 0
    private var lastSweep: Timestamp?
    private var lastIdleWalk: Timestamp?
    /// Closed connections in the order they closed (or were last heard from after closing): the oldest are forgotten
    /// first. Entries of connections already ended are skipped when reached.
    private var closedQueue: [(id: ConnectionID, slot: Int, since: Timestamp)] = []
    private var closedHead = 0
    /// Connections in `closedQueue` that are still tracked.
    private var lingeringCount = 0
    /// Connections ended by the connection cap.
    package private(set) var evictedForCap = 0

    package init(configuration: ReassemblyConfiguration = ReassemblyConfiguration()) {
        self.configuration = configuration
    }

    package var trackedConnections: Int { index.count }
    package var bufferedBytes: Int { totalBuffered }

    /// Feeds one TCP segment. `bytes` are the packet's captured bytes (the segment's payload lies within them).
    package mutating func process<S: StreamSink>(
        _ segment: TCPSegment, header: PacketHeader, bytes: UnsafeRawBufferPointer, into sink: inout S
    ) {
        let time = header.timestamp
        sweepIfDue(now: time, into: &sink)
        let isBareSYN = segment.flags.contains(.syn) && !segment.flags.contains(.ack)

        var slot: Int
        if let existing = trackedSlot(segment.source, segment.destination) {
            slot = existing
            // A new SYN on a 4-tuple that is closed, or with another initial sequence number, starts a new connection.
            if isBareSYN, let connection = connections[slot] {
                let clientHalf = connection.halves.clientToServer
                let sameSYN =
                    clientHalf.sentSYN && clientHalf.synSequence == segment.sequence
                    && connection.info.client == segment.source
                // (A client's SYN starts its half, so `started` covers a SYN seen before.)
                if !sameSYN && (connection.isClosed || connection.info.client != segment.source || clientHalf.started) {
                    end(slot: slot, reason: .replaced, time: time, packetNumber: header.number, into: &sink)
                    slot = open(segment, header: header, into: &sink)
                }
            }
        } else {
            slot = open(segment, header: header, into: &sink)
        }
        handle(segment, header: header, bytes: bytes, slot: slot, into: &sink)
    }

    /// The slot of the connection between two endpoints, if one is tracked.
    private mutating func trackedSlot(_ x: Endpoint, _ y: Endpoint) -> Int? {
        // Symmetric in the two endpoints, like FlowKey; a Fibonacci multiplication spreads ephemeral ports.
        let mixed =
            (x.address.low ^ y.address.low ^ x.address.high ^ y.address.high) &+ UInt64(x.port ^ y.port) << 32
            &+ UInt64(x.port &+ y.port)
        let r = Int(truncatingIfNeeded: (mixed &* 0x9E37_79B9_7F4A_7C15) >> 51)
        let cached = Int(recent[r])
        // Read in place: a connection is large, and an optional chain on the array's element copied it.
        let hit = connections.withUnsafeBufferPointer { c in
            guard cached >= 0, let client = c[cached]?.info.client, let server = c[cached]?.info.server else {
                return false
            }
            return (client == x && server == y) || (client == y && server == x)
        }
        if hit { return cached }
        guard let slot = index[FlowKey(x, y)] else { return nil }
        recent[r] = Int32(truncatingIfNeeded: slot)
        return slot
    }

    /// Ends every connection (flushing buffered bytes as gaps): call when the capture ends.
    package mutating func finish<S: StreamSink>(at time: Timestamp, into sink: inout S) {
        let slots = index.values.sorted { connections[$0]!.info.id < connections[$1]!.info.id }
        for slot in slots {
            end(slot: slot, reason: .captureEnded, time: time, packetNumber: 0, into: &sink)
        }
    }

    /// Ends idle and long-closed connections as of `now` (capture time); live capture calls it on a timer.
    package mutating func evictIdle<S: StreamSink>(now: Timestamp, into sink: inout S) {
        forgetClosed(now: now, into: &sink)
        // Idle connections are looked for every tenth of the idle timeout (at most every minute): a walk over every
        // connection, so not on every tick.
        guard let idle = configuration.idleTimeout else { return }
        if let last = lastIdleWalk, now.since(last) < min(idle / 10, 60_000_000_000) { return }
        lastIdleWalk = now
        var expired: [(ConnectionID, Int)] = []
        for slot in index.values {
            guard connections[slot]?.isClosed == false, let last = connections[slot]?.lastTime, now.since(last) >= idle,
                let id = connections[slot]?.info.id
            else { continue }
            expired.append((id, slot))
        }
        expired.sort { $0.0 < $1.0 }
        for (_, slot) in expired {
            end(slot: slot, reason: .idle, time: now, packetNumber: 0, into: &sink)
        }
    }

    /// Ends the closed connections that have lingered long enough, oldest first: after `closedLinger`, or sooner
    /// (but not before `minimumClosedLinger`) while more than `maximumClosedLingering` linger.
    private mutating func forgetClosed<S: StreamSink>(now: Timestamp, into sink: inout S) {
        while closedHead < closedQueue.count {
            let (id, slot, since) = closedQueue[closedHead]
            guard let (current, last, reason) = connections[slot]?.identity(), current == id else {
                closedHead += 1  // ended otherwise (replaced, evicted)
                continue
            }
            let quiet = now.since(last)
            let crowded = lingeringCount > configuration.maximumClosedLingering
            if quiet >= configuration.closedLinger || (crowded && quiet >= configuration.minimumClosedLinger) {
                closedHead += 1
                end(slot: slot, reason: reason ?? .finished, time: now, packetNumber: 0, into: &sink)
            } else if last > since {
                // Heard from after it closed: its linger counts from then, so it goes to the back.
                closedHead += 1
                closedQueue.append((id, slot, last))
            } else {
                break
            }
        }
        if closedHead > 1024 && closedHead * 2 > closedQueue.count {
            closedQueue.removeFirst(closedHead)
            closedHead = 0
        }
    }

    /// Summaries of the connections still tracked.
    package func summaries() -> [ConnectionSummary] {
        index.values.compactMap { connections[$0] }.map(Self.summary).sorted { $0.info.id < $1.info.id }
    }

    static func summary(_ c: Connection) -> ConnectionSummary {
        ConnectionSummary(
            info: c.info, firstTime: c.firstTime, lastTime: c.lastTime,
            endReason: c.endReason,
            clientState: c.state(of: .client), serverState: c.state(of: .server))
    }

    // MARK: - Opening and ending

    private mutating func open<S: StreamSink>(_ segment: TCPSegment, header: PacketHeader, into sink: inout S) -> Int {
        if index.count >= configuration.maximumConnections { evictLeastRecent(header: header, into: &sink) }
        let flags = segment.flags
        let client: Endpoint
        let server: Endpoint
        let evidence: RoleEvidence
        if flags.contains(.syn) && !flags.contains(.ack) {
            (client, server, evidence) = (segment.source, segment.destination, .syn)
        } else if flags.contains(.syn) {
            (client, server, evidence) = (segment.destination, segment.source, .synAck)
        } else {
            let sourceKnown = configuration.serverPorts.contains(segment.source.port)
            let destinationKnown = configuration.serverPorts.contains(segment.destination.port)
            if sourceKnown != destinationKnown {
                (client, server, evidence) =
                    sourceKnown
                    ? (segment.destination, segment.source, .serverPort)
                    : (segment.source, segment.destination, .serverPort)
            } else if segment.source.port < segment.destination.port
                || (segment.source.port == segment.destination.port && segment.source < segment.destination)
            {
                (client, server, evidence) = (segment.destination, segment.source, .lowerPort)
            } else {
                (client, server, evidence) = (segment.source, segment.destination, .lowerPort)
            }
        }
        let info = ConnectionInfo(
            id: ConnectionID(rawValue: nextID), client: client, server: server,
            opening: flags.contains(.syn) ? .handshake : .midstream, roleEvidence: evidence)
        nextID += 1
        let connection = Connection(info: info, firstTime: header.timestamp, lastTime: header.timestamp)
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            connections[slot] = connection
        } else {
            slot = connections.count
            connections.append(connection)
        }
        index[FlowKey(client, server)] = slot
        sink.consume(
            StreamEvent(
                connection: info.id, direction: .clientToServer, time: header.timestamp,
                packetNumber: header.number, offset: 0, kind: .opened(info)))
        return slot
    }

    /// At the connection cap, ends the least recently active 1% (at least one) in one pass: a scan per hundred new
    /// connections rather than per connection, so a flood of connections costs amortised constant time each.
    private mutating func evictLeastRecent<S: StreamSink>(header: PacketHeader, into sink: inout S) {
        var candidates: [(time: Timestamp, id: ConnectionID, slot: Int)] = []
        candidates.reserveCapacity(index.count)
        for slot in index.values {
            if let c = connections[slot] { candidates.append((c.lastTime, c.info.id, slot)) }
        }
        let batch = max(1, index.count / 100)
        candidates.sort { ($0.time, $0.id) < ($1.time, $1.id) }
        for victim in candidates.prefix(batch) {
            evictedForCap += 1
            end(slot: victim.slot, reason: .evicted, time: header.timestamp, packetNumber: header.number, into: &sink)
        }
    }

    private mutating func end<S: StreamSink>(
        slot: Int, reason: EndReason, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        guard var connection = connections[slot] else { return }
        let id = connection.info.id
        for direction in Direction.allCases {
            while !connection.halves[direction].chunks.isEmpty {
                connection.skipHole(
                    direction, reason: .lost, time: time, packetNumber: packetNumber,
                    totalBuffered: &totalBuffered, into: &sink)
            }
            // A FIN past the stream's end: the bytes before it were sent but never captured.
            let half = connection.halves[direction]
            if half.sentFIN && half.finOffset > half.nextOffset {
                connection.report(
                    gap: half.finOffset - half.nextOffset, at: half.nextOffset, reason: .lost, direction, time: time,
                    packetNumber: packetNumber, into: &sink)
                connection.halves[direction].nextOffset = half.finOffset
            }
        }
        // A connection TCP already closed ended the way it closed; otherwise, for the reason given.
        sink.consume(
            StreamEvent(
                connection: id, direction: .clientToServer, time: time, packetNumber: packetNumber,
                offset: 0, kind: .ended(connection.endReason ?? reason)))
        index[FlowKey(connection.info.client, connection.info.server)] = nil
        if connection.lingering { lingeringCount -= 1 }
        connections[slot] = nil
        freeSlots.append(slot)
    }

    private mutating func sweepIfDue<S: StreamSink>(now: Timestamp, into sink: inout S) {
        // Sweep at most once per second of capture time: bounded work per packet.
        if let last = lastSweep, now.since(last) < 1_000_000_000 { return }
        lastSweep = now
        evictIdle(now: now, into: &sink)
    }

    // MARK: - Segments

    private mutating func handle<S: StreamSink>(
        _ segment: TCPSegment, header: PacketHeader, bytes: UnsafeRawBufferPointer, slot: Int, into sink: inout S
    ) {
        // Changed in place: nothing is copied or moved per packet. Through a function taking the slot inout, as
        // optional chaining on the array's element left its accessor a call per packet.
        let grown = Self.handle(
            &connections[slot], segment, header: header, bytes: bytes, totalBuffered: &totalBuffered, into: &sink)
        if segment.flags.contains(.fin) || segment.flags.contains(.rst),
            let id = connections[slot]?.startLingering()
        {
            lingeringCount += 1
            closedQueue.append((id, slot, header.timestamp))
        }
        guard let direction = grown ?? nil, var connection = connections[slot].take() else { return }
        enforceLimits(&connection, direction, time: header.timestamp, packetNumber: header.number, into: &sink)
        connections[slot] = connection
    }

    @inline(__always)
    private static func handle<S: StreamSink>(
        _ connection: inout Connection?, _ segment: TCPSegment, header: PacketHeader, bytes: UnsafeRawBufferPointer,
        totalBuffered: inout Int, into sink: inout S
    ) -> Direction?? {
        connection?.handle(segment, header: header, bytes: bytes, totalBuffered: &totalBuffered, into: &sink)
    }

    private mutating func enforceLimits<S: StreamSink>(
        _ connection: inout Connection, _ direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        while connection.halves[direction].bufferedBytes > configuration.maximumBufferedBytesPerDirection
            || (totalBuffered > configuration.maximumBufferedBytesTotal
                && connection.halves[direction].bufferedBytes > 0)
        {
            connection.skipHole(
                direction, reason: .bufferLimit, time: time, packetNumber: packetNumber, totalBuffered: &totalBuffered,
                into: &sink)
        }
        // Still over the total (other connections hold it): skip their holes, largest first.
        while totalBuffered > configuration.maximumBufferedBytesTotal {
            var largest: (slot: Int, direction: Direction, bytes: Int)?
            for slot in index.values {
                guard let c = connections[slot] else { continue }
                for dir in Direction.allCases where c.halves[dir].bufferedBytes > (largest?.bytes ?? 0) {
                    largest = (slot, dir, c.halves[dir].bufferedBytes)
                }
            }
            guard let largest, var other = connections[largest.slot] else { break }
            connections[largest.slot] = nil
            other.skipHole(
                largest.direction, reason: .bufferLimit, time: time, packetNumber: packetNumber,
                totalBuffered: &totalBuffered, into: &sink)
            connections[largest.slot] = other
        }
    }
}

extension Connection {
    /// One segment of this connection. Returns the direction whose out-of-order buffer grew (its limits are then
    /// checked by the reassembler, which sees every connection), or nil.
    mutating func handle<S: StreamSink>(
        _ segment: TCPSegment, header: PacketHeader, bytes: UnsafeRawBufferPointer, totalBuffered: inout Int,
        into sink: inout S
    ) -> Direction? {
        var grown: Direction?

        let direction: Direction = segment.source == info.client ? .clientToServer : .serverToClient
        let id = info.id
        let time = header.timestamp
        let flags = segment.flags
        lastTime = time

        // Handshake bookkeeping.
        if flags.contains(.syn) {
            if !halves[direction].sentSYN {
                halves[direction].sentSYN = true
                halves[direction].synSequence = segment.sequence
                halves[direction].started = true
                halves[direction].base = segment.sequence &+ 1
                halves[direction].nextOffset = 0
                halves[direction].windowScale = segment.options.windowScale
            }
            if flags.contains(.ack) && direction == .serverToClient { synAckSeen = true }
        } else if flags.contains(.ack) && direction == .clientToServer && synAckSeen {
            handshakeDone = true
        }
        if !halves[direction].started && !flags.contains(.rst) {
            halves[direction].started = true
            halves[direction].base = segment.sequence
        }

        // Classify the payload against what this direction has delivered.
        let payloadLength = segment.payloadLength
        var info = PacketInfo(
            flags: flags, sequence: segment.sequence, acknowledgment: segment.acknowledgment,
            payloadLength: payloadLength, wireLength: header.originalLength,
            window: flags.contains(.syn) || !scalingOn
                ? UInt32(segment.window)
                : UInt32(segment.window) << UInt32(min(halves[direction].windowScale ?? 0, 14)),
            isRetransmission: false, isPartialRetransmission: false, isOutOfOrder: false, isKeepalive: false)
        let dataSequence = flags.contains(.syn) ? segment.sequence &+ 1 : segment.sequence
        let start = halves[direction].started ? halves[direction].offset(of: dataSequence) : 0
        let nextOffset = Int64(halves[direction].nextOffset)
        if payloadLength <= 1 && start == nextOffset - 1 && !flags.contains(.syn) && !flags.contains(.fin)
            && !flags.contains(.rst)
        {
            info.isKeepalive = true
        } else if payloadLength > 0 {
            let end = start + Int64(payloadLength)
            if end <= nextOffset {
                info.isRetransmission = true
            } else if start < nextOffset {
                info.isPartialRetransmission = true
            } else if start > nextOffset {
                info.isOutOfOrder = true
            }
        }

        halves[direction].packetsSeen += 1

        sink.consume(
            StreamEvent(
                connection: id, direction: direction, time: time, packetNumber: header.number,
                offset: UInt64(max(0, start)), kind: .packet(info)))

        // Payload.
        if payloadLength > 0 && !info.isKeepalive && !info.isRetransmission {
            if halves[direction].sentFIN && start >= Int64(halves[direction].finOffset) {
                sink.consume(
                    StreamEvent(
                        connection: id, direction: direction, time: time, packetNumber: header.number,
                        offset: UInt64(max(0, start)), kind: .dataAfterFIN(length: payloadLength)))
            } else {
                let payload = UnsafeRawBufferPointer(rebasing: bytes[segment.payloadRange])
                if accept(
                    direction, start: start, payload: payload, wireLength: payloadLength,
                    time: time, packetNumber: header.number, totalBuffered: &totalBuffered, into: &sink)
                {
                    grown = direction
                }
            }
        }

        // FIN: the first one this direction sends marks its half-close.
        if flags.contains(.fin) && !halves[direction].sentFIN {
            let otherRank = halves[direction.reversed].finRank
            halves[direction].finRank = otherRank == 0 ? 1 : 2
            halves[direction].finOffset = UInt64(max(0, start + Int64(payloadLength)))
            sink.consume(
                StreamEvent(
                    connection: id, direction: direction, time: time, packetNumber: header.number,
                    offset: halves[direction].finOffset, kind: .fin))
            if halves.clientToServer.sentFIN && halves.serverToClient.sentFIN && endReason == nil {
                endReason = .finished
            }
        }

        // RST: who reset whom, and the state each side was in when it landed.
        if flags.contains(.rst) {
            let expected = halves[direction]  // what the receiver expects next from this sender
            let distance = expected.started ? expected.offset(of: segment.sequence) - Int64(expected.expectedOffset) : 0
            // The receiver's window as it last advertised it; 65,535 when it has sent nothing yet.
            let receiverWindow =
                halves[direction.reversed].packetsSeen > 0 ? halves[direction.reversed].lastWindow : 65_535
            let reset = ResetInfo(
                exact: distance == 0,
                inWindow: distance >= 0 && distance < Int64(max(receiverWindow, 1)),
                senderState: state(of: direction.sender),
                receiverState: state(of: direction.receiver),
                repeated: expected.sentRST)
            halves[direction].sentRST = true
            if endReason == nil { endReason = .reset }
            sink.consume(
                StreamEvent(
                    connection: id, direction: direction, time: time, packetNumber: header.number,
                    offset: UInt64(max(0, Int64(expected.expectedOffset) + distance)), kind: .reset(reset)))
        }
        halves[direction].lastWindow = info.window
        return grown
    }

    /// Delivers or buffers one segment's payload at stream offset `start`; true when it was buffered out of order.
    mutating func accept<S: StreamSink>(
        _ direction: Direction, start: Int64, payload: UnsafeRawBufferPointer,
        wireLength: Int, time: Timestamp, packetNumber: Int, totalBuffered: inout Int, into sink: inout S
    ) -> Bool {
        let id = info.id
        let next = Int64(halves[direction].nextOffset)
        let end = start + Int64(wireLength)
        guard end > next else { return false }
        if start <= next {
            // In order (possibly overlapping what was delivered): hand over the new part of the packet's bytes.
            let skip = Int(next - start)
            if skip < payload.count {
                let fresh = UnsafeRawBufferPointer(rebasing: payload[skip...])
                sink.consume(
                    StreamEvent(
                        connection: id, direction: direction, time: time, packetNumber: packetNumber,
                        offset: UInt64(next), kind: .data(fresh)))
            }
            let uncaptured = Int64(wireLength - payload.count)
            if uncaptured > 0 {
                let gapStart = max(next, start + Int64(payload.count))
                report(
                    gap: UInt64(end - gapStart), at: UInt64(gapStart), reason: .notCaptured, direction,
                    time: time, packetNumber: packetNumber, into: &sink)
            }
            halves[direction].nextOffset = UInt64(end)
            drain(direction, time: time, packetNumber: packetNumber, totalBuffered: &totalBuffered, into: &sink)
            return false
        }
        // Ahead of a hole: keep the parts no earlier copy covers (first copy wins), compare the overlaps.
        insert(
            direction, start: UInt64(start), payload: payload, wireLength: wireLength,
            time: time, packetNumber: packetNumber, totalBuffered: &totalBuffered, into: &sink)
        return true
    }

    mutating func insert<S: StreamSink>(
        _ direction: Direction, start: UInt64, payload: UnsafeRawBufferPointer,
        wireLength: Int, time: Timestamp, packetNumber: Int, totalBuffered: inout Int, into sink: inout S
    ) {
        let capturedEnd = start + UInt64(payload.count)
        let end = start + UInt64(wireLength)
        var uncovered: [(UInt64, UInt64)] = [(start, end)]
        var conflicts = 0
        for chunk in halves[direction].chunks.overlapping(start, end) {
            // Compare the bytes both copies captured.
            let lo = max(chunk.offset, start)
            let hi = min(chunk.offset + UInt64(chunk.bytes.count), capturedEnd)
            if lo < hi {
                for position in lo..<hi
                where chunk.bytes[Int(position - chunk.offset)] != payload[Int(position - start)] {
                    conflicts += 1
                    break
                }
            }
            var remaining: [(UInt64, UInt64)] = []
            for (a, b) in uncovered {
                if chunk.end <= a || chunk.offset >= b {
                    remaining.append((a, b))
                    continue
                }
                if a < chunk.offset { remaining.append((a, chunk.offset)) }
                if chunk.end < b { remaining.append((chunk.end, b)) }
            }
            uncovered = remaining
        }
        if conflicts > 0 {
            sink.consume(
                StreamEvent(
                    connection: info.id, direction: direction, time: time,
                    packetNumber: packetNumber, offset: start, kind: .overlapConflict(length: wireLength)))
        }
        for (a, b) in uncovered {
            let capturedHi = min(b, capturedEnd)
            let bytes: [UInt8] =
                a < capturedHi
                ? Array(UnsafeRawBufferPointer(rebasing: payload[Int(a - start)..<Int(capturedHi - start)])) : []
            halves[direction].chunks.insert(
                Chunk(
                    offset: a, bytes: bytes, missing: Int(b - a) - bytes.count, packetNumber: packetNumber, time: time))
            halves[direction].bufferedBytes += bytes.count
            totalBuffered += bytes.count
        }
    }

    /// Delivers buffered chunks that the stream has now reached: as of the packet that reached them, or, when a hole
    /// was given up on (`ownStamps`), each as of the packet that carried it, as tshark places them.
    mutating func drain<S: StreamSink>(
        _ direction: Direction, time: Timestamp, packetNumber: Int, totalBuffered: inout Int, into sink: inout S,
        ownStamps: Bool = false
    ) {
        while let chunk = halves[direction].popReady() {
            halves[direction].bufferedBytes -= chunk.bytes.count
            totalBuffered -= chunk.bytes.count
            let next = halves[direction].nextOffset
            guard chunk.end > next else { continue }
            let skip = Int(next - chunk.offset)
            if skip < chunk.bytes.count {
                chunk.bytes.withUnsafeBytes { raw in
                    sink.consume(
                        StreamEvent(
                            connection: info.id, direction: direction, time: ownStamps ? chunk.time : time,
                            packetNumber: ownStamps ? chunk.packetNumber : packetNumber, offset: next,
                            kind: .data(UnsafeRawBufferPointer(rebasing: raw[skip...]))))
                }
            }
            if chunk.missing > 0 {
                let gapStart = max(next, chunk.offset + UInt64(chunk.bytes.count))
                report(
                    gap: chunk.end - gapStart, at: gapStart, reason: .notCaptured, direction,
                    time: ownStamps ? chunk.time : time, packetNumber: ownStamps ? chunk.packetNumber : packetNumber,
                    into: &sink)
            }
            halves[direction].nextOffset = chunk.end
        }
    }

    /// Skips the hole before the first buffered chunk: the bytes in it never arrived.
    mutating func skipHole<S: StreamSink>(
        _ direction: Direction, reason: GapReason, time: Timestamp, packetNumber: Int,
        totalBuffered: inout Int, into sink: inout S
    ) {
        guard let first = halves[direction].chunks.first else { return }
        let next = halves[direction].nextOffset
        if first.offset > next {
            report(
                gap: first.offset - next, at: next, reason: reason, direction,
                time: time, packetNumber: packetNumber, into: &sink)
            halves[direction].nextOffset = first.offset
        }
        drain(
            direction, time: time, packetNumber: packetNumber, totalBuffered: &totalBuffered, into: &sink,
            ownStamps: true)
    }

    func report<S: StreamSink>(
        gap length: UInt64, at offset: UInt64, reason: GapReason, _ direction: Direction,
        time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        guard length > 0 else { return }
        sink.consume(
            StreamEvent(
                connection: info.id, direction: direction, time: time,
                packetNumber: packetNumber, offset: offset, kind: .gap(length: length, reason: reason)))
    }
}
