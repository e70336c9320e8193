import Tensor
import TestSupport
import XCTest

final class LinearTests: XCTestCase {
    /// x·Wᵀ (+b) for f32, bf16 and f16 weights, rows on both sides of the mat-vec/sgemm switch,
    /// odd sizes; against torch computing with the same stored weights widened to f32.
    func testLinearMatchesTorch() throws {
        let fx = try KernelFixture("linear")
        try withThreadCounts { threads in
            for c in fx.cases {
                let name = try c.string("name")
                let rows = try c.int("rows"), outF = try c.int("out")
                let x = try fx.floats("\(name)/x"), w = try fx.tensor("\(name)/w")
                XCTAssertEqual(w.dtype.rawValue.lowercased(), try c.string("dtype"))
                let b = try c.bool("bias") ? try fx.tensor("\(name)/b") : nil
                let want = try fx.floats("\(name)/y")
                var y = [Float](repeating: .nan, count: rows * outF)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { Linear.forward(xp.baseAddress!, rows: rows, weight: w, bias: b, into: $0.baseAddress!) }
                }
                let err = relativeError(y, want)
                XCTAssertLessThanOrEqual(err, kernelTolerance, "\(name) threads \(threads): relative error \(err)")
            }
        }
    }

    /// The Tensor form reshapes leading dimensions and checks shapes.
    func testTensorFormAndShapeErrors() throws {
        let fx = try KernelFixture("linear")
        let x = try fx.tensor("bf16_3x64x130/x"), w = try fx.tensor("bf16_3x64x130/w")
        let y = try Linear.forward(try x.reshaped([1, 3, 64]), weight: w)
        XCTAssertEqual(y.shape, [1, 3, 130])
        XCTAssertLessThanOrEqual(relativeError(y.toArray(), try fx.floats("bf16_3x64x130/y")), kernelTolerance)
        XCTAssertThrowsError(try Linear.forward(x, weight: try fx.tensor("f32_1x33x7/w")))
    }

    /// `forwardAll` (one pool job for several products) gives each product exactly what
    /// `forward` gives it alone: every dtype, biases, 1…8 rows, a shared activation (the bf16
    /// re-layout done once), a mixed-dtype group and q8_0 (run one by one), and a group with an
    /// sgemm-sized product (all one by one).
    func testForwardAllEqualsOneProductAtATime() throws {
        var rng = SplitMix(7)
        func random(_ shape: [Int], _ dtype: DType) throws -> Tensor {
            try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.next() }).converted(to: dtype)
        }
        // (out, in, rows, dtype, bias, shares the previous product's activation)
        let groups: [[(Int, Int, Int, DType, Bool, Bool)]] = [
            [(520, 96, 1, .bf16, false, false), (520, 96, 1, .bf16, false, true), (37, 96, 1, .bf16, true, true)],
            [(300, 130, 3, .f32, true, false), (64, 130, 3, .f32, false, true), (130, 64, 2, .f32, false, false)],
            [(100, 64, 8, .f16, true, false), (100, 64, 5, .f16, false, false)],
            [(96, 64, 2, .bf16, false, false), (96, 64, 2, .f32, true, true), (96, 64, 2, .q8_0, false, true)],
            [(128, 64, 1, .q8_0, true, false), (64, 128, 4, .q8_0, false, false)],
            [(96, 64, 4, .bf16, false, false), (96, 64, 20, .bf16, true, false)],
        ]
        try withThreadCounts { threads in
            for (g, group) in groups.enumerated() {
                var xs: [[Float]] = [], ws: [Tensor] = [], bs: [Tensor?] = []
                for (outF, inF, rows, dtype, bias, shared) in group {
                    xs.append(shared ? xs.last! : (0..<rows * inF).map { _ in rng.next() })
                    ws.append(try random([outF, inF], dtype))
                    bs.append(bias ? try random([outF], dtype == .q8_0 ? .f32 : dtype) : nil)
                }
                var alone = group.indices.map { [Float](repeating: .nan, count: group[$0].2 * group[$0].0) }
                var together = alone
                for i in group.indices {
                    xs[i].withUnsafeBufferPointer { xp in
                        alone[i].withUnsafeMutableBufferPointer {
                            Linear.forward(xp.baseAddress!, rows: group[i].2, weight: ws[i], bias: bs[i], into: $0.baseAddress!)
                        }
                    }
                }
                let xps = xs.map { x in let p = UnsafeMutablePointer<Float>.allocate(capacity: x.count); p.initialize(from: x, count: x.count); return p }
                let yps = together.map { y in UnsafeMutablePointer<Float>.allocate(capacity: y.count) }
                defer { for p in xps + yps { p.deallocate() } }
                // Products sharing an activation get the same pointer, as the trunk passes them.
                let xAt = group.indices.map { i in group[i].5 ? (0...i).last { !group[$0].5 }! : i }
                Linear.forwardAll(count: group.count) { i in
                    Linear.Product(UnsafePointer(xps[xAt[i]]), rows: group[i].2, weight: ws[i], bias: bs[i], into: yps[i])
                }
                for i in group.indices {
                    together[i] = Array(UnsafeBufferPointer(start: yps[i], count: together[i].count))
                    XCTAssertEqual(together[i], alone[i], "group \(g) product \(i), \(threads) threads")
                }
            }
        }
    }

    /// f16 weights are widened in registers (`vcvtph2ps`) in the same lane order as f32 ones, so the
    /// mat-vec of f16 weights gives exactly the bits of the same weights stored as f32: 1…8 rows,
    /// widths with and without a tail past the last 16, any thread count; in the AVX-512 kernel and
    /// in the portable tiles (one f16 row swept row by row gets the bits of the f32 4-row tile).
    func testHalfWeightsGiveTheBitsOfTheirF32Widening() throws {
        try withEachMatVecPath { avx512 in
            var rng = SplitMix(11)
            try withThreadCounts { _ in
                // One row of fewer than 2048 goes row by row (`tileRow`), of more in 4-row tiles.
                for (outF, inF, rows) in [(70, 64, 1), (37, 1000, 1), (9, 2100, 1), (33, 100, 3), (130, 257, 8)] {
                    let half = try Tensor(shape: [outF, inF], values: (0..<outF * inF).map { _ in rng.next() }).converted(to: .f16)
                    let x = (0..<rows * inF).map { _ in rng.next() }
                    let a = linearProduct(x, rows: rows, half), b = linearProduct(x, rows: rows, half.converted(to: .f32))
                    let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                    XCTAssertEqual(differing, 0, "\(outF)×\(inF), \(rows) rows, AVX-512 \(avx512): \(differing) of \(a.count) outputs differ")
                }
            }
        }
    }

    /// A weight row against an activation row gives the same bits whichever mat-vec tile computes
    /// it: one activation row (16-bit rows under `rowByRowBelow` row by row, others in 4-row tiles)
    /// against the same row first among 2, 3 or 4 (the 2×2, 1×3 and 1×4 tiles). Every dtype the
    /// tiles read, widths on both sides of the row-by-row limit, output counts with and without a
    /// remainder past the last 4; in the AVX-512 kernel and in the portable tiles.
    func testOneRowGetsTheBitsItGetsAmongSeveral() throws {
        try withEachMatVecPath { avx512 in
            var rng = SplitMix(13)
            try withThreadCounts { _ in
                for dtype in [DType.f32, .bf16, .f16] {
                    for (outF, inF) in [(70, 64), (37, 1000), (9, 2100), (6, 40)] {
                        let w = try Tensor(shape: [outF, inF], values: (0..<outF * inF).map { _ in rng.next() }).converted(to: dtype)
                        let x = (0..<4 * inF).map { _ in rng.next() }
                        let alone = linearProduct(x, rows: 1, w)
                        for rows in 2...4 {
                            let among = linearProduct(x, rows: rows, w)
                            let differing = zip(alone, among).filter { $0.bitPattern != $1.bitPattern }.count
                            XCTAssertEqual(differing, 0, "\(dtype) \(outF)×\(inF), first of \(rows) rows, AVX-512 \(avx512): \(differing) of \(outF) differ")
                        }
                    }
                }
            }
        }
    }

    /// A long run of mat-vec calls from several threads at once: the pool must serialise or share
    /// safely and every result must still be exact.
    func testConcurrentCallersGetCorrectResults() throws {
        let fx = try KernelFixture("linear")
        let name = "bf16_1x300x260_bias"
        let x = try fx.floats("\(name)/x"), w = try fx.tensor("\(name)/w"), b = try fx.tensor("\(name)/b")
        let want = try fx.floats("\(name)/y")
        let errors = UnsafeMutablePointer<Float>.allocate(capacity: 4)
        defer { errors.deallocate() }
        let box = ErrorSlots(errors)
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            var worst: Float = 0
            var y = [Float](repeating: 0, count: 260)
            for _ in 0..<50 {
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { Linear.forward(xp.baseAddress!, rows: 1, weight: w, bias: b, into: $0.baseAddress!) }
                }
                worst = max(worst, relativeError(y, want))
            }
            box.p[t] = worst
        }
        for t in 0..<4 { XCTAssertLessThanOrEqual(errors[t], kernelTolerance) }
    }

    /// torch.bmm, plain and with B transposed.
    func testBatchedGemmMatchesTorch() throws {
        let fx = try KernelFixture("bmm")
        for c in fx.cases {
            let name = try c.string("name")
            let batch = try c.int("batch"), m = try c.int("m"), n = try c.int("n"), k = try c.int("k")
            let a = try fx.floats("\(name)/a"), b = try fx.floats("\(name)/b"), want = try fx.floats("\(name)/y")
            var y = [Float](repeating: .nan, count: batch * m * n)
            let t = try c.bool("transposeB")
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in y.withUnsafeMutableBufferPointer { yp in
                Linear.batchedGemm(batch: batch, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!,
                                   transposeB: t, c: yp.baseAddress!)
            } } }
            XCTAssertLessThanOrEqual(relativeError(y, want), kernelTolerance, name)
        }
    }
}

/// Result slots written by concurrent test threads. `@unchecked Sendable`: each thread writes its own index.
private struct ErrorSlots: @unchecked Sendable {
    let p: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
}
