import AMQPScopeFuzzing
// Every seed of the fuzz corpus and every input a fuzzer ever crashed on, replayed through the same bodies the
// fuzzers run (AMQPScopeFuzzing), without libFuzzer: a regression fails the ordinary test suite.
import Foundation
import Testing

@Suite("Fuzz inputs replayed") struct FuzzRegressionTests {
    static func inputs(_ folder: String) -> [String] {
        var out: [String] = []
        for target in FuzzEntry.targets {
            let dir = Paths.root.appendingPathComponent("Fuzz/\(folder)/\(target)")
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            out += names.sorted().map { "\(target)/\($0)" }
        }
        return out
    }

    @Test func corpusIsThere() {
        let seeds = Self.inputs("corpus")
        for target in FuzzEntry.targets {
            #expect(seeds.contains { $0.hasPrefix(target + "/") }, "no seeds for \(target)")
        }
    }

    @Test(arguments: inputs("regressions") + inputs("corpus").filter { !$0.hasPrefix("FuzzPacketLayers") })
    func replay(input: String) throws {
        let folder = Self.inputs("regressions").contains(input) ? "regressions" : "corpus"
        let data = try Data(contentsOf: Paths.root.appendingPathComponent("Fuzz/\(folder)/\(input)"))
        let target = String(input.split(separator: "/")[0])
        data.withUnsafeBytes { FuzzEntry.run(target, $0) }
    }

    @Test func packetLayerSeeds() throws {
        for input in Self.inputs("corpus") where input.hasPrefix("FuzzPacketLayers") {
            let data = try Data(contentsOf: Paths.root.appendingPathComponent("Fuzz/corpus/\(input)"))
            data.withUnsafeBytes { FuzzEntry.packetLayers($0) }
        }
    }
}
