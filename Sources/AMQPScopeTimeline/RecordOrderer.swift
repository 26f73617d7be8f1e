// Hands ended connections on in connection-id order, holding back at most `capacity` of them: a connection that
// stays open while many later ones end is skipped (and handed on whenever it ends), so memory stays bounded.

package struct RecordOrderer {
    package let capacity: Int
    private var next = 1
    private var waiting: [Int: ConnectionRecord] = [:]
    /// Ids passed over while still open: handed on as soon as they end.
    private var skipped = Set<Int>()

    package init(capacity: Int = 256) { self.capacity = max(1, capacity) }

    package mutating func add(_ record: ConnectionRecord, emit: (ConnectionRecord) -> Void) {
        let id = record.info.id.rawValue
        if skipped.remove(id) != nil {
            emit(record)
            return
        }
        waiting[id] = record
        drain(emit)
        while waiting.count > capacity {
            skipped.insert(next)  // still open: do not wait for it any longer
            next += 1
            drain(emit)
        }
    }

    /// Hands on everything still held, in id order.
    package mutating func finish(emit: (ConnectionRecord) -> Void) {
        for id in waiting.keys.sorted() { emit(waiting[id]!) }
        waiting.removeAll()
        skipped.removeAll()
    }

    /// Hands on the waiting records that are next in order. (Skipped ids are always below `next`.)
    private mutating func drain(_ emit: (ConnectionRecord) -> Void) {
        while let record = waiting.removeValue(forKey: next) {
            emit(record)
            next += 1
        }
    }
}
