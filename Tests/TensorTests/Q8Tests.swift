import Checkpoint
import Foundation
import Tensor
import TestSupport
import XCTest

/// q8_0: the quantiser against ggml's reference (numpy, checked against gguf.quants by
/// scripts/fixtures/quant.py), and the q8_0 kernels (mat-vec, sgemm prefill, gather, views)
/// against the same products over the dequantised weights.
final class Q8Tests: XCTestCase {
    func fixture() throws -> SafeTensorsFile { try Fixtures.tensors("quant/q8_0.safetensors") }

    /// Bit-exact quants and scales (zero block, round-half-away-from-zero ties, large and small rows).
    func testQuantiseMatchesGGML() throws {
        let f = try fixture()
        let want = try f.tensor("w")
        XCTAssertEqual(want.dtype, .q8_0)
        XCTAssertEqual(want.shape, [4, 96])
        let got = try f.tensor("x").converted(to: .q8_0)
        XCTAssertEqual(got.blockCount, 12)
        let (gq, gd) = got.withQ8 { q, d in (Array(UnsafeBufferPointer(start: q, count: 384)), Array(UnsafeBufferPointer(start: d, count: 12))) }
        let (wq, wd) = want.withQ8 { q, d in (Array(UnsafeBufferPointer(start: q, count: 384)), Array(UnsafeBufferPointer(start: d, count: 12))) }
        XCTAssertEqual(gq, wq)
        XCTAssertEqual(gd.map(\.bitPattern), wd.map(\.bitPattern))
        XCTAssertEqual(gq[96 + 1], 3, "2.5 rounds away from zero")
        XCTAssertEqual(gq[96 + 16], -3)
        XCTAssertEqual(want.toArray(), try f.tensor("dequant").toArray())
        XCTAssertEqual(got.converted(to: .f32).toArray(), try f.tensor("dequant").toArray())
    }

    /// A random q8_0 weight `[outF, inF]` and its dequantised f32 copy.
    func weights(_ outF: Int, _ inF: Int, seed: UInt64) throws -> (Tensor, Tensor) {
        var rng = SplitMix(seed)
        let w = try Tensor(shape: [outF, inF], values: (0..<outF * inF).map { _ in rng.next() })
        let q = w.converted(to: .q8_0)
        return (q, q.converted(to: .f32))
    }

    /// Mat-vec (1…8 rows) and sgemm (more) on q8_0 equal the f32 product over the dequantised weights.
    func testLinearOnQ8EqualsDequantisedProduct() throws {
        let (outF, inF) = (37, 160)
        let (q, f) = try weights(outF, inF, seed: 1)
        let bias = try Tensor(shape: [outF], values: (0..<outF).map { Float($0) * 0.01 })
        var rng = SplitMix(9)
        try withThreadCounts { threads in
            for rows in [1, 2, 3, 4, 5, 8, 9, 20] {
                let x = (0..<rows * inF).map { _ in rng.next() }
                var got = [Float](repeating: .nan, count: rows * outF), want = got
                x.withUnsafeBufferPointer { xp in
                    got.withUnsafeMutableBufferPointer { Linear.forward(xp.baseAddress!, rows: rows, weight: q, bias: bias, into: $0.baseAddress!) }
                    want.withUnsafeMutableBufferPointer { Linear.forward(xp.baseAddress!, rows: rows, weight: f, bias: bias, into: $0.baseAddress!) }
                }
                let err = relativeError(got, want)
                XCTAssertLessThanOrEqual(err, 1e-5, "rows \(rows) threads \(threads): relative error \(err)")
            }
        }
    }

    /// Row views, reshapes and copies carry the scales along; gathers dequantise rows.
    func testViewsCopiesAndGather() throws {
        let (q, f) = try weights(6, 64, seed: 2)
        let all = f.toArray()
        XCTAssertEqual(q.rows(2..<5).toArray(), Array(all[128..<320]))
        XCTAssertEqual(q.rows(2..<5).copy().toArray(), Array(all[128..<320]))
        XCTAssertEqual(try q.reshaped([3, 128]).rows(1..<2).toArray(), Array(all[128..<256]))
        XCTAssertThrowsError(try q.reshaped([8, 48]), "rows of 48 would split 32-element blocks")
        var out = [Float](repeating: .nan, count: 128)
        try out.withUnsafeMutableBufferPointer { try Gather.embedding(q, ids: [5, 0], into: $0.baseAddress!) }
        XCTAssertEqual(out, Array(all[320..<384]) + Array(all[0..<64]))
    }

    /// Large enough that the mat-vec splits over threads; checks the chunk edges.
    func testParallelMatVecChunks() throws {
        let (q, f) = try weights(1000, 256, seed: 3)
        var rng = SplitMix(4)
        let x = (0..<256).map { _ in rng.next() }
        try withThreadCounts([1, 2, 4]) { threads in
            let got = try Linear.forward(try Tensor(shape: [1, 256], values: x), weight: q).toArray()
            let want = try Linear.forward(try Tensor(shape: [1, 256], values: x), weight: f).toArray()
            XCTAssertLessThanOrEqual(relativeError(got, want), 1e-5, "threads \(threads)")
        }
    }
}

/// A small deterministic generator of floats in [-1, 1).
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 23) - 1
    }
}
