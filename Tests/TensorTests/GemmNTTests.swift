import Tensor
import TestSupport
import XCTest

/// The packing-free kernel beside its code (Sources/CKernels/GemmNT.c, Tensor/GemmNT.swift):
/// against a float64 product, and its promise that an output's bits depend on k alone.
final class GemmNTTests: XCTestCase {
    /// Random `[shape]` values stored as `dtype`, and the same values widened back to f32 (what
    /// the kernel multiplies).
    private func random(_ shape: [Int], _ dtype: DType, _ rng: inout SplitMix) throws -> (Tensor, [Float]) {
        let t = try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.next() }).converted(to: dtype)
        return (t, t.converted(to: .f32).toArray())
    }

    /// Runs the kernel on rows of x; nil when this CPU lacks it (checked to write nothing).
    private func product(_ x: [Float], rows: Int, _ w: Tensor) -> [Float]? {
        productOrNil(x, outputs: rows * w.shape[0]) { GemmNT.forward($0, rows: rows, weight: w, into: $1) }
    }

    /// Every output within 4e-6 of Σ|x·w| of the float64 product: f32, bf16 and f16 weights; rows
    /// that fill 6-row tiles and rows that do not; outputs that fill 4-row tiles and not; k with and
    /// without a tail of 16, down to 1.
    func testMatchesFloat64Product() throws {
        var rng = SplitMix(11)
        let shapes = [(1, 1, 1), (1, 17, 3), (5, 16, 4), (6, 33, 5), (7, 15, 9), (13, 100, 37), (24, 130, 67),
                      (30, 64, 8), (48, 300, 13), (128, 70, 11)]
        try withThreadCounts { threads in
            for dtype in [DType.f32, .bf16, .f16] {
                for (rows, k, n) in shapes {
                    let (x, _) = try random([rows, k], .f32, &rng), (w, wf) = try random([n, k], dtype, &rng)
                    let xf = x.toArray()
                    guard let y = product(xf, rows: rows, w) else {
                        XCTAssertFalse(GemmNT.available); return
                    }
                    assertMatchesFloat64(y, x: xf, w: wf, rows: rows, k: k, n: n, relative: 4e-6,
                                         "\(dtype) \(rows)×\(k)×\(n) threads \(threads)")
                }
            }
        }
    }

    /// The same bits for a row however many rows share the call, and for any thread split of the
    /// outputs (1, 2 and 3 threads): what makes prefill, batched decode and an expert worker agree.
    func testOutputsDependOnKAlone() throws {
        var rng = SplitMix(12)
        for dtype in [DType.f32, .bf16] {
            let rows = 23, k = 129, n = 45
            let (x, _) = try random([rows, k], .f32, &rng), (w, _) = try random([n, k], dtype, &rng)
            let xf = x.toArray()
            var whole: [[Float]] = []
            withThreadCounts { _ in
                guard let y = product(xf, rows: rows, w) else { return }
                whole.append(y)
            }
            guard let first = whole.first else { XCTAssertFalse(GemmNT.available); continue }
            for y in whole { XCTAssertEqual(y, first, "\(dtype): thread counts disagree") }
            for r in [0, 5, 6, 22] {
                let alone = product(Array(xf[r * k..<(r + 1) * k]), rows: 1, w)!
                XCTAssertEqual(alone, Array(first[r * n..<(r + 1) * n]), "\(dtype) row \(r) alone")
            }
        }
    }

    /// Decode's mat-vec (1–8 rows through `Linear`) runs in this kernel, so a
    /// row gets the same bits whether it is decoded alone, in a batch of up to 8, or in a product of
    /// 9–24 rows here (batched decode, a prefill expert): f32, bf16 and f16, k with and without a
    /// tail, any thread count. The portable Swift tiles (CPUs without AVX-512) stay within 4e-6 of
    /// the float64 product.
    func testDecodeRowsGetTheBitsOfThisKernel() throws {
        var rng = SplitMix(13)
        let before = Linear.matVecUsesAVX512
        defer { Linear.matVecUsesAVX512 = before }
        for dtype in [DType.f32, .bf16, .f16] {
            let k = 133, n = 70, batch = 20
            let (x, _) = try random([batch, k], .f32, &rng), (w, wf) = try random([n, k], dtype, &rng)
            let xf = x.toArray()
            guard let all = product(xf, rows: batch, w) else { XCTAssertFalse(GemmNT.available); return }
            func decoded(_ rows: Int) -> [Float] {
                productOrNil(Array(xf[0..<rows * k]), outputs: rows * n) {
                    Linear.forward($0, rows: rows, weight: w, into: $1); return true
                }!
            }
            withThreadCounts { threads in
                Linear.matVecUsesAVX512 = true
                for rows in 1...8 {
                    XCTAssertEqual(decoded(rows).map(\.bitPattern), all[0..<rows * n].map(\.bitPattern),
                                   "\(dtype), \(rows) rows, \(threads) threads")
                }
                Linear.matVecUsesAVX512 = false
                for rows in [1, 3, 8] {
                    assertMatchesFloat64(decoded(rows), x: xf, w: wf, rows: rows, k: k, n: n, relative: 4e-6,
                                         "portable tiles, \(dtype), \(rows) rows, \(threads) threads")
                }
            }
        }
    }

    /// Which products go here: only where the kernel runs, never q8_0, and only up to the
    /// measured row limits.
    func testTakesOnlyWhatItWasMeasuredFor() {
        XCTAssertFalse(GemmNT.takes(rows: 9, dtype: .q8_0))
        XCTAssertEqual(GemmNT.takes(rows: GemmNT.maxRowsF32, dtype: .f32), GemmNT.available)
        XCTAssertFalse(GemmNT.takes(rows: GemmNT.maxRowsF32 + 1, dtype: .f32))
        XCTAssertEqual(GemmNT.takes(rows: GemmNT.maxRows16, dtype: .bf16), GemmNT.available)
        XCTAssertFalse(GemmNT.takes(rows: GemmNT.maxRows16 + 1, dtype: .f16))
    }
}
