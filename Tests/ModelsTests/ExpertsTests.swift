import Foundation
import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// Splits experts over several `LocalExperts` holding subsets, as the pipeline spreads them over
/// processes; counts the calls so the one-call-per-layer-per-step contract is checked.
final class SplitExperts: ExpertRunner, @unchecked Sendable {
    let parts: [LocalExperts]
    var calls: [Int] = []
    var batchSizes: [[Int]] = []

    init(_ parts: [LocalExperts]) { self.parts = parts }

    func run(layer: Int, batches: [ExpertBatch]) throws -> [Tensor] {
        calls.append(layer)
        batchSizes.append(batches.map { $0.rows.shape[0] })
        return try batches.map { b in
            guard let p = parts.first(where: { $0.holds(layer: layer, expert: b.expert) }) else {
                throw ModelError.expertUnavailable(layer: layer, expert: b.expert)
            }
            return try p.run(layer: layer, batches: [b])[0]
        }
    }
}

final class ExpertsTests: XCTestCase {
    func testRemoteExpertsFromSubsetsEqualLocal() throws {
        for f in [LMFixture.all[2], LMFixture.all[4]] {
            let local = try f.load(.local)
            let remote = try f.load(.remote)
            XCTAssertNil(remote.localExperts)
            let config = try ModelConfig.load(directory: f.directory)
            let e = config.experts
            let moe = (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
            // Worker 1: all layers, first half of the experts; worker 2: the rest, one layer at a time.
            var parts = [try LocalExperts.load(directory: f.directory, experts: Array(0..<(e / 2)))]
            for l in moe { parts.append(try LocalExperts.load(directory: f.directory, layers: [l], experts: Array((e / 2)..<e))) }
            XCTAssertEqual(parts[0].loaded.keys.sorted(), moe)
            XCTAssertFalse(parts[0].holds(layer: moe[0], expert: e - 1))
            let split = SplitExperts(parts)
            let ids = try f.ids
            let want = try local.logits(ids: ids).toArray()
            XCTAssertThrowsError(try remote.logits(ids: ids), "remote model without a runner")
            let got = try remote.logits(ids: ids, experts: split).toArray()
            XCTAssertEqual(got, want, "\(f.name): split experts give bit-identical logits")
            XCTAssertEqual(split.calls, moe, "one runner call per MoE layer per step")
            // Every row goes to exactly k experts.
            for sizes in split.batchSizes { XCTAssertEqual(sizes.reduce(0, +), ids.count * config.expertsPerToken) }
        }
    }

    func testLocalExpertsSubsetAndErrors() throws {
        let f = LMFixture.all[2]
        let sub = try LocalExperts.load(directory: f.directory, layers: [1], experts: [2, 5])
        XCTAssertEqual(sub.loaded, [1: [2, 5]])
        let rows = try Tensor(shape: [3, 64], values: (0..<192).map { sin(Float($0)) })
        XCTAssertThrowsError(try sub.run(layer: 1, batches: [ExpertBatch(expert: 0, rows: rows)])) { e in
            XCTAssertEqual(e as? ModelError, .expertUnavailable(layer: 1, expert: 0))
        }
        XCTAssertThrowsError(try sub.run(layer: 0, batches: [ExpertBatch(expert: 2, rows: rows)]))
        XCTAssertThrowsError(try LocalExperts.load(directory: f.directory, experts: [8]))
        XCTAssertThrowsError(try LocalExperts.load(directory: LMFixture.all[4].directory, layers: [1]), "layer 1 is dense")
        // Expert 5 of layer 1 by hand: down(silu(gate x) · up x).
        let full = try LocalExperts.load(directory: f.directory)
        let out = try sub.run(layer: 1, batches: [ExpertBatch(expert: 5, rows: rows)])[0]
        XCTAssertEqual(out.toArray(), try full.run(layer: 1, batches: [ExpertBatch(expert: 5, rows: rows)])[0].toArray())
        let w = try XCTUnwrap(full.expert(layer: 1, expert: 5))
        let g = try Linear.forward(rows, weight: w.gate).toArray(), u = try Linear.forward(rows, weight: w.up).toArray()
        let act = try Tensor(shape: [3, w.inner], values: zip(g, u).map { $0 / (1 + exp(-$0)) * $1 })
        assertClose(out.toArray(), try Linear.forward(act, weight: w.down).toArray(), 1e-5, "expert by hand")
    }

    /// Several batches with more rows than the mat-vec kernel takes run one expert per pool thread
    /// (OpenBLAS single-threaded meanwhile); each output must equal that expert run on its own.
    func testExpertParallelPrefillEqualsOneExpertAtATime() throws {
        let f = LMFixture.all[2]
        let full = try LocalExperts.load(directory: f.directory)
        let saved = Linear.threads
        Linear.setThreads(2)
        defer { Linear.setThreads(saved) }
        let sizes = [(5, 20), (1, 3), (2, 11), (7, 9)]
        let batches = try sizes.map { e, n in
            ExpertBatch(expert: e, rows: try Tensor(shape: [n, 64], values: (0..<(n * 64)).map { cos(Float($0 * (e + 1))) }))
        }
        let together = try full.run(layer: 1, batches: batches)
        XCTAssertEqual(together.map(\.shape), sizes.map { [$0.1, 64] })
        for (b, out) in zip(batches, together) {
            let alone = try full.run(layer: 1, batches: [b])[0]
            assertClose(out.toArray(), alone.toArray(), 1e-5, "expert \(b.expert) with \(b.rows.shape[0]) rows")
        }
    }

    func testRoutingRule() throws {
        // Top-2 of raw logits, softmax over the two; ties go to the lower index.
        let logits: [Float] = [0.5, 2.0, 1.0, 2.0, -1, 3, 1, 0]
        var idx = [Int](repeating: 0, count: 4), w = [Float](repeating: 0, count: 4)
        Router.route(logits, rows: 2, experts: 4, k: 2, noise: nil, indices: &idx, weights: &w)
        XCTAssertEqual(idx, [1, 3, 1, 2])
        XCTAssertEqual(w[0], 0.5, accuracy: 1e-7)
        XCTAssertEqual(w[2], 1 / (1 + exp(-2)), accuracy: 1e-6)
        XCTAssertEqual(w[2] + w[3], 1, accuracy: 1e-6)
        // Noisy second choice: first is the argmax, second differs, weights renormalised, seeded.
        let many = (0..<(64 * 8)).map { Float(sin(Double($0) * 1.7)) }
        func noisy(seed: UInt64) -> ([Int], [Float]) {
            var rng = Xoshiro256(seed: seed)
            var i = [Int](repeating: 0, count: 128), ww = [Float](repeating: 0, count: 128)
            Router.route(many, rows: 64, experts: 8, k: 2, noise: &rng, indices: &i, weights: &ww)
            return (i, ww)
        }
        let (i1, w1) = noisy(seed: 7), (i2, w2) = noisy(seed: 7), (i3, _) = noisy(seed: 8)
        XCTAssertEqual(i1, i2); XCTAssertEqual(w1, w2)
        XCTAssertNotEqual(i1, i3)
        var secondNotRunnerUp = 0
        for r in 0..<64 {
            let row = Array(many[(r * 8)..<(r * 8 + 8)])
            XCTAssertEqual(i1[2 * r], Sampler.argmax(row, count: 8))
            XCTAssertNotEqual(i1[2 * r + 1], i1[2 * r])
            XCTAssertEqual(w1[2 * r] + w1[2 * r + 1], 1, accuracy: 1e-6)
            if i1[2 * r + 1] != Gather.topK(row, count: 8, k: 2)[1] { secondNotRunnerUp += 1 }
        }
        XCTAssertGreaterThan(secondNotRunnerUp, 0, "the noise changes some second choices")
    }

    func testNoisyRoutingIsOptInAndSeeded() throws {
        let f = LMFixture.all[2]
        let ids = try f.ids
        let plain = try f.load().logits(ids: ids).toArray()
        let n1 = try LanguageModel.load(directory: f.directory, routing: RoutingOptions(noisySecondChoice: true, seed: 3))
        let n2 = try LanguageModel.load(directory: f.directory, routing: RoutingOptions(noisySecondChoice: true, seed: 3))
        let a = try n1.logits(ids: ids).toArray()
        XCTAssertEqual(a, try n2.logits(ids: ids).toArray())
        XCTAssertNotEqual(a, plain)
    }
}
