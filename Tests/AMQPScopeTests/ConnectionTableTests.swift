// The table of values by connection id that both stages look up on every packet, against Dictionary.
import Testing

@testable import AMQPScopeReassembly
@testable import AMQPScopeTimeline

@Suite("Connection table") struct ConnectionTableTests {
    /// Random inserts, replacements, lookups and removals (of present and absent ids), as connections open and end:
    /// the table must agree with a Dictionary after every step, through growth and backward-shift deletion.
    @Test func agreesWithADictionary() {
        var rng = SeededGenerator(seed: 11)
        var table = ConnectionTable<Int>()
        var oracle: [ConnectionID: Int] = [:]
        var nextID = 1
        for step in 0..<60_000 {
            let id: ConnectionID
            if oracle.isEmpty || Int.random(in: 0..<3, using: &rng) == 0 {
                id = ConnectionID(rawValue: nextID)
                nextID += Int.random(in: 1...3, using: &rng)
            } else {
                id = ConnectionID(rawValue: Int.random(in: 1..<nextID, using: &rng))
            }
            switch Int.random(in: 0..<4, using: &rng) {
            case 0, 1:
                table[id] = step
                oracle[id] = step
            case 2:
                #expect(table.removeValue(forKey: id) == oracle.removeValue(forKey: id))
            default:
                #expect(table[id] == oracle[id])
            }
            #expect(table.count == oracle.count)
        }
        for (id, value) in oracle { #expect(table[id] == value) }
        #expect(table.map(\.key).sorted() == oracle.keys.sorted())
        #expect(table.values.sorted() == oracle.values.sorted())
    }

    /// Ids that would share a slot under a modulo hash (every 1024th connection still open), and a plain run of ids:
    /// a lookup, of a present id or of an absent one, examines only a few slots.
    @Test func lookupsStayShort() {
        for step in [1, 1024] {
            var table = ConnectionTable<Int>()
            for k in 1...4096 { table[ConnectionID(rawValue: k * step)] = k }
            var longest = 0
            for k in 1...4096 {
                #expect(table[ConnectionID(rawValue: k * step)] == k)
                longest = max(longest, table.probes(ConnectionID(rawValue: k * step)))
                longest = max(longest, table.probes(ConnectionID(rawValue: 4096 * step + k)))
            }
            #expect(longest <= 24, "step \(step): \(longest) slots examined")
            for k in stride(from: 1, through: 4096, by: 2) {
                table.removeValue(forKey: ConnectionID(rawValue: k * step))
            }
            #expect(table.count == 2048)
            for k in 1...4096 { #expect(table[ConnectionID(rawValue: k * step)] == (k % 2 == 0 ? k : nil)) }
        }
    }
}
