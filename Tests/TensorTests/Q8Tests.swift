import CKernels
import Checkpoint
import Foundation
import Tensor
import TestSupport
import XCTest

/// q8_0: the quantiser against ggml's reference (numpy, checked against gguf.quants by
/// scripts/fixtures/quant.py, and the element-wise statement below), and the q8_0 kernels (int8
/// mat-vec, sgemm prefill, gather, views) against f32 products of the dequantised weights and
/// q8_0-read activations.
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

    /// ggml's `quantize_row_q8_0_ref`, one element at a time: the statement the vector quantiser
    /// (Sources/CKernels) must equal bit for bit.
    func referenceQuantize(_ x: [Float]) -> ([Int8], [UInt16]) {
        var q = [Int8](), d = [UInt16]()
        for b in stride(from: 0, to: x.count, by: 32) {
            let xb = x[b..<b + 32]
            let amax = xb.reduce(Float(0)) { max($0, abs($1)) }
            let scale = amax / 127, inv: Float = scale != 0 ? 1 / scale : 0
            d.append(Float16(scale).bitPattern)
            q += xb.map { Int8(max(-127, min(127, ($0 * inv).rounded()))) }
        }
        return (q, d)
    }

    /// The vector quantiser on random blocks of every magnitude, exact .5 ties and all-zero blocks.
    func testVectorQuantiserEqualsReference() {
        var rng = SplitMix(11)
        var x = [Float]()
        for b in 0..<400 {
            let scale = Float(b % 7 == 0 ? 1e-3 : b % 5 == 0 ? 1e4 : 1)
            x += (0..<32).map { _ in rng.next() * scale }
        }
        for j in 0..<32 { x[j] = 0 }                                  // all zero
        for j in 32..<64 { x[j] = Float(j - 48) + 0.5 }                // amax 15.5: d = 15.5/127, many near-ties
        x[64] = 127; for j in 65..<96 { x[j] = j % 2 == 0 ? 2.5 : -0.5 }   // d = 1: exact ties
        var q = [Int8](repeating: 0, count: x.count), d = [Float16](repeating: 0, count: x.count / 32)
        x.withUnsafeBufferPointer { xp in
            q.withUnsafeMutableBufferPointer { qp in
                d.withUnsafeMutableBufferPointer { Q8.quantize(xp.baseAddress!, blocks: x.count / 32, quants: qp.baseAddress!, scales: $0.baseAddress!) }
            }
        }
        let (wq, wd) = referenceQuantize(x)
        XCTAssertEqual(q, wq)
        XCTAssertEqual(d.map(\.bitPattern), wd)
        XCTAssertEqual(q[65], -1, "-0.5 rounds away from zero")
        XCTAssertEqual(q[66], 3, "2.5 rounds away from zero")
    }

    /// Mat-vec (1…8 rows) and sgemm (more) on q8_0 equal the f32 product of the dequantised weights
    /// and the activation read back through q8_0 (`Q8.roundTrip`): the int8 dot is exact per block,
    /// so only the f32 summation order differs.
    func testLinearOnQ8EqualsDequantisedProduct() throws {
        let (outF, inF) = (37, 160)
        let (q, f) = try weights(outF, inF, seed: 1)
        let bias = try Tensor(shape: [outF], values: (0..<outF).map { Float($0) * 0.01 })
        var rng = SplitMix(9)
        withThreadCounts { threads in
            for rows in [1, 2, 3, 4, 5, 8, 9, 20] {
                let x = (0..<rows * inF).map { _ in rng.next() }
                var got = [Float](repeating: .nan, count: rows * outF), want = got
                var xr = x
                xr.withUnsafeMutableBufferPointer { Q8.roundTrip($0.baseAddress!, blocks: rows * inF / 32, into: $0.baseAddress!) }
                x.withUnsafeBufferPointer { xp in
                    got.withUnsafeMutableBufferPointer { Linear.forward(xp.baseAddress!, rows: rows, weight: q, bias: bias, into: $0.baseAddress!) }
                }
                xr.withUnsafeBufferPointer { xp in
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
            var xr = x
            xr.withUnsafeMutableBufferPointer { Q8.roundTrip($0.baseAddress!, blocks: 8, into: $0.baseAddress!) }
            let got = try Linear.forward(try Tensor(shape: [1, 256], values: x), weight: q).toArray()
            let want = try Linear.forward(try Tensor(shape: [1, 256], values: xr), weight: f).toArray()
            XCTAssertLessThanOrEqual(relativeError(got, want), 1e-5, "threads \(threads)")
        }
    }
    /// The AVX-512 VNNI path of the int8 dot (two blocks per `vpdpbusd`) gives the AVX2 path's bits:
    /// 1–7 activation rows (whole and partial groups of 4), block counts below, at and past the
    /// 8-block scale groups (the tail), a partial output range.
    func testVNNIPathEqualsAVX2Bits() {
        if unimoe_q8_vnni() == 0 { print("Q8Tests: this CPU has no AVX-512 VNNI; both calls take the AVX2 path") }
        var rng = SplitMix(21)
        for blocks in [1, 7, 8, 9, 33, 88] {
            for rows in [1, 2, 3, 4, 5, 7] {
                let k = 32 * blocks, outF = 13
                let w = (0..<outF * k).map { _ in rng.next() }, x = (0..<rows * k).map { _ in rng.next() }
                var wq = [Int8](repeating: 0, count: outF * k), wd = [UInt16](repeating: 0, count: outF * blocks)
                var xq = [Int8](repeating: 0, count: rows * k), xd = [UInt16](repeating: 0, count: rows * blocks)
                unimoe_q8_quantize(w, outF * blocks, &wq, &wd)
                unimoe_q8_quantize(x, rows * blocks, &xq, &xd)
                var viaVNNI = [Float](repeating: .nan, count: rows * outF), viaAVX2 = viaVNNI
                unimoe_q8_dot_using(wq, wd, blocks, 2, 11, xq, xd, rows, &viaVNNI, outF, 1)
                unimoe_q8_dot_using(wq, wd, blocks, 2, 11, xq, xd, rows, &viaAVX2, outF, 0)
                XCTAssertEqual(viaVNNI.map(\.bitPattern), viaAVX2.map(\.bitPattern), "\(blocks) blocks, \(rows) rows")
                XCTAssertFalse(viaVNNI[rows * outF - 3].isNaN, "the range's last output was not written")
            }
        }
    }
}
