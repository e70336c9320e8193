import CKernels
import Tensor
import TestSupport
import XCTest

/// The rows-in-lanes kernel beside its code (Sources/CKernels/GemmRowLanes.c, Tensor/GemmRowLanes.swift):
/// against a float64 product, its promise that an output's bits depend on k alone, and what it declines.
final class GemmRowLanesTests: XCTestCase {
    private func random(_ count: Int, _ rng: inout SplitMix) -> [Float] { (0..<count).map { _ in rng.next() } }

    /// Every y[r, o] is exactly Σ_i x[r, i] · w[o, i] as FMAs in k order (w as f32 rows).
    private func assertFMAsInKOrder(_ y: [Float], x: [Float], w: [Float], rows: Int, k: Int, n: Int, _ label: String,
                                    line: UInt = #line) {
        for r in 0..<rows {
            for o in 0..<n {
                var sum: Float = 0
                for i in 0..<k { sum = sum.addingProduct(x[r * k + i], w[o * k + i]) }
                XCTAssertEqual(y[r * n + o], sum, "\(label) [\(r), \(o)] of \(rows)×\(k)×\(n): FMAs in k order", line: line)
            }
        }
    }

    /// Runs the kernel; nil when it declined (checked to have written nothing).
    private func product(_ x: [Float], rows: Int, _ w: Tensor) -> [Float]? {
        productOrNil(x, outputs: rows * w.shape[0]) { GemmRowLanes.forward($0, rows: rows, weight: w, into: $1) }
    }

    /// Every output within 4e-6 of Σ|x·w| of the float64 product: 1, 2, 3 and 4 lane vectors, full
    /// and partial (AVX2: 1 to 8, in one or two 32-row chunks); weight tiles full and partial (24,
    /// 12, 8 and 6 rows with AVX-512, 7, 5 and 3 with AVX2); k with and without a tail of 16, down
    /// to 1, and past the AVX2 path's k block (256–2048 steps); one to three threads.
    func testMatchesFloat64Product() throws {
        var rng = SplitMix(21)
        let shapes = [(1, 1, 1), (13, 17, 5), (16, 16, 25), (17, 300, 13), (25, 64, 49), (32, 33, 12),
                      (9, 2100, 37), (24, 700, 11), (40, 300, 40), (33, 130, 9), (48, 15, 100), (49, 40, 7), (64, 257, 30)]
        try withThreadCounts { threads in
            for (rows, k, n) in shapes {
                let xf = random(rows * k, &rng), wf = random(n * k, &rng)
                let w = try Tensor(shape: [n, k], values: wf)
                guard let y = product(xf, rows: rows, w) else {
                    XCTAssertGreaterThan(rows, GemmRowLanes.maxRows, "\(rows) rows declined")
                    continue
                }
                assertMatchesFloat64(y, x: xf, w: wf, rows: rows, k: k, n: n, relative: 4e-6,
                                     "\(rows)×\(k)×\(n) threads \(threads)")
            }
        }
    }

    /// The same bits for a row however many rows share the call (1 to 64, so every lane vector
    /// count and tile height) and for any thread split: what keeps an expert's output the same in
    /// prefill, in a batched step and on an expert worker. Those bits are FMAs in k order, one
    /// output at a time, on either path (k = 700 spans several of AVX2's k blocks).
    func testOutputsDependOnKAlone() throws {
        var rng = SplitMix(22)
        for (k, n) in [(131, 53), (700, 9)] {
            let most = max(1, GemmRowLanes.maxRows)
            let xf = random(most * k, &rng), wf = random(n * k, &rng)
            let w = try Tensor(shape: [n, k], values: wf)
            var whole: [[Float]] = []
            withThreadCounts { _ in if let y = product(xf, rows: most, w) { whole.append(y) } }
            guard let first = whole.first else { XCTAssertFalse(GemmRowLanes.available); return }
            for y in whole { XCTAssertEqual(y, first, "thread counts disagree") }
            for rows in [1, 16, 17, 33, 49] where rows <= most {
                let part = product(Array(xf[0..<(rows * k)]), rows: rows, w)!
                XCTAssertEqual(part, Array(first[0..<(rows * n)]), "the first \(rows) rows alone")
            }
            assertFMAsInKOrder(first, x: xf, w: wf, rows: most, k: k, n: n, "f32")
        }
    }

    /// bf16 and f16 weights on the AVX2 path: each output is the FMAs in k order over the weights
    /// widened exactly (the f32 path's bits on the widened matrix), across k blocks of 16-bit rows
    /// (448 steps), any row count 9–64 and 1–3 threads; `Linear` sends them here.
    func testSixteenBitWeightsAreTheWidenedProduct() throws {
        guard GemmRowLanes.reads16Bit else { return }
        var rng = SplitMix(25)
        for dtype in [DType.bf16, .f16] {
            for (rows, k, n) in [(9, 1000, 37), (32, 130, 75), (47, 33, 8)] {
                let xf = random(rows * k, &rng)
                let w = try Tensor(shape: [n, k], values: random(n * k, &rng)).converted(to: dtype)
                let wf = w.converted(to: .f32).toArray()
                var results: [[Float]] = []
                withThreadCounts { _ in if let y = product(xf, rows: rows, w) { results.append(y) } }
                guard let first = results.first else { return XCTFail("\(dtype) declined") }
                for y in results { XCTAssertEqual(y, first, "\(dtype): thread counts disagree") }
                let viaLinear = productOrNil(xf, outputs: rows * n) { Linear.forward($0, rows: rows, weight: w, into: $1); return true }!
                XCTAssertEqual(viaLinear, first, "\(dtype) \(rows) rows through Linear")
                assertFMAsInKOrder(first, x: xf, w: wf, rows: rows, k: k, n: n, "\(dtype)")
            }
        }
    }

    /// `Linear` routes f32 products of `minRows...maxRows` rows here: its output has this kernel's
    /// bits, and one row more goes elsewhere. (k is past sgemm's k block, ~300 here, so sgemm sums
    /// differently; within one block it sums each element in k order too, the same bits.)
    func testLinearSendsItsRangeHere() throws {
        guard GemmRowLanes.available else { return }
        var rng = SplitMix(24)
        let k = 1000, n = 40
        let w = try Tensor(shape: [n, k], values: random(n * k, &rng))
        let most = GemmRowLanes.maxRows
        for rows in [GemmRowLanes.minRows, (GemmRowLanes.minRows + most) / 2, most, most + 1] {
            let xf = random(rows * k, &rng)
            let viaLinear = productOrNil(xf, outputs: rows * n) { Linear.forward($0, rows: rows, weight: w, into: $1); return true }!
            if rows <= GemmRowLanes.maxRows {
                XCTAssertEqual(viaLinear, product(xf, rows: rows, w), "\(rows) rows")
            } else {
                // The kernel itself on the first `most` rows: Linear's product of one row more differs somewhere.
                let kernel = productOrNil(xf, outputs: most * n) { x, y in
                    let xt = UnsafeMutablePointer<Float>.allocate(capacity: unimoe_gemm_row_lanes_packed_count(most, k))
                    defer { xt.deallocate() }
                    unimoe_gemm_row_lanes_pack(x, most, k, k, xt)
                    return unimoe_gemm_row_lanes(xt, most, w.raw, Int32(UNIMOE_GEMM_F32), k, 0, n, y, n) != 0
                }!
                XCTAssertNotEqual(Array(viaLinear[0..<(most * n)]), kernel, "\(rows) rows went to the kernel")
            }
        }
    }

    /// More than 64 rows, 16-bit weights and 1-D weights are declined without a write; `Linear`
    /// sends it only the f32 products in its measured range.
    func testDeclinesWhatItDoesNotTake() throws {
        var rng = SplitMix(23)
        let w = try Tensor(shape: [8, 16], values: random(128, &rng))
        let most = GemmRowLanes.maxRows
        XCTAssertEqual(most, GemmRowLanes.available ? 64 : 0)
        XCTAssertNil(product(random((most + 1) * 16, &rng), rows: most + 1, w))
        let bf16 = product(random(32 * 16, &rng), rows: 32, w.converted(to: .bf16))
        XCTAssertEqual(bf16 != nil, GemmRowLanes.reads16Bit, "16-bit weights only on the AVX2 path")
        XCTAssertEqual(GemmRowLanes.reads16Bit, GemmRowLanes.available && !GemmNT.available)
        XCTAssertNil(product(random(32 * 16, &rng), rows: 32, w.converted(to: .q8_0)))
        XCTAssertNil(product(random(32 * 16, &rng), rows: 32, try Tensor(shape: [128], values: random(128, &rng))))
        XCTAssertEqual(unimoe_gemm_row_lanes(nil, most + 1, nil, Int32(UNIMOE_GEMM_F32), 16, 0, 8, nil, 8), 0)
        XCTAssertEqual(unimoe_gemm_row_lanes(nil, 16, nil, 7, 16, 0, 8, nil, 8), 0, "an unknown dtype code")
        // Below it: GemmNT's rows where it runs, else the mat-vec's.
        XCTAssertEqual(GemmRowLanes.minRows, (GemmNT.available ? GemmNT.maxRowsF32 : 8) + 1)
        XCTAssertFalse(GemmRowLanes.takes(rows: GemmRowLanes.minRows - 1, dtype: .f32))
        XCTAssertEqual(GemmRowLanes.takes(rows: GemmRowLanes.minRows, dtype: .f32), GemmRowLanes.available)
        XCTAssertEqual(GemmRowLanes.takes(rows: most, dtype: .f32), GemmRowLanes.available)
        XCTAssertFalse(GemmRowLanes.takes(rows: most + 1, dtype: .f32))
        XCTAssertEqual(GemmRowLanes.takes(rows: 32, dtype: .bf16), GemmRowLanes.reads16Bit)
        XCTAssertEqual(GemmRowLanes.takes(rows: 32, dtype: .f16), GemmRowLanes.reads16Bit)
        XCTAssertFalse(GemmRowLanes.takes(rows: 32, dtype: .q8_0))
    }
}
