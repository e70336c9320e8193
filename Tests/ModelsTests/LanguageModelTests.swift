import Foundation
import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// The trunk against transformers: every fixture's logits and greedy tokens, the KV cache against
/// full recomputation, and a batched multi-sequence step against separate runs.
final class LanguageModelTests: XCTestCase {
    func testLogitsMatchTransformers() throws {
        for f in LMFixture.all {
            let model = try f.load()
            let got = try model.logits(ids: f.ids)
            XCTAssertEqual(got.shape, [try f.ids.count, model.vocab], f.name)
            assertClose(got.toArray(), try f.logits, f.tolerance, "\(f.name) logits")
        }
    }

    func testGreedyTokensMatchTransformers() throws {
        for f in LMFixture.all {
            let model = try f.load()
            let gen = try TokenGenerator(model: model, promptIds: f.promptIds, parameters: GenerationParameters(maxNewTokens: 32))
            XCTAssertEqual(try gen.run(), try f.greedy, f.name)
        }
    }

    func testArchitecturesFromRegistry() throws {
        XCTAssertEqual(try LMFixture.all[2].load().architecture.moeModule, "block_sparse_moe")
        let uni = try LMFixture.all[4].load()
        XCTAssertEqual(uni.architecture.modelType, "unimoe")
        XCTAssertEqual(uni.layers.map { $0.sparse != nil }, [true, false, true, false])
        XCTAssertEqual(uni.localExperts?.loaded, [0: [0, 1, 2, 3], 2: [0, 1, 2, 3]])
        XCTAssertThrowsError(try Architecture.named("gpt2"))
        // bf16 weights are used as stored, not converted at load.
        let bf = try LMFixture.all[3].load()
        XCTAssertEqual(bf.lmHead.dtype, .bf16)
        XCTAssertEqual(bf.localExperts?.expert(layer: 1, expert: 7)?.down.dtype, .bf16)
        XCTAssertEqual(try LMFixture.all[1].load().lmHead.raw, try LMFixture.all[1].load().embedTokens.raw)
    }

    /// Prefill a prefix, then feed one token at a time: each step's logits equal the full pass's row.
    func testKVCacheDecodeEqualsFullRecompute() throws {
        for f in [LMFixture.all[0], LMFixture.all[4]] {
            let model = try f.load()
            let ids = try f.ids
            let full = try model.logits(ids: ids).toArray()
            let cache = model.makeCache()
            let prefix = 5
            var rows = try model.forward([SequenceStep(cache: cache, embeddings: model.embed(ids: Array(ids[..<prefix])))],
                                         allPositions: true)[0].toArray()
            for t in prefix..<ids.count {
                let step = try model.forward([SequenceStep(cache: cache, embeddings: model.embed(ids: [ids[t]]))],
                                             allPositions: false)[0]
                XCTAssertEqual(step.shape, [1, model.vocab])
                rows += step.toArray()
            }
            XCTAssertEqual(cache.count, ids.count)
            assertClose(rows, full, 1e-5, "\(f.name) cached decode vs full")
        }
    }

    /// Three sequences at different stages (two prefills of different lengths and a decode step)
    /// in one call give what three separate calls give.
    func testBatchedStepEqualsSeparateRuns() throws {
        let f = LMFixture.all[2]   // mixtral: routing groups rows from several sequences
        let model = try f.load()
        let ids = try f.ids
        let a = Array(ids[0..<7]), b = Array(ids[3..<12]), c0 = Array(ids[8..<14]), c1 = [ids[15]]
        // Separate runs.
        let sepA = try model.logits(ids: a).toArray()
        let sepB = try model.logits(ids: b).toArray()
        let cacheC = model.makeCache()
        _ = try model.forward([SequenceStep(cache: cacheC, embeddings: model.embed(ids: c0))], allPositions: true)
        let sepC = try model.forward([SequenceStep(cache: cacheC, embeddings: model.embed(ids: c1))], allPositions: true)[0].toArray()
        // Batched: C's prefix first alone, then A, B and C's next token together.
        let ca = model.makeCache(), cb = model.makeCache(), cc = model.makeCache()
        _ = try model.forward([SequenceStep(cache: cc, embeddings: model.embed(ids: c0))], allPositions: false)
        let out = try model.forward([SequenceStep(cache: ca, embeddings: model.embed(ids: a)),
                                     SequenceStep(cache: cb, embeddings: model.embed(ids: b)),
                                     SequenceStep(cache: cc, embeddings: model.embed(ids: c1))], allPositions: true)
        XCTAssertEqual(out.map(\.shape), [[7, model.vocab], [9, model.vocab], [1, model.vocab]])
        assertClose(out[0].toArray(), sepA, 1e-5, "sequence A")
        assertClose(out[1].toArray(), sepB, 1e-5, "sequence B")
        assertClose(out[2].toArray(), sepC, 1e-5, "sequence C")
        XCTAssertEqual([ca.count, cb.count, cc.count], [7, 9, 7])
        // Last-position logits of a batched step are the last rows.
        let la = model.makeCache(), lb = model.makeCache()
        let last = try model.forward([SequenceStep(cache: la, embeddings: model.embed(ids: a)),
                                      SequenceStep(cache: lb, embeddings: model.embed(ids: b))], allPositions: false)
        assertClose(last[0].toArray(), Array(sepA[(6 * model.vocab)...]), 1e-5, "last row A")
        assertClose(last[1].toArray(), Array(sepB[(8 * model.vocab)...]), 1e-5, "last row B")
    }

    func testInputEmbeddingsAreAccepted() throws {
        // A coordinator stitches embeddings; bf16 embeddings of the same values give the same logits.
        let f = LMFixture.all[0]
        let model = try f.load()
        let ids = try f.ids
        let e = try model.embed(ids: ids)
        XCTAssertEqual(e.shape, [ids.count, model.hidden])
        let viaEmbeddings = try model.forward([SequenceStep(cache: model.makeCache(), embeddings: e)], allPositions: true)[0]
        XCTAssertEqual(viaEmbeddings.toArray(), try model.logits(ids: ids).toArray())
        XCTAssertThrowsError(try model.embed(ids: [model.vocab]))
        XCTAssertThrowsError(try model.forward([SequenceStep(cache: model.makeCache(), embeddings: Tensor(zeros: [2, 3]))], allPositions: true))
        let shared = model.makeCache()
        XCTAssertThrowsError(try model.forward([SequenceStep(cache: shared, embeddings: e), SequenceStep(cache: shared, embeddings: e)],
                                               allPositions: true))
    }

    /// `forward(…, into:)` writes what `forward` returns into the caller's tensor (more rows than
    /// needed are left alone), and a logits tensor of the wrong dtype, width or too few rows is a
    /// typed error that leaves the caches untouched.
    func testForwardIntoCallerLogits() throws {
        let f = LMFixture.all[2]
        let model = try f.load()
        let ids = try f.ids
        let a = Array(ids[0..<5]), b = Array(ids[5..<8])
        let want = try model.forward([SequenceStep(cache: model.makeCache(), embeddings: model.embed(ids: a)),
                                      SequenceStep(cache: model.makeCache(), embeddings: model.embed(ids: b))], allPositions: true)
        let logits = try Tensor(shape: [9, model.vocab], values: [Float](repeating: -7, count: 9 * model.vocab))
        let ca = model.makeCache(), cb = model.makeCache()
        let items = [SequenceStep(cache: ca, embeddings: try model.embed(ids: a)), SequenceStep(cache: cb, embeddings: try model.embed(ids: b))]
        for bad in [Tensor(zeros: [7, model.vocab]), Tensor(zeros: [8, model.vocab + 1]), Tensor(zeros: [8, model.vocab], dtype: .bf16)] {
            XCTAssertThrowsError(try model.forward(items, allPositions: true, into: bad)) { error in
                guard case ModelError.invalidInput(let m) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(m.contains("logits"), m)
            }
        }
        XCTAssertEqual([ca.count, cb.count], [0, 0])
        try model.forward(items, allPositions: true, into: logits)
        XCTAssertEqual(Array(logits.toArray()[..<(8 * model.vocab)]), want.flatMap { $0.toArray() })
        XCTAssertEqual(Array(logits.toArray()[(8 * model.vocab)...]), [Float](repeating: -7, count: model.vocab))
        XCTAssertEqual([ca.count, cb.count], [5, 3])
    }
}
