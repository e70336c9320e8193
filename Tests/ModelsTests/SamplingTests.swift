import Foundation
import XCTest
import Tensor
import TestSupport
@testable import Models

/// The sampler and the generation loop's stopping rules.
final class SamplingTests: XCTestCase {
    func testXoshiroIsTheReferenceSequence() {
        // xoshiro256** seeded by SplitMix64(0): first outputs (computed from the reference C code).
        var r = Xoshiro256(seed: 0)
        let first = (0..<3).map { _ in r.next() }
        var again = Xoshiro256(seed: 0)
        XCTAssertEqual(first, (0..<3).map { _ in again.next() })
        XCTAssertEqual(first[0], 0x99EC5F36CB75F2B4)
        var other = Xoshiro256(seed: 1)
        XCTAssertNotEqual(first[0], other.next())
    }

    func testGreedyAndDegenerateCutsPickTheArgmax() {
        let logits: [Float] = [0.1, 3, -2, 3, 2.9]
        XCTAssertEqual(Sampler(SamplingParameters()).sample(logits, count: 5), 1)
        for seed in 0..<20 as Range<UInt64> {
            XCTAssertEqual(Sampler(SamplingParameters(temperature: 1, topK: 1, seed: seed)).sample([0, 5, 1, 2], count: 4), 1)
            XCTAssertEqual(Sampler(SamplingParameters(temperature: 1, topP: 1e-6, seed: seed)).sample([0, 5, 1, 2], count: 4), 1)
        }
    }

    func testSamplingFollowsTheDistribution() {
        let logits: [Float] = [1, 2, 0, 3]
        let s = Sampler(SamplingParameters(temperature: 1, seed: 42))
        var counts = [0, 0, 0, 0]
        let n = 40000
        for _ in 0..<n { counts[s.sample(logits, count: 4)] += 1 }
        let z = logits.map { exp(Double($0)) }.reduce(0, +)
        for i in 0..<4 {
            XCTAssertEqual(Double(counts[i]) / Double(n), exp(Double(logits[i])) / z, accuracy: 0.01)
        }
        // Top-k 2 keeps ids 3 and 1 only; top-p 0.7 keeps {3, 1} (0.64 < 0.7 ≤ 0.88).
        let k2 = Sampler(SamplingParameters(temperature: 1, topK: 2, seed: 1))
        let p7 = Sampler(SamplingParameters(temperature: 1, topP: 0.7, seed: 1))
        var seenK = Set<Int>(), seenP = Set<Int>()
        for _ in 0..<2000 { seenK.insert(k2.sample(logits, count: 4)); seenP.insert(p7.sample(logits, count: 4)) }
        XCTAssertEqual(seenK, [1, 3])
        XCTAssertEqual(seenP, [1, 3])
        // Same seed, same draws.
        let a = Sampler(SamplingParameters(temperature: 0.8, topP: 0.9, seed: 5)), b = Sampler(SamplingParameters(temperature: 0.8, topP: 0.9, seed: 5))
        XCTAssertEqual((0..<50).map { _ in a.sample(logits, count: 4) }, (0..<50).map { _ in b.sample(logits, count: 4) })
    }

    func testGenerationStopsAtEOSAndMaxTokens() throws {
        let f = LMFixture.all[0]
        let model = try f.load()
        let greedy = try f.greedy
        let stopAt = greedy[4]
        let firstStop = try XCTUnwrap(greedy.firstIndex(of: stopAt))
        let gen = try TokenGenerator(model: model, promptIds: f.promptIds,
                                     parameters: GenerationParameters(maxNewTokens: 32, eosTokenIds: [stopAt]))
        XCTAssertEqual(try gen.run(), Array(greedy[...firstStop]), "stops after emitting EOS")
        XCTAssertNil(try gen.next())
        let short = try TokenGenerator(model: model, promptIds: f.promptIds, parameters: GenerationParameters(maxNewTokens: 3))
        XCTAssertEqual(try short.run(), Array(greedy[..<3]))
        XCTAssertEqual(short.cache.count, try f.promptIds.count + 2)
        // Seeded sampling is reproducible end to end.
        let p = GenerationParameters(maxNewTokens: 12, sampling: SamplingParameters(temperature: 0.9, topK: 50, topP: 0.95, seed: 9))
        XCTAssertEqual(try TokenGenerator(model: model, promptIds: f.promptIds, parameters: p).run(),
                       try TokenGenerator(model: model, promptIds: f.promptIds, parameters: p).run())
        XCTAssertThrowsError(try TokenGenerator(model: model, promptIds: [], parameters: p))
    }
}
