// Values by connection id, looked up on every packet by both stages.
import AMQPScopeReassembly

/// Values by connection id: an open-addressing table (linear probing, at most half full) that hashes an id by one
/// multiplication. Dictionary always hashes with SipHash, which is there to resist keys an adversary picks; a
/// connection id is amqpscope's own number (1, 2, 3, ... in order of first packet), which no capture chooses, and
/// Fibonacci hashing spreads such runs of numbers (and any arithmetic progression of them) evenly over the table.
/// Each stage looks a connection up here once a packet (the decoding stage its decoders, the timeline stage its
/// record builder).
struct ConnectionTable<Value>: Sequence {
    /// A slot: its id (or `empty`) beside its value, so that a lookup reads one cache line, not one in an array of
    /// ids and another in an array of values.
    private struct Member {
        var key: Int
        var value: Value?
    }

    private var members: [Member]
    private static var empty: Int { Int.min }
    private static var vacant: Member { Member(key: empty, value: nil) }
    /// The table's size is `1 << (64 - shift)`.
    private var shift: Int
    private(set) var count = 0

    init() {
        members = Array(repeating: Self.vacant, count: 16)
        shift = 60
    }

    private var mask: Int { members.count - 1 }

    /// Fibonacci hashing: the top bits of the id times 2^64 / φ.
    private func home(_ key: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(bitPattern: Int64(key)) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(shift))
    }

    /// The slot holding `key`, or the empty slot where it would go.
    private func find(_ key: Int) -> (slot: Int, found: Bool) {
        var i = home(key)
        while true {
            let k = members[i].key
            if k == key { return (i, true) }
            if k == Self.empty { return (i, false) }
            i = (i + 1) & mask
        }
    }

    /// How many slots a lookup of `id` examines (for tests: the hash must keep runs short).
    func probes(_ id: ConnectionID) -> Int { (find(id.rawValue).slot - home(id.rawValue)) & mask + 1 }

    subscript(id: ConnectionID) -> Value? {
        get {
            let (slot, found) = find(id.rawValue)
            return found ? members[slot].value : nil
        }
        set {
            guard let newValue else {
                removeValue(forKey: id)
                return
            }
            let (slot, found) = find(id.rawValue)
            if found {
                members[slot].value = newValue
                return
            }
            members[slot] = Member(key: id.rawValue, value: newValue)
            count += 1
            if count * 2 > members.count { grow() }
        }
    }

    /// Removes and returns the value of `id`, if any.
    @discardableResult
    mutating func removeValue(forKey id: ConnectionID) -> Value? {
        let (slot, found) = find(id.rawValue)
        guard found else { return nil }
        let value = members[slot].value
        // Backward-shift deletion: pull later members of the run into the hole when their home allows it, so that
        // every key stays reachable from its home without tombstones.
        var hole = slot
        var i = (slot + 1) & mask
        while members[i].key != Self.empty {
            let h = home(members[i].key)
            // `i` may move into the hole unless its home lies cyclically in (hole, i].
            let homeInRange = hole <= i ? (h > hole && h <= i) : (h > hole || h <= i)
            if !homeInRange {
                members[hole] = members[i]
                hole = i
            }
            i = (i + 1) & mask
        }
        members[hole] = Self.vacant
        count -= 1
        return value
    }

    private mutating func grow() {
        let old = members
        members = Array(repeating: Self.vacant, count: old.count * 2)
        shift -= 1
        for member in old where member.key != Self.empty {
            members[find(member.key).slot] = member
        }
    }

    /// The values, in no particular order.
    var values: [Value] { members.compactMap(\.value) }

    /// Ids and values, in no particular order.
    func makeIterator() -> some IteratorProtocol<(key: ConnectionID, value: Value)> {
        members.lazy.compactMap { member in member.value.map { (key: ConnectionID(rawValue: member.key), value: $0) } }
            .makeIterator()
    }
}
