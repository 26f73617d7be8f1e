// Live capture's timed checks (heartbeat overdue, message-flow warnings), driven by when each connection's next
// check comes due: a tick costs what comes due, not a walk over every open connection.
import AMQPScopePackets
import AMQPScopeReassembly

/// When each watched connection is next looked at: a binary min-heap on (time, id), so equal times come out in
/// connection order. A connection has one wake-up at a time; one that ended is dropped when its wake-up comes.
struct WakeQueue {
    struct Wake {
        var time: Timestamp
        var id: ConnectionID
        var slot: Int
        /// The next poll interval of a connection with nothing timed (it doubles up to `maximumPoll`).
        var poll: Int64
    }
    private(set) var heap: [Wake] = []

    /// The first poll interval, and the longest: a connection whose heartbeat or flow is not known yet is looked at
    /// again after these.
    static let firstPoll: Int64 = 1_000_000_000
    static let maximumPoll: Int64 = 8_000_000_000

    var count: Int { heap.count }

    private static func before(_ a: Wake, _ b: Wake) -> Bool { (a.time, a.id) < (b.time, b.id) }

    mutating func push(_ wake: Wake) {
        heap.append(wake)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.before(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// The earliest wake-up when it is due by `now`.
    mutating func popDue(_ now: Timestamp) -> Wake? {
        guard let first = heap.first, first.time <= now else { return nil }
        let last = heap.removeLast()
        guard !heap.isEmpty else { return first }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && Self.before(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count && Self.before(heap[right], heap[smallest]) { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return first
    }
}

/// What the timed checks found and hold between calls.
struct LiveChecks {
    var queue = WakeQueue()
    /// Whether the checks have started (the first call to them): until then nothing is queued, so an analysis that
    /// never asks keeps no wake-ups.
    var started = false
    /// Sides overdue at their last check, by connection and side: the gauge of how many are overdue now walks only
    /// these.
    var overdue: Set<OverdueKey> = []
    /// Found since the last call that hands them out.
    var newOverdue: [HeartbeatOverdue] = []
    var newAlerts: [FlowAlert] = []
    /// The thresholds the flow warnings were last asked with.
    var options = StoryOptions()

    struct OverdueKey: Hashable {
        var id: ConnectionID
        var side: Side
    }
}

extension RecordBuilder {
    /// The heartbeat interval `side` must keep to, in nanoseconds, and in whole seconds for reports (0-9-1: the
    /// negotiated heartbeat; 1.0: the idle timeout the side's peer advertised); nil when there is none.
    func heartbeatInterval(of side: Side) -> (nanoseconds: Int64, seconds: Int, idle10: UInt32)? {
        let idle10 = idleTimeOut10[sentBy: side.peer]
        if idle10 > 0 { return (Int64(idle10) * 1_000_000, Int((idle10 + 999) / 1000), idle10) }
        guard let heartbeat = negotiatedHeartbeat, heartbeat > 0 else { return nil }
        return (Int64(heartbeat) * 1_000_000_000, Int(heartbeat), 0)
    }

    /// `side` as overdue at `now`: silent for longer than its interval while its peer sent after it; nil otherwise.
    /// (Mutating only so that callers reach it in place, without copying the builder.)
    mutating func overdue(_ side: Side, now: Timestamp) -> HeartbeatOverdue? {
        guard record.isAMQP, let interval = heartbeatInterval(of: side) else { return nil }
        return overdue(side, now: now, interval: interval)
    }

    /// The same, with the side's interval already worked out (and the connection known to be AMQP).
    func overdue(
        _ side: Side, now: Timestamp, interval: (nanoseconds: Int64, seconds: Int, idle10: UInt32)
    ) -> HeartbeatOverdue? {
        guard let last = silentSince(side, now: now, interval: interval) else { return nil }
        return report(side, silentSince: last, now: now, interval: interval)
    }

    /// When `side` last sent a frame, if it has been silent for longer than its interval while its peer sent after
    /// it; nil otherwise. Reads a few fields only: the periodic check calls it for every watched side.
    func silentSince(
        _ side: Side, now: Timestamp, interval: (nanoseconds: Int64, seconds: Int, idle10: UInt32)
    ) -> Timestamp? {
        guard record.endReason == nil, let last = record.lastFrameTime[sentBy: side],
            let peerLast = record.lastFrameTime[sentBy: side.peer], now.since(last) > interval.nanoseconds,
            peerLast > last
        else { return nil }
        return last
    }

    /// The report of a silence found by `silentSince`.
    func report(
        _ side: Side, silentSince last: Timestamp, now: Timestamp,
        interval: (nanoseconds: Int64, seconds: Int, idle10: UInt32)
    ) -> HeartbeatOverdue {
        // Counted in place: the heartbeats kept can number thousands.
        var peerFrames = 0
        for time in record.heartbeatTimes[sentBy: side.peer] where time > last { peerFrames += 1 }
        return HeartbeatOverdue(
            info: record.info, side: side, heartbeat: interval.seconds, lastFrame: last,
            lastFramePacket: record.lastFramePacket[sentBy: side], silentFor: now.since(last),
            peerFramesSince: peerFrames, idleTimeOutMilliseconds: interval.idle10 > 0 ? Int(interval.idle10) : nil)
    }

    /// Checks this connection at `now`: sides newly overdue (each silence once) and flow warnings go to `checks`.
    /// Returns when the next check is due, or nil to poll (nothing timed is known yet).
    mutating func check(now: Timestamp, into checks: inout LiveChecks) -> Timestamp? {
        var next: Timestamp?
        func due(_ t: Timestamp) { next = min(next ?? t, t) }
        for side in Side.allCases {
            let key = LiveChecks.OverdueKey(id: record.info.id, side: side)
            guard record.isAMQP, let interval = heartbeatInterval(of: side) else {
                checks.overdue.remove(key)
                continue
            }
            // A side that stays overdue is looked at every second: the report is built only when it is new.
            if let last = silentSince(side, now: now, interval: interval) {
                checks.overdue.insert(key)
                if overdueReported[sentBy: side] != last {
                    overdueReported[sentBy: side] = last
                    checks.newOverdue.append(report(side, silentSince: last, now: now, interval: interval))
                }
            } else {
                checks.overdue.remove(key)
            }
            // Due once the side has been silent for longer than its interval. A side past that (overdue, or waiting
            // for its peer to send) is looked at again within a second; a side that has sent nothing yet cannot be
            // overdue before an interval has passed.
            let deadline = record.lastFrameTime[sentBy: side].map { $0.adding(nanoseconds: interval.nanoseconds + 1) }
            if let deadline, deadline > now {
                due(deadline)
            } else if deadline != nil {
                due(now.adding(nanoseconds: min(interval.nanoseconds, 1_000_000_000)))
            } else {
                due(now.adding(nanoseconds: interval.nanoseconds))
            }
        }
        if let box = flow {
            for (code, summary) in box.tracker.alerts(now: now, options: checks.options) {
                checks.newAlerts.append(FlowAlert(info: record.info, code: code, summary: summary))
            }
            // A saturation under way is due when it reaches the threshold; one may start at any delivery, so the
            // flow is looked at every second (a saturation is then seen within a second of its start and warned of
            // on time).
            if let t = box.nextAlert(options: checks.options), t > now { due(t) }
            due(now.adding(nanoseconds: 1_000_000_000))
        }
        return next
    }
}

extension FlowBox {
    /// When the earliest saturation under way reaches the threshold (read in place: the tracker is not copied).
    func nextAlert(options: StoryOptions) -> Timestamp? {
        var next: Timestamp?
        func start(_ since: (Timestamp, Int)?) {
            guard let since else { return }
            let t = since.0.adding(nanoseconds: options.saturationThreshold)
            next = min(next ?? t, t)
        }
        // Channels and consumers are read in place, not copied, and only while one is saturated: this runs every
        // second for every flow.
        guard tracker.saturating > 0 else { return nil }
        for index in tracker.channels.indices {
            if tracker.channels[index].prefetchChannel != nil { start(tracker.channels[index].saturatedSince) }
            if tracker.channels[index].prefetchConsumer != nil {
                for consumer in tracker.channels[index].consumers.indices {
                    start(tracker.channels[index].consumers[consumer].saturatedSince)
                }
            }
        }
        return next
    }
}

extension Engine {
    /// Runs the checks that are due by `now`; the first call starts watching every open connection.
    mutating func runChecks(now: Timestamp) {
        if !state.checks.started {
            state.checks.started = true
            for (id, slot) in state.slots.sorted(by: { $0.key < $1.key }) {
                state.checks.queue.push(.init(time: now, id: id, slot: slot, poll: WakeQueue.firstPoll))
            }
        }
        while var wake = state.checks.queue.popDue(now) {
            // A connection that ended (its slot free or reused) is not looked at again.
            guard state.entries.indices.contains(wake.slot), state.slots[wake.id] == wake.slot else { continue }
            // The entry is checked in place, through its box: nothing is copied.
            let next = state.entries[wake.slot]?.entry.builder.check(now: now, into: &state.checks) ?? nil
            if let next {
                wake.time = next
                wake.poll = WakeQueue.firstPoll
            } else {
                wake.time = now.adding(nanoseconds: wake.poll)
                wake.poll = min(wake.poll * 2, WakeQueue.maximumPoll)
            }
            state.checks.queue.push(wake)
        }
    }

    /// Sides of open connections that have sent no frame for longer than the negotiated heartbeat while their peer
    /// kept sending, as of `now`: each silence is reported once. `now` comes from the caller (packet time, or the
    /// clock of a live capture), so the engine itself keeps no clock. Each call costs what has come due since the
    /// last one.
    public mutating func overdueHeartbeats(now: Timestamp) -> [HeartbeatOverdue] {
        runChecks(now: now)
        defer { state.checks.newOverdue.removeAll() }
        return state.checks.newOverdue.sorted { ($0.info.id, $0.side.rawValue) < ($1.info.id, $1.side.rawValue) }
    }

    /// Every side overdue as of `now`, reported before or not (for a gauge of how many are overdue now): only the
    /// sides found overdue are looked at again.
    public mutating func overdueNow(now: Timestamp) -> [HeartbeatOverdue] {
        runChecks(now: now)
        var out: [HeartbeatOverdue] = []
        for key in state.checks.overdue {
            guard let slot = state.slots[key.id],
                let o = state.entries[slot]?.entry.builder.overdue(key.side, now: now)
            else {
                state.checks.overdue.remove(key)
                continue
            }
            out.append(o)
        }
        return out.sorted { ($0.info.id, $0.side.rawValue) < ($1.info.id, $1.side.rawValue) }
    }

    /// Live: message-flow warnings that became true in open connections as of `now` (a consumer at its prefetch
    /// longer than `options.saturationThreshold`, confirms slower than `options.slowConfirmThreshold`), each once.
    public mutating func flowAlerts(now: Timestamp, options: StoryOptions) -> [FlowAlert] {
        state.checks.options = options
        runChecks(now: now)
        defer { state.checks.newAlerts.removeAll() }
        return state.checks.newAlerts.sorted { $0.info.id < $1.info.id }
    }

    /// Connections waiting for their next timed check (for tests of its bound).
    var checksQueued: Int { state.checks.queue.count }
}
