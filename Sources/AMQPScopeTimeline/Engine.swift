// The pure engine: packets in (header + borrowed bytes), per-connection records out.
// Joins packet layers -> reassembly -> codec; the timeline and diagnoses are built from its records.
import AMQPScopeAMQP10
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTLS

/// Everything the pipeline can be told: reassembly and codec limits, what to keep.
public struct EngineConfiguration: Hashable, Sendable {
    /// TCP reassembly's limits and AMQP ports.
    public var reassembly = ReassemblyConfiguration()
    /// The AMQP codec's options (bodies, credentials).
    public var codec = CodecConfiguration()
    /// Keep every decoded frame in the records (for `--frames`, `--verbose` and tests).
    public var recordFrames = false
    /// Feed each data event to the codec one byte at a time (a check that chunking never changes the answer).
    public var byteAtATime = false
    /// Problems kept per connection with their detail; past it they are only counted.
    public var maximumProblemsKept = 100
    /// Timeline entries kept per connection; past it they are only counted.
    public var maximumTimelineEntries = 5000
    /// Keep every packet in the records (for `--verbose`).
    public var recordPackets = false
    /// Keep each connection's unacked count over time (`FlowRecord.unackedSamples`, up to 8 KiB a connection), which
    /// only the HTML review draws; without it the trace stays empty and nothing else changes.
    public var keepsUnackedTrace = true
    /// Bytes all AMQP decoders together may hold (partial frames, frame-hunt buffers, kept bodies); past it the
    /// decoder that grew sheds what it holds, reported as malformed or skipped bytes.
    public var maximumCodecBufferedBytes = 64 * 1024 * 1024
    /// Hand out timeline entries as they are made (live capture): see `Engine.takeLiveEntries()`.
    public var streamEntries = false
    /// TLS secrets (NSS key log) to decrypt AMQPS with; without them TLS connections tell the record story.
    public var keyLog: KeyLog?
    /// The key log grows while the capture runs (live): protected records wait, bounded, for their secrets, which a
    /// client writes only after the capture has seen its handshake. `Engine.update(keyLog:)` hands over the new one.
    public var keyLogMayGrow = false
    /// `Analysis.analyzeFiles` runs the timeline stage on a second thread, fed the decoding stage's findings in
    /// batches, so that one capture uses two cores (records are then handed to `onRecord` on that thread). The answer
    /// is the same either way.
    public var timelineThread = false
    /// The defaults.
    public init() {}

    /// Records keep every message whole (with frames, or with bodies); otherwise a message is only followed in the
    /// message flow.
    var keepsMessages: Bool { recordFrames || codec.keepBodies }
}

/// The engine's second stage: applies what the decoding stage found to each open connection's record builder, and
/// ties connections together (proxied legs, refused attempts and their fallbacks). Each open connection's builder
/// lives in a boxed entry, in a slab addressed by a slot: one hash lookup per operation at most (none when it is for
/// the same connection as the last), and an entry is changed in place, never copied.
struct EngineState {
    /// An open connection's entry, held by reference. An entry is large (the record being built): a slab of them
    /// inline would be copied whole whenever it grows, and hold twice the memory while it does.
    final class EntryBox {
        /// Unchecked: only the timeline stage reaches a box, one access at a time; the runtime check was a call on
        /// every operation.
        @exclusivity(unchecked) var entry: Entry
        init(_ entry: Entry) { self.entry = entry }
    }

    /// One open connection's record being built (its decoders live in the decoding stage, `DecodeEntry`).
    struct Entry {
        var builder: RecordBuilder

        /// A codec event; returns the connection's handshake when this event completed it (for pairing the legs of a
        /// proxied connection).
        mutating func consume(_ event: consuming CodecEvent) -> (Int, Timestamp)? {
            builder.consume(consume event)
            return builder.takeFreshHandshake()
        }

        mutating func consume(_ event: AMQP10Event) -> (Int, Timestamp)? {
            builder.consume(event)
            return builder.takeFreshHandshake()
        }

        /// The decoders' conclusions as the connection ends.
        mutating func conclude(tls: TLSSummary?, verdict: Verdict, streamBytes: PerDirection<UInt64>) {
            builder.record.tls = tls
            builder.record.verdict = verdict
            builder.record.setStreamBytes(streamBytes)
        }

        /// A reassembly event other than data, for the builder.
        mutating func handle(_ event: StreamEvent) {
            switch event.kind {
            case .opened, .ended, .data:
                break
            case .packet(let packet):
                builder.packet(packet, event)
            case .gap(let length, let reason):
                builder.moment(.gap(length: length, reason: reason), event)
            case .fin:
                builder.moment(.fin, event)
            case .reset(let info):
                builder.moment(.reset(info), event)
            case .overlapConflict(let length):
                builder.moment(.overlapConflict(length: length), event)
            case .dataAfterFIN(let length):
                builder.moment(.dataAfterFIN(length: length), event)
            }
        }
    }

    let configuration: EngineConfiguration
    var slots = ConnectionTable<Int>()
    var entries: [EntryBox?] = []
    var freeSlots: [Int] = []
    var cachedID = ConnectionID(rawValue: 0)
    var cachedSlot = -1
    var ended: [ConnectionRecord] = []
    /// The numbers of every connection that has ended (for metrics).
    var endedTotals = TrafficTotals()
    /// Refused attempts, held for up to `fallbackWindow` of capture time to see whether the client then connected
    /// elsewhere to the same port (bounded: only the refusals of the last second).
    var refusals: [ConnectionRecord] = []
    /// Connections whose SYN was seen in the last seconds (a refusal ends, and waits here, only once its connection
    /// is done with): whether the server accepted them (nil while open: their builder tells).
    var recentOpens: [(info: ConnectionInfo, time: Timestamp, accepted: Bool?)] = []
    /// `recentOpens` is pruned of what is older than two windows when it reaches this size.
    var pruneOpensAt = 64
    /// Connections that ended abruptly, for the other leg of a proxied pair to find when it ends (kept for a minute
    /// of capture time).
    var endedLegs: [Int: [(leg: Leg, endedAt: Timestamp)]] = [:]
    /// The handshakes of `endedLegs` in the order they ended, for forgetting them after a minute.
    var endedLegOrder: [(handshake: Int, endedAt: Timestamp)] = []
    var endedLegHead = 0
    /// Open connections by their handshake (`RecordBuilder.handshakeKey`): the other leg is looked for among these.
    /// Clients of one library and version send the same handshake, so one key may hold many: each with its open time,
    /// which is compared before anything else.
    var openByHandshake: [Int: [ConnectionID: Timestamp]] = [:]
    /// Live capture's timed checks (heartbeat overdue, flow warnings).
    var checks = LiveChecks()
    /// How soon after a refusal an accepted connection counts as its fallback.
    static let fallbackWindow: Int64 = 1_000_000_000
    /// Timeline entries made since the last `takeLiveEntries()` (live capture only).
    var live: [(ConnectionInfo, TimelineEntry)] = []

    init(configuration: EngineConfiguration) {
        self.configuration = configuration
    }

    mutating func slot(of id: ConnectionID) -> Int? {
        if id == cachedID { return cachedSlot }
        guard let slot = slots[id] else { return nil }
        cachedID = id
        cachedSlot = slot
        return slot
    }

    /// Builders of open connections, by id.
    var openBuilders: [RecordBuilder] {
        slots.sorted { $0.key < $1.key }.compactMap { entries[$0.value]?.entry.builder }
    }

    mutating func consume(_ event: StreamEvent) {
        if !refusals.isEmpty { releaseRefusals(now: event.time) }
        if case .opened(let info) = event.kind {
            open(info, event)
            if info.opening == .handshake { noteOpen(info, event.time) }
            return
        }
        guard let s = slot(of: event.connection) else { return }
        if case .ended(let reason) = event.kind {
            if let box = entries[s].take() { end(box.entry, reason: reason, slot: s, event) }
            return
        }
        // The entry is changed in place through its box: nothing is copied per event. Reached through the array in
        // place, not taken out of it (which retained and released the box for every packet).
        entries[s]?.entry.handle(event)
        if configuration.streamEntries { entries[s]?.entry.builder.moveFresh(to: &live) }
    }

    /// The open connection's box, if it is open.
    mutating func box(of id: ConnectionID) -> EntryBox? {
        guard let s = slot(of: id) else { return nil }
        return entries[s]
    }

    /// Applies what the decoding stage found, in order, and empties `ops` (keeping its capacity).
    mutating func apply(_ ops: OpBuffer) {
        apply(ops, every: .max) { _ in }
    }

    /// `apply`, handing the records of ended connections to `hand` whenever `every` of them wait, so that they can
    /// be reported while the rest of the batch is applied (at a capture's end its last batch ends every connection).
    mutating func apply(_ ops: OpBuffer, every: Int, hand: ([ConnectionRecord]) -> Void) {
        ops.drain { op in
            apply(consume op, ops)
            if ended.count >= every {
                hand(ended)
                ended.removeAll(keepingCapacity: true)
            }
        }
    }

    mutating func apply(_ op: consuming StageOp, _ ops: OpBuffer) {
        // One access to the entry per operation: each access to a boxed entry is checked for exclusivity.
        switch op {
        case .stream(let event):
            consume(event)
        case .codec(let id):
            let event = ops.takeCodecEvent()
            guard let s = slot(of: id) else { return }
            if let (key, opened) = entries[s]?.entry.consume(consume event) {
                openByHandshake[key, default: [:]][id] = opened
            }
            if configuration.streamEntries { entries[s]?.entry.builder.moveFresh(to: &live) }
        case .counted(let id, let direction, let time, let packet, let frame):
            box(of: id)?.entry.builder.counted(frame, direction, time, packet)
        case .content(let id, let direction, let time, let packet, let length):
            // As the two `counted` operations it stands for, in order, with one lookup.
            guard let box = box(of: id) else { return }
            box.entry.builder.counted(.header, direction, time, packet)
            box.entry.builder.counted(.body(length: length), direction, time, packet)
        case .amqp10(let id):
            let event = ops.takeAMQP10Event()
            guard let s = slot(of: id) else { return }
            if let (key, opened) = entries[s]?.entry.consume(event) { openByHandshake[key, default: [:]][id] = opened }
            if configuration.streamEntries { entries[s]?.entry.builder.moveFresh(to: &live) }
        case .tls(let id, let event):
            guard let s = slot(of: id) else { return }
            entries[s]?.entry.builder.consume(event)
            if configuration.streamEntries { entries[s]?.entry.builder.moveFresh(to: &live) }
        case .concluded(let id, let tls, let verdict, let streamBytes):
            box(of: id)?.entry.conclude(tls: tls, verdict: verdict, streamBytes: streamBytes)
        case .absorb(let summary):
            box(of: summary.info.id)?.entry.builder.absorb(summary)
        }
    }

    private mutating func open(_ info: ConnectionInfo, _ event: StreamEvent) {
        let entry = Entry(builder: RecordBuilder(info: info, time: event.time, configuration: configuration))
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            entries[slot] = EntryBox(entry)
        } else {
            slot = entries.count
            entries.append(EntryBox(entry))
        }
        slots[info.id] = slot
        if checks.started {
            checks.queue.push(
                .init(
                    time: event.time.adding(nanoseconds: WakeQueue.firstPoll), id: info.id, slot: slot,
                    poll: WakeQueue.firstPoll))
        }
    }

    private mutating func end(_ entry: Entry, reason: EndReason, slot s: Int, _ event: StreamEvent) {
        var entry = entry
        slots[event.connection] = nil
        freeSlots.append(s)
        if let key = entry.builder.handshakeKey {
            openByHandshake[key]?[event.connection] = nil
            if openByHandshake[key]?.isEmpty == true { openByHandshake[key] = nil }
        }
        if checks.started {
            for side in Side.allCases { checks.overdue.remove(.init(id: event.connection, side: side)) }
        }
        if cachedID == event.connection {
            cachedSlot = -1
            cachedID = ConnectionID(rawValue: 0)
        }
        // The decoders' last events and their verdict were applied just before (`StageOp.concluded`).
        entry.builder.record.endReason = reason
        entry.builder.record.endTime = event.time
        entry.builder.summarizeFlow(ended: true)
        entry.builder.closeRuns()
        entry.builder.moveFresh(to: &live)
        var record = entry.builder.record
        endedTotals.add(record, ended: true)
        pairLegs(&record, now: event.time)
        // `recentOpens` is in the order of the opens, so of ids: found by halving.
        var low = 0
        var high = recentOpens.count
        while low < high {
            let mid = (low + high) / 2
            if recentOpens[mid].info.id < record.info.id { low = mid + 1 } else { high = mid }
        }
        if low < recentOpens.count && recentOpens[low].info.id == record.info.id {
            recentOpens[low].accepted = Self.accepted(record)
        }
        if Self.refused(record) {
            refusals.append(record)
        } else {
            ended.append(record)
        }
    }

    mutating func noteOpen(_ info: ConnectionInfo, _ time: Timestamp) {
        recentOpens.append((info, time, nil))
        // Only the latest opens are kept: a fallback opens within a second of its refusal, and a capture that
        // opens thousands of connections at once must not keep them all here.
        if recentOpens.count >= pruneOpensAt {
            let oldest = refusals.first?.firstTime ?? time
            recentOpens.removeAll { oldest.since($0.time) > 0 && time.since($0.time) > 2 * Self.fallbackWindow }
            if recentOpens.count > Self.recentOpensKept {
                recentOpens.removeFirst(recentOpens.count - Self.recentOpensKept)
            }
            pruneOpensAt = max(64, min(recentOpens.count * 2, 2 * Self.recentOpensKept))
        }
    }

    /// Opens kept for the fallback search, at most.
    static let recentOpensKept = 4096

    /// What pairs two legs of a proxied connection: the handshake the proxy relayed unchanged, when each opened and
    /// when TCP first closed it.
    struct Leg {
        var id: ConnectionID
        var info: ConnectionInfo
        var opened: Timestamp
        var firstClose: Timestamp
        var handshake: Int

        /// A leg of an AMQP connection that TCP closed without an AMQP close; nil otherwise.
        init?(_ r: ConnectionRecord) {
            var handshake: Int?
            var amqpClosed = false
            for f in r.keyFrames {
                switch f.frame.content {
                case .method(.connectionStartOk(let s)): handshake = s.clientProperties.hashValue
                case .method(.connectionClose): amqpClosed = true
                default: break
                }
            }
            for f in r.keyPerformatives {
                switch f.frame.performative {
                case .open(let o)? where f.direction == .clientToServer: handshake = o.containerID.hashValue
                case .close?: amqpClosed = true
                default: break
                }
            }
            let close = r.moments.first { m in
                switch m.kind {
                case .fin, .reset: true
                default: false
                }
            }
            guard let handshake, !amqpClosed, let close else { return nil }
            id = r.info.id
            info = r.info
            opened = r.firstTime
            firstClose = close.time
            self.handshake = handshake
        }

        func pairs(with other: Leg) -> Bool {
            other.id != id && other.handshake == handshake && other.info.server != info.server
                && abs(other.opened.since(opened)) <= 1_000_000_000
                && abs(other.firstClose.since(firstClose)) <= 100_000_000
        }
    }

    /// Finds the other leg of a proxied connection among the open connections and those that ended lately, and names
    /// it on this record: the leg that opened first is the client's, whose server is the proxy.
    mutating func pairLegs(_ record: inout ConnectionRecord, now: Timestamp) {
        guard let leg = Leg(record) else { return }
        var partner = endedLegs[leg.handshake]?.first { $0.leg.pairs(with: leg) }?.leg
        if partner == nil {
            // The earliest matching one, so that the answer does not depend on the order of a dictionary.
            for (id, opened) in openByHandshake[leg.handshake] ?? [:]
            where abs(opened.since(leg.opened)) <= 1_000_000_000 && id < (partner?.id ?? ConnectionID(rawValue: .max)) {
                if let slot = slots[id], let other = entries[slot].flatMap({ Leg($0.entry.builder.record) }),
                    other.pairs(with: leg)
                {
                    partner = other
                }
            }
        }
        // Ended legs are kept for a minute of capture time, at most 100,000 of them.
        while endedLegHead < endedLegOrder.count {
            let (handshake, endedAt) = endedLegOrder[endedLegHead]
            guard now.since(endedAt) > 60_000_000_000 || endedLegOrder.count - endedLegHead >= 100_000 else { break }
            endedLegHead += 1
            endedLegs[handshake]?.removeFirst()
            if endedLegs[handshake]?.isEmpty == true { endedLegs[handshake] = nil }
        }
        if endedLegHead > 1024 && endedLegHead * 2 > endedLegOrder.count {
            endedLegOrder.removeFirst(endedLegHead)
            endedLegHead = 0
        }
        endedLegs[leg.handshake, default: []].append((leg, now))
        endedLegOrder.append((leg.handshake, now))
        guard let partner else { return }
        let clientSide = (leg.opened, leg.id) < (partner.opened, partner.id)
        record.proxied = Proxied(
            peerConnection: partner.id, proxy: clientSide ? leg.info.server : partner.info.server,
            leg: clientSide ? .clientSide : .serverSide, closedAt: min(leg.firstClose, partner.firstClose))
    }

    /// The server answered the client's SYN with an RST: the attempt was refused (ECONNREFUSED).
    static func refused(_ r: ConnectionRecord) -> Bool {
        r.info.opening == .handshake && r.counters.clientToServer.payloadBytes == 0
            && r.moments.contains { m in
                if case .reset(let info) = m.kind {
                    return m.direction == .serverToClient && info.receiverState == .synSent
                }
                return false
            }
    }

    static func accepted(_ r: ConnectionRecord) -> Bool {
        r.moments.contains { $0.kind == .synAck && $0.direction == .serverToClient }
    }

    /// Two client addresses that may be the same host: equal, both loopback, or of different families (a client
    /// falling back from IPv6 to IPv4, whose two addresses the packets cannot tie together).
    static func sameHost(_ a: IPAddress, _ b: IPAddress) -> Bool {
        a == b || (a.isLoopback && b.isLoopback) || a.isIPv6 != b.isIPv6
    }

    /// Hands on the refusals whose window has passed (all of them with `now` nil: the capture is over), each with the
    /// accepted connection it fell back to, if any.
    mutating func releaseRefusals(now: Timestamp?) {
        while let first = refusals.first {
            // The RST, not the record's end (which reassembly may call later).
            let refusedAt =
                first.moments.first { if case .reset = $0.kind { return true } else { return false } }?.time
                ?? first.lastTime
            if let now, now.since(refusedAt) <= Self.fallbackWindow { break }
            var record = refusals.removeFirst()
            let candidate = recentOpens.first { open in
                open.info.id != record.info.id && open.info.server.port == record.info.server.port
                    && open.time >= record.firstTime && open.time.since(refusedAt) <= Self.fallbackWindow
                    && Self.sameHost(open.info.client.address, record.info.client.address)
                    && (open.accepted ?? slot(of: open.info.id).flatMap { entries[$0] }.map {
                        Self.accepted($0.entry.builder.record)
                    } ?? false)
            }
            if let candidate {
                record.fallback = Fallback(
                    connection: candidate.info.id, server: candidate.info.server,
                    after: candidate.time.since(refusedAt))
            }
            ended.append(record)
        }
    }
}

/// The engine's first stage, which needs the packets: packet layers, reassembly and each connection's decoders. What
/// it finds waits in `ops` for the timeline stage (`EngineState.apply`), on this thread or on another.
package struct DecodingStage {
    let configuration: EngineConfiguration
    let linkType: LinkType
    var reassembler: Reassembler
    var state: DecodingState
    /// Capture-wide counts so far.
    package private(set) var counts = PacketCounts()

    package init(linkType: LinkType, configuration: EngineConfiguration) {
        self.configuration = configuration
        self.linkType = linkType
        reassembler = Reassembler(configuration: configuration.reassembly)
        state = DecodingState(configuration: configuration)
    }

    /// Feeds one captured packet, and says how many operations wait for the timeline stage: a caller that hands them
    /// over in batches learns it here, as a getter asked of a stage it held inout copied the whole stage (688 bytes)
    /// on every packet.
    @discardableResult
    package mutating func process(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) -> Int {
        counts.packets += 1
        if header.isTruncated { counts.truncated += 1 }
        if counts.firstTime == nil { counts.firstTime = header.timestamp }
        counts.lastTime = header.timestamp
        switch PacketDecoder.decode(bytes, linkType: linkType) {
        case .tcp(let segment):
            counts.tcp += 1
            reassembler.process(segment, header: header, bytes: bytes, into: &state)
        case .other, .unsupportedLinkType:
            counts.otherProtocols += 1
        case .fragment:
            counts.fragments += 1
        case .malformed(let problem):
            counts.malformed += 1
            if counts.firstMalformed.count < configuration.maximumProblemsKept {
                counts.firstMalformed.append(MalformedPacket(packet: header.number, reason: problem.description))
            }
        }
        return state.out.ops.count
    }

    /// Ends idle connections as of `now`.
    mutating func evictIdle(now: Timestamp) {
        reassembler.evictIdle(now: now, into: &state)
    }

    /// Ends every connection still open (the capture is over), each with reassembly's final word on its TCP states.
    package mutating func finish() {
        let end = counts.lastTime ?? Timestamp(nanoseconds: 0)
        for summary in reassembler.summaries() { state.out.ops.append(.absorb(summary)) }
        reassembler.finish(at: end, into: &state)
        counts.evictedConnections = reassembler.evictedForCap
    }

    /// Applies the operations waiting to a timeline stage on this thread.
    package mutating func apply(to timeline: inout TimelineStage) {
        if !state.out.ops.isEmpty { timeline.apply(state.out.ops) }
    }

    /// Takes the operations found so far into `spare`, whose buffer (empty, its capacity kept) collects the next ones.
    package mutating func takeOps(leaving spare: inout OpBuffer) {
        precondition(spare.isEmpty, "a spare batch must be empty")
        swap(&spare, &state.out.ops)
    }
}

/// The timeline stage on its own, for running it on another thread than the decoding stage: apply each batch of
/// operations in the order they were taken, then `finish`.
package struct TimelineStage {
    var state: EngineState

    package init(configuration: EngineConfiguration) {
        state = EngineState(configuration: configuration)
    }

    /// Applies a batch of operations and empties it.
    package mutating func apply(_ ops: OpBuffer) { state.apply(ops) }

    /// Applies a batch of operations and empties it, handing on the records of ended connections (in the order they
    /// ended, as `takeEnded` gives them) whenever `every` of them wait; those left are taken by `takeEnded`.
    package mutating func apply(_ ops: OpBuffer, every: Int, hand: ([ConnectionRecord]) -> Void) {
        state.apply(ops, every: every, hand: hand)
    }

    /// After the decoding stage's `finish` was applied: hands on the refusals still held.
    package mutating func finish() { state.releaseRefusals(now: nil) }

    /// Records of connections that have ended, in the order they ended; taking them frees their memory.
    package mutating func takeEnded() -> [ConnectionRecord] {
        defer { state.ended.removeAll() }
        return state.ended
    }

    /// Whether ended connections wait to be taken.
    package var hasEnded: Bool { !state.ended.isEmpty }
}

/// The engine: feed it packets, then `finish`, then read `records`. Its two stages run one after the other, packet by
/// packet.
public struct Engine {
    /// What it was configured with.
    public let configuration: EngineConfiguration
    /// The link-layer type of the packets it is fed.
    public let linkType: LinkType
    var decoding: DecodingStage
    var timeline: TimelineStage
    /// The timeline stage's state (open connections, live checks), changed in place.
    var state: EngineState {
        _read { yield timeline.state }
        _modify { yield &timeline.state }
    }
    /// Capture-wide counts so far.
    public var counts: PacketCounts { decoding.counts }

    /// An engine for packets of one link-layer type.
    public init(linkType: LinkType, configuration: EngineConfiguration = EngineConfiguration()) {
        self.configuration = configuration
        self.linkType = linkType
        decoding = DecodingStage(linkType: linkType, configuration: configuration)
        timeline = TimelineStage(configuration: configuration)
    }

    /// Feeds one captured packet.
    public mutating func process(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) {
        decoding.process(header, bytes)
        decoding.apply(to: &timeline)
    }

    /// A newer key log (a live capture re-reads the file as clients append their secrets): connections opened from
    /// now on use it, and open ones waiting for their secrets look again at their next packet.
    public mutating func update(keyLog: KeyLog) {
        decoding.state.update(keyLog: keyLog)
    }

    /// Ends idle connections as of `now` (live capture calls this on a timer).
    public mutating func tick(now: Timestamp) {
        decoding.evictIdle(now: now)
        decoding.apply(to: &timeline)
        if !state.refusals.isEmpty { state.releaseRefusals(now: now) }
    }

    /// Ends every connection still open (the capture is over).
    public mutating func finish() {
        decoding.finish()
        decoding.apply(to: &timeline)
        timeline.finish()
    }

    /// Records of connections that have ended, in the order they ended; taking them frees their memory.
    public mutating func takeEnded() -> [ConnectionRecord] { timeline.takeEnded() }

    /// Whether ended connections wait to be taken.
    public var hasEnded: Bool { timeline.hasEnded }

    /// Timeline entries and ended records waiting to be taken (live capture hands them off when many wait).
    public var pendingOutput: Int { state.live.count + state.ended.count }

    /// Timeline entries made since the last call, in the order they were made (with `streamEntries`).
    public mutating func takeLiveEntries() -> [(ConnectionInfo, TimelineEntry)] {
        defer { state.live.removeAll(keepingCapacity: true) }
        return state.live
    }

    /// The records of connections still open, as they stand now (routine runs so far included).
    public func openRecords() -> [ConnectionRecord] {
        state.openBuilders.map(snapshot)
    }

    /// The record of one open connection as it stands now.
    public func openRecord(_ id: ConnectionID) -> ConnectionRecord? {
        guard let slot = state.slots[id], let builder = state.entries[slot]?.entry.builder else { return nil }
        return snapshot(builder)
    }

    /// An open connection's record as it stands, with what its TLS layer knows so far and its streams' in-order bytes
    /// (the decoding stage hands the timeline stage both only when the connection ends).
    func snapshot(_ builder: RecordBuilder) -> ConnectionRecord {
        var copy = builder
        copy.summarizeFlow(ended: false)
        copy.closeRuns()
        if let entry = decoding.state.entry(builder.record.info.id) {
            if entry.tlsRead { copy.record.tls = entry.tls?.session.summary }
            copy.record.setStreamBytes(entry.streamBytes)
        }
        return copy.record
    }

    /// Live connections being tracked.
    public var liveConnections: Int { decoding.reassembler.trackedConnections }
    /// Bytes all decoders hold now.
    public var codecBufferedBytes: Int { decoding.state.totalHeld }
    /// Out-of-order TCP bytes held now.
    public var bufferedBytes: Int { decoding.reassembler.bufferedBytes }
}

/// The AMQP 1.0 decoder of a connection, held by reference: most connections are not 1.0, and an entry that only
/// may hold one stays a pointer wide.
final class AMQP10Box {
    /// Unchecked, like the other per-connection boxes: one owner, no overlapping access.
    @exclusivity(unchecked) var decoder: AMQP10Decoder
    init(_ decoder: AMQP10Decoder) { self.decoder = decoder }
}

extension CodecConfiguration {
    /// The same choices for the AMQP 1.0 codec.
    var amqp10: AMQP10Configuration {
        var c = AMQP10Configuration()
        c.keepBodies = keepBodies
        c.maximumKeptBodyBytes = maximumKeptBodyBytes
        c.showCredentials = showCredentials
        return c
    }
}

/// A message-flow warning a live capture prints as it becomes true.
public struct FlowAlert: Sendable {
    /// The connection's identity.
    public var info: ConnectionInfo
    /// consumer-saturated or slow-confirms.
    public var code: DiagnosisCode
    /// In plain words.
    public var summary: String
}
