// Message flow (AMQP 0-9-1 with RabbitMQ's extensions): each publish matched to its confirm, each delivery to its
// ack, per channel; prefetch and the unacknowledged deliveries against it; returns, redeliveries, consumer
// cancels; and, when the connection dies, the messages at risk. Latencies go into HdrHistograms.
//
// Outstanding publishes and deliveries are kept per channel in tag order, in queues that are consumed from the
// front without moving what waits behind, and bounded: past `FlowLimits.maximumOutstanding` per channel the
// oldest is given up and counted as untracked.
import AMQPScopeCodec
import AMQPScopePackets

/// Latency percentiles, in milliseconds.
public struct LatencySummary: Hashable, Sendable {
    /// Samples.
    public var count: Int
    /// Median.
    public var p50: Double
    /// 90th percentile.
    public var p90: Double
    /// 99th percentile.
    public var p99: Double
    /// The largest.
    public var max: Double
}

/// Messages a connection's death (or a channel's error close) left in doubt.
public struct MessagesAtRisk: Hashable, Sendable {
    /// Publishes the client wrote after its peer had already closed: lost for certain.
    public var lost = 0
    /// Publishes not yet confirmed when the connection died (or whose content never completed): maybe lost.
    public var unconfirmed = 0
    /// Deliveries not yet acknowledged when it died: the broker redelivers them (duplicates downstream).
    public var unacked = 0
    /// The first and last packets of the publishes and deliveries counted, and their channels.
    public var firstPacket: Int?
    /// The last packet of them.
    public var lastPacket: Int?
    /// The first one's time.
    public var firstTime: Timestamp?
    /// The last one's time.
    public var lastTime: Timestamp?
    /// The channels they were on.
    public var channels: [UInt16] = []
    /// Nothing at risk.
    public var isEmpty: Bool { lost == 0 && unconfirmed == 0 && unacked == 0 }
}

/// A stretch during which a consumer held as many unacknowledged deliveries as its prefetch allowed.
public struct Saturation: Hashable, Sendable {
    /// The channel.
    public var channel: UInt16
    /// The consumer tag, when the limit was per consumer.
    public var consumerTag: String?
    /// The queue it consumed from, when known.
    public var queue: String?
    /// The prefetch count.
    public var prefetch: Int
    /// When it reached the limit, and the packet.
    public var from: Timestamp
    /// The packet that reached the limit.
    public var fromPacket: Int
    /// When an ack brought it below again (nil: still saturated at the end).
    public var to: Timestamp?
    /// That ack's packet.
    public var toPacket: Int?
}

/// A basic.return: a mandatory publish the broker could not route.
public struct ReturnedMessage: Hashable, Sendable {
    /// The channel.
    public var channel: UInt16
    /// The reply code (312 NO_ROUTE, 313 NO_CONSUMERS).
    public var replyCode: UInt16
    /// The reply text.
    public var replyText: String
    /// The exchange.
    public var exchange: String
    /// The routing key.
    public var routingKey: String
    /// Where it was seen.
    public var packetNumber: Int
    /// When.
    public var time: Timestamp
}

/// A message that came back again and again.
public struct Redelivery: Hashable, Sendable {
    /// How the message is known: its message-id, or exchange, routing key and size.
    public var message: String
    /// Deliveries of it with the redelivered flag.
    public var redeliveries: Int
    /// Times the client sent it back (nack or reject with requeue).
    public var requeues: Int
    /// The channel of its last delivery.
    public var channel: UInt16
    /// Its first and last deliveries' packets.
    public var firstPacket: Int
    /// The last delivery's packet.
    public var lastPacket: Int
    /// When they were.
    public var firstTime: Timestamp
    /// The last delivery's time.
    public var lastTime: Timestamp
}

/// One channel's or one key's flow.
public struct FlowPart: Hashable, Sendable {
    /// The channel, or the queue ("queue"), or the exchange and routing key ("exchange/routing-key").
    public var name: String
    /// Publishes completed.
    public var publishes = 0
    /// Confirmed by basic.ack.
    public var confirmed = 0
    /// Refused by basic.nack.
    public var nacked = 0
    /// Deliveries (and get-oks).
    public var deliveries = 0
    /// Deliveries the client acknowledged.
    public var acked = 0
    /// Most deliveries unacknowledged at once.
    public var maxUnacked = 0
    /// Prefetch count in force (channel or consumer), when set.
    public var prefetch: Int?
    /// Publish-to-confirm latency.
    public var confirmLatency: LatencySummary?
    /// Deliver-to-ack latency.
    public var ackLatency: LatencySummary?
}

/// A connection's message flow.
public struct FlowRecord: Hashable, Sendable {
    /// Publishes completed (method, header and body).
    public var publishes = 0
    /// Publishes confirmed by basic.ack (returned ones included: the broker acks them after the return).
    public var confirmed = 0
    /// Publishes refused by basic.nack.
    public var nacked = 0
    /// The server's basic.ack frames (confirms; one may settle several with `multiple`).
    public var serverAcks = 0
    /// The server's basic.nack frames.
    public var serverNacks = 0
    /// Publishes in confirm mode still unconfirmed at the end.
    public var unconfirmedAtEnd = 0
    /// basic.return frames.
    public var returns = 0
    /// Deliveries (basic.deliver and basic.get-ok).
    public var deliveries = 0
    /// basic.get frames, and how many found the queue empty.
    public var gets = 0
    /// basic.get-empty frames.
    public var getEmpty = 0
    /// The client's basic.ack frames.
    public var acks = 0
    /// Deliveries they settled (`multiple` expanded).
    public var ackedMessages = 0
    /// The client's basic.nack frames.
    public var nacks = 0
    /// The client's basic.reject frames.
    public var rejects = 0
    /// Deliveries with the redelivered flag.
    public var redelivered = 0
    /// Most deliveries unacknowledged at once on one channel.
    public var maxUnacked = 0
    /// Unacknowledged deliveries over time, on the connection: (time, count) at each change, over the whole
    /// connection in at most `FlowLimits.keptSamples` points. Past that many changes, each point is the highest of a
    /// stretch of changes (two, then four, ...), so that peaks stay.
    public var unackedSamples: [UnackedSample] = []
    /// Outstanding publishes or deliveries given up on because a channel held more than the bound.
    public var untracked = 0
    /// The largest prefetch count set (basic.qos), when any.
    public var prefetch: Int?
    /// Publish-to-confirm latency: from the packet that completed the publish to the confirm's.
    public var confirmLatency: LatencySummary?
    /// Deliver-to-ack latency: from the packet that completed the delivery to the ack's.
    public var ackLatency: LatencySummary?
    /// What the connection's death left in doubt (empty while it lives, or after a clean close).
    public var atRisk = MessagesAtRisk()
    /// Per channel.
    public var byChannel: [FlowPart] = []
    /// Per queue (deliveries) and per exchange and routing key (publishes).
    public var byQueue: [FlowPart] = []
    /// Stretches at the prefetch limit, longest first (at most `FlowLimits.keptEvents`).
    public var saturations: [Saturation] = []
    /// basic.return frames (the first `FlowLimits.keptEvents`).
    public var returned: [ReturnedMessage] = []
    /// Messages redelivered more than once, most first.
    public var redeliveries: [Redelivery] = []
    /// Consumers the server cancelled (basic.cancel from the server): channel and consumer tag.
    public var serverCancels: [String] = []
    /// channel.flow from the server that paused a channel.
    public var flowPauses = 0
    /// The slowest confirm: the publish's packet and the confirm's.
    public var slowestConfirm: LatencySample?
    /// Publish-to-confirm latencies in buckets doubling from 0.1 ms (for charts).
    public var confirmBuckets: [LatencyBucket] = []
    /// Deliver-to-ack latencies in the same buckets.
    public var ackBuckets: [LatencyBucket] = []
    /// The slowest ack: the delivery's packet and the ack's.
    public var slowestAck: LatencySample?

    /// Anything flowed at all.
    public var isEmpty: Bool { publishes == 0 && deliveries == 0 && returns == 0 && gets == 0 && atRisk.isEmpty }
}

/// Latencies up to a bound, counted.
public struct LatencyBucket: Hashable, Sendable {
    /// The bucket's upper bound, in milliseconds.
    public var upToMilliseconds: Double
    /// Latencies in it.
    public var count: Int
}

/// One matched pair: where it started and where it was settled.
public struct LatencySample: Hashable, Sendable {
    /// The channel.
    public var channel: UInt16
    /// The publish's (or delivery's) packet and time.
    public var fromPacket: Int
    /// Its time.
    public var from: Timestamp
    /// The confirm's (or ack's) packet.
    public var toPacket: Int
    /// Its time.
    public var to: Timestamp
}

/// The connection's unacknowledged deliveries at one moment.
public struct UnackedSample: Hashable, Sendable {
    /// When.
    public var time: Timestamp
    /// How many.
    public var unacked: Int
}

package enum FlowLimits {
    /// Outstanding publishes or deliveries kept per channel; past it the oldest is given up (counted).
    package static let maximumOutstanding = 65_536
    /// Channels and keys with their own histograms per connection; the rest are counted only.
    package static let maximumParts = 32
    /// Saturations, returns and redelivered messages kept per connection.
    package static let keptEvents = 100
    /// Unacked samples kept per connection (a chart a few hundred pixels wide; 8 KiB per connection).
    package static let keptSamples = 512
    /// Redelivered messages followed per connection.
    package static let followedMessages = 1024
    /// Saturations shorter than this are routine and not kept.
    package static let keptSaturation: Int64 = 100_000_000
}

/// A queue of outstanding tags in increasing order, consumed from the front in O(1).
struct TagQueue<Item> {
    private var storage: [Item] = []
    private var head = 0
    var count: Int { storage.count - head }
    var isEmpty: Bool { head == storage.count }
    var first: Item? { isEmpty ? nil : storage[head] }
    mutating func append(_ item: Item) { storage.append(item) }
    mutating func removeFirst() -> Item {
        let item = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return item
    }
    /// The index (in `items`) of the first item whose key is at least `key`, by binary search.
    func lowerBound(_ key: UInt64, _ keyOf: (Item) -> UInt64) -> Int {
        var lo = head
        var hi = storage.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if keyOf(storage[mid]) < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
    subscript(index: Int) -> Item {
        get { storage[index] }
        set { storage[index] = newValue }
    }
    var startIndex: Int { head }
    var endIndex: Int { storage.count }
    mutating func removeAll() {
        storage.removeAll(keepingCapacity: true)
        head = 0
    }
}

/// A latency histogram in microseconds with HdrHistogram's layout for two significant digits from 1 µs (256
/// sub-buckets, each power of two past the first split into 128): every value is kept to within 1/128 of itself.
/// The counts cover only the indices from the smallest latency recorded to the largest, exactly, with room for about
/// a quarter more (latencies of 1 to 5 ms take 1.2 KiB; 1 µs to an hour at most 25 KiB): a connection keeps one per
/// channel, queue and key. Values are staged in the histogram as they come, listed five at a time (each as its index,
/// two bytes) and spread into the counts `listedLimit` at a time, and when read. It is written here, specialised to
/// this one layout: hdrhistogram-swift's generic reading code took about 100,000 instructions to summarise one
/// histogram, a quarter of a whole analysis; the tests hold this one's percentiles against hdrhistogram-swift on the
/// same values.
package struct LatencyHistogram {
    static let subBucketHalfCountMagnitude = 7
    static let subBucketHalfCount = 1 << subBucketHalfCountMagnitude
    static let subBucketMask: UInt64 = 255
    static let largest: UInt64 = 3_600_000_000
    /// Values listed before they are spread into the counts (120 bytes of indices): a whole number of stagings.
    static let listedLimit = 60
    /// Values staged in the histogram itself before they are listed, and the bits of each one's index (the largest
    /// index, that of an hour, is 3,286).
    static let stagedLimit = 5
    static let indexBits = 12
    /// Where the staged values' number starts in `staged`: above the indices.
    static let stagedCountShift = UInt64(stagedLimit * indexBits)

    /// `counts[i]` counts the values of index `base + i`, modulo 65,536; the rare count past that keeps its carries
    /// in `carries`, by index. Sixteen bits halve what the histograms take, the largest part of the memory of a
    /// capture whose connections all stay open (thousands of histograms of a few thousand counts each).
    package private(set) var counts: [UInt16] = []
    package private(set) var carries: [Int: UInt64] = [:]
    /// The indices of the values listed since the counts were last brought up to date (at most `listedLimit`). Values
    /// go to the list's end, in the same cache line as the last ones, and not to scattered counts: a capture of a
    /// thousand interleaved connections has evicted the count's line, and the array's header with it, by the time the
    /// connection's next latency comes (perf put 17 % of the timeline thread's time on those two loads). Spreading
    /// 60 at a time, the loads of the counts overlap. Most histograms never need counts: of 6,237 in 400,000 packets
    /// of the small mix, 4,097 held fewer than 64 values (57 on average, over 488 indices).
    package private(set) var listed: [UInt16] = []
    /// The indices of the last values recorded, before they are listed: `stagedLimit` of `indexBits` each in the low
    /// 60 bits, how many in the top four. Recording one reads and writes only the histogram, whose line the caller
    /// has just touched, where listing it loaded the list's storage: one cache miss per value (84 % of `record`'s
    /// samples under perf, the timeline thread's largest function); now one per five.
    package private(set) var staged: UInt64 = 0
    package private(set) var base = 0
    package private(set) var total: UInt64 = 0
    package private(set) var maxRecorded: UInt64 = 0

    package init() {}

    /// The counts index of a value (HdrHistogram's countsIndexForValue with unit magnitude 0).
    @inline(__always) static func index(_ value: UInt64) -> Int {
        let bucket = 56 - (value | subBucketMask).leadingZeroBitCount
        let subBucket = Int(value >> UInt64(bucket))
        return ((bucket + 1) << subBucketHalfCountMagnitude) + subBucket - subBucketHalfCount
    }

    /// The lowest value a counts index holds.
    static func value(_ index: Int) -> UInt64 {
        var bucket = (index >> subBucketHalfCountMagnitude) - 1
        var subBucket = (index & (subBucketHalfCount - 1)) + subBucketHalfCount
        if bucket < 0 {
            subBucket -= subBucketHalfCount
            bucket = 0
        }
        return UInt64(subBucket) << UInt64(bucket)
    }

    /// The highest value equivalent to those of a counts index.
    static func highest(_ index: Int) -> UInt64 { value(index + 1) - 1 }

    package mutating func record(microseconds: UInt64) {
        let v = max(1, min(microseconds, Self.largest))
        let n = UInt64(stagedCount)
        staged =
            staged & (1 << Self.stagedCountShift - 1) | UInt64(Self.index(v)) << (n * UInt64(Self.indexBits))
            | (n + 1) << Self.stagedCountShift
        if stagedCount == Self.stagedLimit { list() }
        total += 1
        maxRecorded = max(maxRecorded, v)
    }

    /// How many values are staged.
    package var stagedCount: Int { Int(staged >> Self.stagedCountShift) }

    /// Moves the staged values to the end of the list.
    private mutating func list() {
        // Room for the whole list at once (152 bytes with the array's header): an array grown one append at a time
        // reallocates at 8, 16, 32 and 64. Kept when the list is spread.
        if listed.capacity < Self.listedLimit { listed.reserveCapacity(Self.listedLimit) }
        for k in 0..<stagedCount {
            listed.append(UInt16(truncatingIfNeeded: staged >> UInt64(k * Self.indexBits) & (1 << Self.indexBits - 1)))
        }
        staged = 0
        if listed.count == Self.listedLimit { spread() }
    }

    /// Every value is in the counts: none staged or listed.
    package var isSpread: Bool { listed.isEmpty && staged == 0 }

    /// Moves the staged and listed values into the counts. The first time, the counts are made once to cover them
    /// exactly, with the usual quarter more room (and at most `listedLimit` values, no count can reach the carries).
    mutating func spread() {
        if staged != 0 { list() }
        guard !listed.isEmpty else { return }
        if counts.isEmpty, let low = listed.min(), let high = listed.max() {
            let size = Int(high - low) + 1
            counts = [UInt16](unsafeUninitializedCapacity: size + size / 4) { buffer, initialized in
                UnsafeMutableBufferPointer(rebasing: buffer[..<size]).initialize(repeating: 0)
                for i in listed { buffer[Int(i - low)] += 1 }
                initialized = size
            }
            base = Int(low)
        } else {
            for i in listed { count(Int(i)) }
        }
        listed.removeAll(keepingCapacity: true)
    }

    /// The values' histogram with its staged and listed values spread into the counts (itself when none wait).
    package var spreadOut: LatencyHistogram {
        guard !isSpread else { return self }
        var h = self
        h.spread()
        return h
    }

    /// Counts one more value at index `i`.
    private mutating func count(_ i: Int) { count(i, times: 1) }

    /// Counts `n` more values at index `i` (none: only widens the range to it).
    private mutating func count(_ i: Int, times n: UInt64) {
        if counts.isEmpty {
            base = i
            counts = [0]
        } else if i < base || i >= base + counts.count {
            // The counts cover exactly the new range. Their room is about a quarter more when it must grow, so
            // that the next few values just past either end fit without a new allocation (a histogram of a
            // short-lived connection grew on one value in eight, and an allocation cost more than the rest of a
            // record); only a quarter, as there are thousands of these histograms.
            let low = min(base, i)
            let high = max(base + counts.count - 1, i)
            let size = high - low + 1
            if counts.capacity < size {
                var grown: [UInt16] = []
                grown.reserveCapacity(size + size / 4)
                grown.append(contentsOf: repeatElement(0, count: base - low))
                grown.append(contentsOf: counts)
                grown.append(contentsOf: repeatElement(0, count: size - grown.count))
                counts = grown
            } else if i < base {
                counts.insert(contentsOf: repeatElement(0, count: base - i), at: 0)
            } else {
                counts.append(contentsOf: repeatElement(0, count: size - counts.count))
            }
            base = low
        }
        if n == 1 && counts[i - base] != UInt16.max {
            counts[i - base] += 1
        } else {
            let sum = UInt64(counts[i - base]) + n
            counts[i - base] = UInt16(truncatingIfNeeded: sum)
            if sum >> 16 > 0 { carries[i, default: 0] += sum >> 16 }
        }
    }

    mutating func record(_ nanoseconds: Int64) { record(microseconds: UInt64(max(0, nanoseconds / 1000))) }

    /// Adds another histogram's values: the same as having recorded them here (counts add index by index).
    package mutating func add(_ other: LatencyHistogram) {
        guard other.total > 0 else { return }
        // Nothing here yet (a connection's rest, before its first channel): the sum is the other.
        guard total > 0 else {
            self = other
            return
        }
        let other = other.spreadOut
        spread()
        // The range is widened once to cover the other's (whose first and last counts are not zero), not an index at
        // a time.
        count(other.base, times: 0)
        count(other.base + other.counts.count - 1, times: 0)
        for j in other.counts.indices {
            let n = other.count(at: j)
            if n > 0 { count(other.base + j, times: n) }
        }
        total += other.total
        maxRecorded = max(maxRecorded, other.maxRecorded)
    }

    /// HdrHistogram's valueAtPercentile: the highest value equivalent to the one at the nearest rank, at most the
    /// largest recorded.
    package func value(atPercentile percentile: Double) -> UInt64 { values(atPercentiles: [percentile])[0] }

    /// `value(atPercentile:)` of each percentile (given in ascending order), in one pass over the counts.
    package func values(atPercentiles percentiles: [Double]) -> [UInt64] {
        guard total > 0 else { return percentiles.map { _ in 0 } }
        guard isSpread else { return spreadOut.values(atPercentiles: percentiles) }
        var out: [UInt64] = []
        out.reserveCapacity(percentiles.count)
        var seen: UInt64 = 0
        var i = 0
        for percentile in percentiles {
            let wanted = max(1, UInt64((min(max(percentile.nextDown, 0), 100) * Double(total) / 100).rounded(.up)))
            i = sum(from: i, while: { $0 < wanted }, into: &seen)
            // The index that reached `wanted` is the one before `i`.
            out.append(seen >= wanted && i > 0 ? min(Self.highest(base + i - 1), maxRecorded) : maxRecorded)
        }
        return out
    }

    /// Adds counts to `sum` from index `start` while `more(sum)` holds (`more` turns false at most once as the sum
    /// grows), and returns the index after the last one added. Read in place, eight counts at a time while all eight
    /// fit, with the carries looked at only when there are any: every connection's summary reads each of its
    /// histograms through here.
    private func sum(from start: Int, upTo end: Int? = nil, while more: (UInt64) -> Bool, into sum: inout UInt64) -> Int
    {
        let end = min(end ?? counts.count, counts.count)
        guard start < end else { return start }
        var i = start
        counts.withUnsafeBufferPointer { c in
            if carries.isEmpty {
                while i + 8 <= end {
                    var eight = UInt64(c[i]) + UInt64(c[i + 1]) + UInt64(c[i + 2]) + UInt64(c[i + 3])
                    eight += UInt64(c[i + 4]) + UInt64(c[i + 5]) + UInt64(c[i + 6]) + UInt64(c[i + 7])
                    // Short of the end only if each of the eight additions would also be made one by one.
                    guard more(sum + eight) else { break }
                    sum += eight
                    i += 8
                }
                while i < end && more(sum) {
                    sum += UInt64(c[i])
                    i += 1
                }
            } else {
                while i < end && more(sum) {
                    sum += count(at: i)
                    i += 1
                }
            }
        }
        return i
    }

    /// Counts in buckets doubling from 0.1 ms, up to the largest recorded.
    var buckets: [LatencyBucket] {
        guard total > 0 else { return [] }
        guard isSpread else { return spreadOut.buckets }
        var out: [LatencyBucket] = []
        var high: UInt64 = 100
        var i = 0
        while true {
            // The bucket up to `high` holds the indices before the first whose lowest value is above `high` (the
            // indices under `base` hold nothing: the buckets up to it are empty either way).
            let next = Self.index(high + 1)
            let above = (Self.value(next) > high ? next : next + 1) - base
            var count: UInt64 = 0
            i = sum(from: i, upTo: above, while: { _ in true }, into: &count)
            out.append(LatencyBucket(upToMilliseconds: Double(high) / 1000, count: Int(count)))
            if i == counts.count { return out }
            high *= 2
        }
    }

    /// How many values `counts[i]` stands for, its carries included.
    @inline(__always) func count(at i: Int) -> UInt64 {
        carries.isEmpty ? UInt64(counts[i]) : UInt64(counts[i]) + (carries[base + i] ?? 0) << 16
    }

    /// p50, p90, p99 and the largest, in milliseconds.
    var summary: LatencySummary? {
        guard total > 0 else { return nil }
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        let p = values(atPercentiles: [50, 90, 99])
        return LatencySummary(count: Int(total), p50: ms(p[0]), p90: ms(p[1]), p99: ms(p[2]), max: ms(maxRecorded))
    }
}

/// Follows one connection's message flow from its frames.
struct FlowTracker {
    struct Publish {
        var seq: UInt64
        var time: Timestamp
        var packet: Int
        var part: Int?
        var settled: Bool
    }
    struct Delivery {
        var tag: UInt64
        var time: Timestamp
        var packet: Int
        var consumer: Int?
        var queuePart: Int?
        var settled: Bool
        /// Its message-id's digest and first bytes.
        var identity: UInt64?
        var label: MessageIDPrefix?
    }
    struct Consumer {
        var tag: String
        /// How a delivery names it (`FlowMessage.tagDigest`).
        var tagDigest: UInt64
        var queue: String
        /// no-ack (automatic acknowledgement): its deliveries are settled as they are sent.
        var noAck = false
        var unacked = 0
        var saturatedSince: (Timestamp, Int)?

        init(tag: String, queue: String, noAck: Bool) {
            self.tag = tag
            tagDigest = FlowMessage.tagDigest(tag)
            self.queue = queue
            self.noAck = noAck
        }
    }
    struct Channel {
        var number: UInt16
        var confirmMode = false
        var nextSeq: UInt64 = 1
        var publishes = TagQueue<Publish>()
        var deliveries = TagQueue<Delivery>()
        var unacked = 0
        var publishInFlight = 0
        // Read for every message: before the rarely used tuples of strings, which pushed them to the channel's
        // fourth cache line.
        var part: Int?
        var prefetchChannel: Int?
        var prefetchConsumer: Int?
        var saturatedSince: (Timestamp, Int)?
        var consumers: [Consumer] = []
        var pendingConsumer: (queue: String, noAck: Bool)?
        var lastGet: (queue: String, noAck: Bool)?
    }

    // What every message reads and changes comes first, then the record (whose counters open it): a thousand
    // interleaved connections evict a connection's tracker between two of its messages, and each cache line a message
    // touches is then a miss. Declared after the record (520 bytes), they began on its ninth line.
    var channels: [Channel] = []
    var parts: [(part: FlowPart, confirm: LatencyHistogram?, ack: LatencyHistogram?)] = []
    /// The connection's unacknowledged deliveries, over all channels.
    var unacked = 0
    /// Channels and consumers with a saturation under way (`saturatedSince` set): while none is, the live check
    /// has nothing to look at in the channels.
    var saturating = 0
    /// Changes of the unacked count each kept point stands for (1 until `FlowLimits.keptSamples` points were kept),
    /// and how many the last point holds so far.
    var sampleStretch = 1
    var samplesInStretch = 0
    /// Whether the unacked count is traced (`EngineConfiguration.keepsUnackedTrace`).
    var tracesUnacked = true
    /// The server closed (Connection.Close, FIN or RST): publishes after it are lost for certain.
    var serverClosed = false
    /// The Connection.Close handshake completed.
    var cleanClose = false
    /// The last exchange and routing key looked up, and its part: publishes repeat them, and the name is not built.
    var lastKey: (exchange: String, routingKey: String, part: Int?)?
    /// The last queue looked up, and its part.
    var lastQueue: (queue: String, part: Int?)?
    var record = FlowRecord()
    /// The connection's latencies are those of its channels' parts and these: the ones of a channel with no part (past
    /// `FlowLimits.maximumParts`). A latency is recorded once for its channel and once for its key or queue, not a
    /// third time for the connection: the connection's histogram is their sum, made when it is read
    /// (`latencies(confirm:)`). On 1 GiB of the small mix the third copy took 3.9 MB (900 page faults).
    var confirmLatencyRest = LatencyHistogram()
    var ackLatencyRest = LatencyHistogram()
    var partIndex: [String: Int] = [:]
    var redeliveries: [UInt64: Redelivery] = [:]
    /// Live alerts already given (each once).
    var alerted: Set<String> = []
    /// Confirms counted when the live check last looked at their latency.
    var confirmsLooked: UInt64 = 0

    mutating func keyPart(_ exchange: String, _ routingKey: String) -> Int? {
        if let last = lastKey, last.exchange == exchange, last.routingKey == routingKey { return last.part }
        let p = part("exchange \(exchange.isEmpty ? "(default)" : exchange) key \(routingKey)")
        lastKey = (exchange, routingKey, p)
        return p
    }

    mutating func queuePart(_ queue: String) -> Int? {
        if let last = lastQueue, last.queue == queue { return last.part }
        let p = part("queue \(queue)")
        lastQueue = (queue, p)
        return p
    }

    /// Live: consumers at their prefetch for longer than the threshold, and confirms slower than it, as of `now`;
    /// each is given once.
    mutating func alerts(now: Timestamp, options: StoryOptions) -> [(DiagnosisCode, String)] {
        var out: [(DiagnosisCode, String)] = []
        // Live, every connection with a flow is looked at every second: the channels are read only while a saturation
        // is under way, in place, and only a channel with one is copied and looked at further.
        for index in channels.indices where saturating > 0 {
            guard
                channels[index].saturatedSince != nil
                    || channels[index].consumers.contains(where: { $0.saturatedSince != nil })
            else { continue }
            let channel = channels[index]
            var stretches: [(String, Int, (Timestamp, Int))] = []
            if let since = channel.saturatedSince, let limit = channel.prefetchChannel {
                stretches.append(("channel \(channel.number)", limit, since))
            }
            if let limit = channel.prefetchConsumer {
                for consumer in channel.consumers {
                    if let since = consumer.saturatedSince {
                        stretches.append(
                            (
                                "consumer \"\(consumer.tag)\" of queue \"\(consumer.queue)\" on channel \(channel.number)",
                                limit, since
                            ))
                    }
                }
            }
            for (who, limit, since) in stretches where now.since(since.0) >= options.saturationThreshold {
                let key = "saturated \(who) \(since.1)"
                guard alerted.insert(key).inserted else { continue }
                out.append(
                    (
                        .consumerSaturated,
                        "the \(who) has held \(limit) of \(limit) deliveries unacknowledged (prefetch \(limit)) for "
                            + "\(Diagnoser.seconds(now.since(since.0))) since packet \(since.1): the broker sends it "
                            + "nothing more until it acknowledges"
                    ))
            }
        }
        // The percentiles are worked out only when confirms came since the last look (each records one latency).
        let looked = confirmsLooked
        confirmsLooked = UInt64(record.confirmed)
        // No percentile is above the largest latency recorded: the percentiles are not worked out while that is
        // under the threshold.
        if record.confirmed >= 10, confirmsLooked != looked,
            largestConfirmLatency * 1000 >= UInt64(max(0, options.slowConfirmThreshold)),
            !alerted.contains("slow-confirms"), let latency = latencies(confirm: true).summary,
            latency.p99 * 1_000_000 > Double(options.slowConfirmThreshold), alerted.insert("slow-confirms").inserted
        {
            out.append(
                (
                    .slowConfirms,
                    "publisher confirms are slow: p99 \(Diagnoser.milliseconds(latency.p99)) over "
                        + "\(latency.count) confirms so far (median \(Diagnoser.milliseconds(latency.p50)))"
                ))
        }
        return out
    }

    mutating func channelIndex(_ number: UInt16) -> Int {
        if let i = channels.firstIndex(where: { $0.number == number }) { return i }
        channels.append(Channel(number: number))
        return channels.count - 1
    }

    /// The part (per channel, or per key) with histograms, made on first use while under the bound.
    mutating func part(_ name: String) -> Int? {
        if let i = partIndex[name] { return i }
        guard parts.count < FlowLimits.maximumParts else { return nil }
        parts.append((FlowPart(name: name), nil, nil))
        partIndex[name] = parts.count - 1
        return parts.count - 1
    }

    mutating func channelPart(_ c: Int) -> Int? {
        if let p = channels[c].part { return p }
        let p = part("channel \(channels[c].number)")
        channels[c].part = p
        return p
    }

    /// The parts of the connection's channels, one for each channel that has one (a channel keeps its entry and its
    /// part when it is closed and opened again).
    var channelParts: some Sequence<Int> { channels.lazy.compactMap(\.part) }

    /// The largest confirm latency recorded, in microseconds (read from the histograms without adding them up).
    var largestConfirmLatency: UInt64 {
        channelParts.reduce(confirmLatencyRest.maxRecorded) { Swift.max($0, parts[$1].confirm?.maxRecorded ?? 0) }
    }

    /// The connection's confirm (or ack) latencies: those of its channels' parts and of the channels with none.
    func latencies(confirm: Bool) -> LatencyHistogram {
        var all = confirm ? confirmLatencyRest : ackLatencyRest
        for p in channelParts {
            if let h = confirm ? parts[p].confirm : parts[p].ack { all.add(h) }
        }
        return all
    }

    // MARK: - Events

    /// A method frame of the message flow: publish, deliver, and the settling of either.
    mutating func routine(
        _ method: RoutineMethod, channel number: UInt16, direction: Direction, time: Timestamp, packet: Int
    ) {
        switch method {
        case .publish:
            if serverClosed {
                record.atRisk.lost += 1
                noteRisk(number, packet, time)
                return
            }
            channels[channelIndex(number)].publishInFlight += 1
        case .deliver:
            break  // followed with its message
        case .ack(let tag, let multiple) where direction == .serverToClient:
            record.serverAcks += 1
            confirm(channel: number, tag: tag, multiple: multiple, nack: false, time: time, packet: packet)
        case .nack(let tag, let multiple, _) where direction == .serverToClient:
            record.serverNacks += 1
            confirm(channel: number, tag: tag, multiple: multiple, nack: true, time: time, packet: packet)
        case .ack(let tag, let multiple):
            record.acks += 1
            settle(
                channel: number, tag: tag, multiple: multiple, requeue: false, acked: true, time: time, packet: packet)
        case .nack(let tag, let multiple, let requeue):
            record.nacks += 1
            settle(
                channel: number, tag: tag, multiple: multiple, requeue: requeue, acked: false, time: time,
                packet: packet)
        case .reject(let tag, let requeue):
            record.rejects += 1
            settle(
                channel: number, tag: tag, multiple: false, requeue: requeue, acked: false, time: time, packet: packet)
        }
    }

    /// A method frame.
    mutating func method(
        _ method: Method, channel number: UInt16, direction: Direction, time: Timestamp, packet: Int,
        atRisk: (Int) -> Void = { _ in }
    ) {
        if let routine = RoutineMethod(method) {
            self.routine(routine, channel: number, direction: direction, time: time, packet: packet)
            return
        }
        switch method {
        case .confirmSelect:
            let c = channelIndex(number)
            channels[c].confirmMode = true
        case .basicQos(let q):
            let c = channelIndex(number)
            let count = q.prefetchCount == 0 ? nil : Int(q.prefetchCount)
            // RabbitMQ: global=false limits each new consumer, global=true the channel.
            if q.global { channels[c].prefetchChannel = count } else { channels[c].prefetchConsumer = count }
            if let count { record.prefetch = Swift.max(record.prefetch ?? 0, count) }
            if let p = channelPart(c) { parts[p].part.prefetch = count }
        case .basicConsume(let consume):
            let c = channelIndex(number)
            if consume.consumerTag.isEmpty {
                channels[c].pendingConsumer = (consume.queue, consume.noAck)
            } else if channels[c].consumers.count < 256 {
                channels[c].consumers.append(
                    Consumer(tag: consume.consumerTag, queue: consume.queue, noAck: consume.noAck))
            }
        case .basicConsumeOk(let ok):
            let c = channelIndex(number)
            if let pending = channels[c].pendingConsumer, channels[c].consumers.count < 256,
                !channels[c].consumers.contains(where: { $0.tag == ok.consumerTag })
            {
                channels[c].consumers.append(Consumer(tag: ok.consumerTag, queue: pending.queue, noAck: pending.noAck))
                channels[c].pendingConsumer = nil
            }
        case .basicCancel(let cancel) where direction == .serverToClient:
            if record.serverCancels.count < FlowLimits.keptEvents {
                record.serverCancels.append("channel \(number) consumer \(cancel.consumerTag)")
            }
        case .basicGet(let get):
            record.gets += 1
            channels[channelIndex(number)].lastGet = (get.queue, get.noAck)
        case .basicGetEmpty:
            record.getEmpty += 1
        case .basicReturn(let r):
            record.returns += 1
            if record.returned.count < FlowLimits.keptEvents {
                record.returned.append(
                    ReturnedMessage(
                        channel: number, replyCode: r.replyCode, replyText: r.replyText, exchange: r.exchange,
                        routingKey: r.routingKey, packetNumber: packet, time: time))
            }
        case .channelFlow(let flow) where direction == .serverToClient && !flow.active:
            record.flowPauses += 1
        case .channelClose(let close):
            // A channel closed with an error loses what it held; a normal close requeues its unacked deliveries.
            if close.replyCode >= 300 { abandon(channel: number, packet: packet) }
            dropChannel(number, time: time, packet: packet)
        case .connectionClose where direction == .serverToClient:
            serverClosed = true
        case .connectionCloseOk:
            cleanClose = true
        default:
            break
        }
    }

    /// A complete message: a publish (the client's), a delivery or get-ok (the server's), as the flow's view of it.
    /// The only place messages are followed: a whole one gives its view (`FlowMessage.init(_:)`).
    mutating func message(_ message: FlowMessage, direction: Direction, time: Timestamp, packet: Int) {
        switch message.carrier {
        case .publish(let exchange, let routingKey) where direction == .clientToServer:
            let c = channelIndex(message.channel)
            channels[c].publishInFlight = Swift.max(0, channels[c].publishInFlight - 1)
            record.publishes += 1
            let keyPart = keyPart(exchange, routingKey)
            if let keyPart { parts[keyPart].part.publishes += 1 }
            if let cp = channelPart(c) { parts[cp].part.publishes += 1 }
            guard channels[c].confirmMode else { return }
            let seq = channels[c].nextSeq
            channels[c].nextSeq += 1
            if channels[c].publishes.count >= FlowLimits.maximumOutstanding {
                _ = channels[c].publishes.removeFirst()
                record.untracked += 1
            }
            channels[c].publishes.append(Publish(seq: seq, time: time, packet: packet, part: keyPart, settled: false))
        case .deliver(let consumerTag, let deliveryTag, let redelivered):
            let c = channelIndex(message.channel)
            let consumer = channels[c].consumers.firstIndex { $0.tagDigest == consumerTag }
            let queue = consumer.map { channels[c].consumers[$0].queue }
            // A delivery whose tag the capture cut off is counted, not followed: its ack cannot be matched.
            delivered(
                channel: c, tag: deliveryTag, redelivered: redelivered, consumer: consumer, queue: queue,
                noAck: message.methodCut || (consumer.map { channels[c].consumers[$0].noAck } ?? false),
                identity: message.messageIDDigest, label: message.messageIDPrefix, time: time, packet: packet)
        case .getOk(let deliveryTag, let redelivered):
            let c = channelIndex(message.channel)
            delivered(
                channel: c, tag: deliveryTag, redelivered: redelivered, consumer: nil,
                queue: channels[c].lastGet?.queue, noAck: channels[c].lastGet?.noAck ?? false,
                identity: message.messageIDDigest, label: message.messageIDPrefix, time: time, packet: packet)
        default:
            break
        }
    }

    /// How a redelivered message is named in a report.
    static func name(_ label: MessageIDPrefix?) -> String { "the message with message-id \"\(label?.text ?? "")\"" }

    mutating func delivered(
        channel c: Int, tag: UInt64, redelivered: Bool, consumer: Int?, queue: String?, noAck: Bool,
        identity: UInt64?, label: MessageIDPrefix?, time: Timestamp, packet: Int
    ) {
        record.deliveries += 1
        if redelivered { record.redelivered += 1 }
        var queueIndex: Int?
        if let queue { queueIndex = self.queuePart(queue) }
        if let queueIndex { parts[queueIndex].part.deliveries += 1 }
        if let cp = channelPart(c) { parts[cp].part.deliveries += 1 }
        // A requeued message coming back: follow it by its message-id (without one it cannot be told apart).
        if redelivered, let key = identity {
            if var r = redeliveries[key] {
                r.redeliveries += 1
                r.lastPacket = packet
                r.lastTime = time
                r.channel = channels[c].number
                redeliveries[key] = r
            } else if redeliveries.count < FlowLimits.followedMessages {
                redeliveries[key] = Redelivery(
                    message: Self.name(label), redeliveries: 1, requeues: 0, channel: channels[c].number,
                    firstPacket: packet, lastPacket: packet, firstTime: time, lastTime: time)
            }
        }
        // A no-ack delivery is settled as it is sent: nothing to wait for, nothing at risk.
        guard !noAck else { return }
        if channels[c].deliveries.count >= FlowLimits.maximumOutstanding {
            let dropped = channels[c].deliveries.removeFirst()
            if !dropped.settled { adjustUnacked(c, dropped.consumer, -1, time, packet) }
            record.untracked += 1
        }
        channels[c].deliveries.append(
            Delivery(
                tag: tag, time: time, packet: packet, consumer: consumer, queuePart: queueIndex, settled: false,
                identity: identity, label: label))
        adjustUnacked(c, consumer, 1, time, packet)
    }

    /// The unacked counts of a channel and its consumer change; saturation starts or ends.
    mutating func adjustUnacked(_ c: Int, _ consumer: Int?, _ delta: Int, _ time: Timestamp, _ packet: Int) {
        channels[c].unacked += delta
        unacked += delta
        record.maxUnacked = Swift.max(record.maxUnacked, channels[c].unacked)
        if let cp = channelPart(c) {
            parts[cp].part.maxUnacked = Swift.max(parts[cp].part.maxUnacked, channels[c].unacked)
        }
        if tracesUnacked { sampleUnacked(time) }
        // A saturation starts or ends only when the state changes: otherwise nothing is written back (each write
        // through `channels[c]` is a uniqueness check, and this runs for every delivery and every ack).
        if let limit = channels[c].prefetchChannel {
            let now = channels[c].unacked >= limit
            if now != (channels[c].saturatedSince != nil) {
                channels[c].saturatedSince = transition(
                    channels[c].saturatedSince, now, channel: c, consumer: nil, prefetch: limit, time: time,
                    packet: packet)
                saturating += now ? 1 : -1
            }
        }
        if let k = consumer {
            channels[c].consumers[k].unacked += delta
            if let limit = channels[c].prefetchConsumer {
                let now = channels[c].consumers[k].unacked >= limit
                if now != (channels[c].consumers[k].saturatedSince != nil) {
                    channels[c].consumers[k].saturatedSince = transition(
                        channels[c].consumers[k].saturatedSince, now, channel: c, consumer: k, prefetch: limit,
                        time: time, packet: packet)
                    saturating += now ? 1 : -1
                }
            }
        }
    }

    /// One change of the connection's unacked count: a point of its own while the points are few; past
    /// `FlowLimits.keptSamples`, pairs of points merge into their higher one and each later point stands for a stretch
    /// of twice as many changes (the highest of them, as it comes).
    mutating func sampleUnacked(_ time: Timestamp) {
        let sample = UnackedSample(time: time, unacked: unacked)
        if samplesInStretch > 0 && samplesInStretch < sampleStretch {
            samplesInStretch += 1
            if sample.unacked > record.unackedSamples[record.unackedSamples.count - 1].unacked {
                record.unackedSamples[record.unackedSamples.count - 1] = sample
            }
            return
        }
        record.unackedSamples.append(sample)
        samplesInStretch = 1
        guard record.unackedSamples.count == FlowLimits.keptSamples else { return }
        // Full: each pair becomes its higher point (the earlier on a tie), and stretches double. In place, so the
        // trace keeps the one array it has.
        record.unackedSamples.withUnsafeMutableBufferPointer { samples in
            for i in 0..<samples.count / 2 {
                let (a, b) = (samples[2 * i], samples[2 * i + 1])
                samples[i] = b.unacked > a.unacked ? b : a
            }
        }
        record.unackedSamples.removeLast(record.unackedSamples.count - record.unackedSamples.count / 2)
        sampleStretch *= 2
        samplesInStretch = sampleStretch  // the next change starts a stretch
    }

    mutating func transition(
        _ since: (Timestamp, Int)?, _ saturated: Bool, channel c: Int, consumer k: Int?, prefetch: Int,
        time: Timestamp, packet: Int
    ) -> (Timestamp, Int)? {
        if saturated { return since ?? (time, packet) }
        if let (from, fromPacket) = since {
            keepSaturation(
                Saturation(
                    channel: channels[c].number, consumerTag: k.map { channels[c].consumers[$0].tag },
                    queue: k.map { channels[c].consumers[$0].queue }, prefetch: prefetch, from: from,
                    fromPacket: fromPacket, to: time, toPacket: packet))
        }
        return nil
    }

    mutating func keepSaturation(_ s: Saturation) {
        let length = (s.to ?? s.from).since(s.from)
        guard s.to == nil || length >= FlowLimits.keptSaturation else { return }  // short ones are routine
        record.saturations.append(s)
        record.saturations.sort { ($0.to ?? $0.from).since($0.from) > ($1.to ?? $1.from).since($1.from) }
        if record.saturations.count > FlowLimits.keptEvents { record.saturations.removeLast() }
    }

    /// A confirm's (or an ack's) latency, counted in a part (a channel, a key) with its own histogram.
    mutating func recordLatency(_ latency: Int64, in part: Int?, confirm: Bool) {
        guard let part else { return }
        // One access to the part: each `parts[part]` is a call to the array's accessor, with its uniqueness check.
        Self.recordLatency(latency, confirm: confirm, in: &parts[part])
    }

    private static func recordLatency(
        _ latency: Int64, confirm: Bool,
        in entry: inout (part: FlowPart, confirm: LatencyHistogram?, ack: LatencyHistogram?)
    ) {
        if confirm {
            entry.part.confirmed += 1
            // Assigned only when absent: `x = x ?? y` would copy the histogram out and back on every record.
            if entry.confirm == nil { entry.confirm = LatencyHistogram() }
            entry.confirm!.record(latency)
        } else {
            entry.part.acked += 1
            if entry.ack == nil { entry.ack = LatencyHistogram() }
            entry.ack!.record(latency)
        }
    }

    /// The server confirmed (or refused) one publish, or all up to `tag`.
    mutating func confirm(
        channel number: UInt16, tag: UInt64, multiple: Bool, nack: Bool, time: Timestamp, packet: Int
    ) {
        let c = channelIndex(number)
        let cp = channelPart(c)
        func settle(_ p: Publish) {
            if nack {
                record.nacked += 1
                if let cp { parts[cp].part.nacked += 1 }
                if let kp = p.part { parts[kp].part.nacked += 1 }
                return
            }
            record.confirmed += 1
            let latency = time.since(p.time)
            if cp == nil { confirmLatencyRest.record(latency) }
            if latency > (record.slowestConfirm.map { $0.to.since($0.from) } ?? -1) {
                record.slowestConfirm = LatencySample(
                    channel: number, fromPacket: p.packet, from: p.time, toPacket: packet, to: time)
            }
            recordLatency(latency, in: cp, confirm: true)
            recordLatency(latency, in: p.part, confirm: true)
        }
        if multiple {
            while let first = channels[c].publishes.first, first.seq <= tag {
                let p = channels[c].publishes.removeFirst()
                if !p.settled { settle(p) }
            }
        } else {
            let i = channels[c].publishes.lowerBound(tag) { $0.seq }
            guard i < channels[c].publishes.endIndex, channels[c].publishes[i].seq == tag,
                !channels[c].publishes[i].settled
            else { return }
            channels[c].publishes[i].settled = true
            settle(channels[c].publishes[i])
        }
        while channels[c].publishes.first?.settled == true { _ = channels[c].publishes.removeFirst() }
    }

    /// The client acked, nacked or rejected one delivery, or all up to `tag`.
    mutating func settle(
        channel number: UInt16, tag: UInt64, multiple: Bool, requeue: Bool, acked: Bool, time: Timestamp,
        packet: Int
    ) {
        let c = channelIndex(number)
        let cp = channelPart(c)
        func one(_ d: Delivery) {
            adjustUnacked(c, d.consumer, -1, time, packet)
            if acked {
                record.ackedMessages += 1
                let latency = time.since(d.time)
                if cp == nil { ackLatencyRest.record(latency) }
                if latency > (record.slowestAck.map { $0.to.since($0.from) } ?? -1) {
                    record.slowestAck = LatencySample(
                        channel: number, fromPacket: d.packet, from: d.time, toPacket: packet, to: time)
                }
                recordLatency(latency, in: cp, confirm: false)
                recordLatency(latency, in: d.queuePart, confirm: false)
            } else if requeue, let key = d.identity, var r = redeliveries[key] {
                r.requeues += 1
                redeliveries[key] = r
            } else if requeue, let key = d.identity, redeliveries.count < FlowLimits.followedMessages {
                redeliveries[key] = Redelivery(
                    message: Self.name(d.label), redeliveries: 0, requeues: 1, channel: number, firstPacket: d.packet,
                    lastPacket: d.packet, firstTime: d.time, lastTime: d.time)
            }
        }
        if multiple {
            // tag 0 with multiple: everything outstanding.
            while let first = channels[c].deliveries.first, tag == 0 || first.tag <= tag {
                let d = channels[c].deliveries.removeFirst()
                if !d.settled { one(d) }
            }
        } else {
            let i = channels[c].deliveries.lowerBound(tag) { $0.tag }
            guard i < channels[c].deliveries.endIndex, channels[c].deliveries[i].tag == tag,
                !channels[c].deliveries[i].settled
            else { return }
            channels[c].deliveries[i].settled = true
            one(channels[c].deliveries[i])
        }
        while channels[c].deliveries.first?.settled == true { _ = channels[c].deliveries.removeFirst() }
    }

    mutating func noteRisk(_ channel: UInt16, _ packet: Int, _ time: Timestamp?) {
        if packet > 0, let time {
            if record.atRisk.firstPacket.map({ packet < $0 }) ?? true {
                record.atRisk.firstPacket = packet
                record.atRisk.firstTime = time
            }
            if record.atRisk.lastPacket.map({ packet > $0 }) ?? true {
                record.atRisk.lastPacket = packet
                record.atRisk.lastTime = time
            }
        }
        if !record.atRisk.channels.contains(channel) && record.atRisk.channels.count < 64 {
            record.atRisk.channels.append(channel)
        }
    }

    /// A channel (or the connection) ended with its work in doubt: what it held is at risk.
    mutating func abandon(channel number: UInt16, packet: Int) {
        guard let c = channels.firstIndex(where: { $0.number == number }) else { return }
        var unconfirmed = channels[c].publishInFlight
        for i in channels[c].publishes.startIndex..<channels[c].publishes.endIndex
        where !channels[c].publishes[i].settled {
            unconfirmed += 1
            noteRisk(number, channels[c].publishes[i].packet, channels[c].publishes[i].time)
        }
        var unackedCount = 0
        for i in channels[c].deliveries.startIndex..<channels[c].deliveries.endIndex
        where !channels[c].deliveries[i].settled {
            unackedCount += 1
            noteRisk(number, channels[c].deliveries[i].packet, channels[c].deliveries[i].time)
        }
        guard unconfirmed + unackedCount > 0 else { return }
        record.atRisk.unconfirmed += unconfirmed
        record.atRisk.unacked += unackedCount
        noteRisk(number, 0, nil)
    }

    /// A channel closed: its outstanding work is forgotten (the broker requeues unacked deliveries).
    mutating func dropChannel(_ number: UInt16, time: Timestamp, packet: Int) {
        guard let c = channels.firstIndex(where: { $0.number == number }) else { return }
        if channels[c].unacked != 0 {
            unacked -= channels[c].unacked
            sampleUnacked(time)
        }
        for k in channels[c].consumers.indices {
            if channels[c].consumers[k].saturatedSince != nil { saturating -= 1 }
            if let (from, fromPacket) = channels[c].consumers[k].saturatedSince,
                let limit = channels[c].prefetchConsumer
            {
                keepSaturation(
                    Saturation(
                        channel: number, consumerTag: channels[c].consumers[k].tag,
                        queue: channels[c].consumers[k].queue, prefetch: limit, from: from, fromPacket: fromPacket,
                        to: time, toPacket: packet))
            }
        }
        if channels[c].saturatedSince != nil { saturating -= 1 }
        if let (from, fromPacket) = channels[c].saturatedSince, let limit = channels[c].prefetchChannel {
            keepSaturation(
                Saturation(
                    channel: number, consumerTag: nil, queue: nil, prefetch: limit, from: from,
                    fromPacket: fromPacket, to: time, toPacket: packet))
        }
        let part = channels[c].part
        channels[c] = Channel(number: number)
        channels[c].part = part
    }

    /// The record as it stands: `ended` when the connection is over, `died` when it ended without the close
    /// handshake (then what was outstanding is at risk).
    func summary(ended: Bool, died: Bool) -> FlowRecord {
        var copy = self
        var r = copy.record
        var unconfirmedAtEnd = 0
        for channel in copy.channels where channel.confirmMode {
            for i in channel.publishes.startIndex..<channel.publishes.endIndex
            where !channel.publishes[i].settled {
                unconfirmedAtEnd += 1
            }
        }
        r.unconfirmedAtEnd = unconfirmedAtEnd
        if died {
            for channel in copy.channels { copy.abandon(channel: channel.number, packet: 0) }
            r.atRisk = copy.record.atRisk
        }
        // Saturations still open at the end.
        for channel in copy.channels {
            if let (from, fromPacket) = channel.saturatedSince, let limit = channel.prefetchChannel {
                copy.keepSaturation(
                    Saturation(
                        channel: channel.number, consumerTag: nil, queue: nil, prefetch: limit, from: from,
                        fromPacket: fromPacket, to: nil, toPacket: nil))
            }
            for consumer in channel.consumers {
                if let (from, fromPacket) = consumer.saturatedSince, let limit = channel.prefetchConsumer {
                    copy.keepSaturation(
                        Saturation(
                            channel: channel.number, consumerTag: consumer.tag, queue: consumer.queue,
                            prefetch: limit, from: from, fromPacket: fromPacket, to: nil, toPacket: nil))
                }
            }
        }
        r.saturations = copy.record.saturations
        _ = ended
        let confirmLatency = latencies(confirm: true)
        let ackLatency = latencies(confirm: false)
        r.confirmLatency = confirmLatency.summary
        r.ackLatency = ackLatency.summary
        r.confirmBuckets = confirmLatency.buckets
        r.ackBuckets = ackLatency.buckets
        for (part, confirm, ack) in parts {
            var p = part
            p.confirmLatency = confirm?.summary
            p.ackLatency = ack?.summary
            if p.name.hasPrefix("channel ") { r.byChannel.append(p) } else { r.byQueue.append(p) }
        }
        // Most redelivered first; then in the order they first came (a total order: the output is deterministic).
        r.redeliveries = redeliveries.values.filter { $0.redeliveries + $0.requeues > 1 }.sorted {
            if $0.redeliveries != $1.redeliveries { return $0.redeliveries > $1.redeliveries }
            if $0.firstPacket != $1.firstPacket { return $0.firstPacket < $1.firstPacket }
            if $0.firstTime != $1.firstTime { return $0.firstTime < $1.firstTime }
            return $0.message < $1.message
        }
        if r.redeliveries.count > FlowLimits.keptEvents { r.redeliveries.removeLast(r.redeliveries.count - 100) }
        return r
    }
}
