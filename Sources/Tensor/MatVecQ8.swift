/// The decode-time matrix product for q8_0 weights (`DType.q8_0`, see `Q8`):
/// `y[r, o] = Σ_b d[o, b] · Σ_j q[o, 32b + j] · x[r, 32b + j]` for a few activation rows (≤ `MatVec.maxRows`).
///
/// Why its own kernel: decode is bound by the bytes of weights read, and a q8_0 row is 34 bytes per
/// 32 weights (half of bf16). Each block is read once as int8, widened in registers (`vpmovsxbd` +
/// `vcvtdq2ps`, 8 lanes at a time), multiplied by its scale once and FMA'd against up to 4
/// activation rows; no dequantised copy of a weight is ever written. Activations stay f32 (llama.cpp
/// re-quantises them to q8_0 for an int8×int8 dot; we do not), so the product equals the dequantised
/// weights times x up to the order of f32 summation.
enum MatVecQ8 {
    /// Computes `y[r·ldy + o] = x[r·ldx + ·] · W[o, ·] (+ bias[o])` for W `[out, in]` q8_0 (in % 32 == 0).
    static func forward(_ x: UnsafePointer<Float>, rows: Int, ldx: Int, weight: Tensor, bias: Tensor?,
                        into y: UnsafeMutablePointer<Float>, ldy: Int) {
        let outF = weight.shape[0], inF = weight.shape[1], blocks = inF / Q8.block
        let b = bias.map { (UnsafeRawPointer($0.raw), $0.dtype) }
        weight.withQ8 { q, d in
            let threads = outF * inF * rows >= 1 << 16 ? Parallel.threads : 1
            // Chunks of output rows, a few per thread for balance.
            let tasks = threads == 1 ? 1 : min(threads * 4, max(1, outF / 16))
            let chunk = (outF + tasks - 1) / tasks
            Parallel.forEach(tasks: (outF + chunk - 1) / chunk) { task, _ in
                let o0 = task * chunk, o1 = min(outF, o0 + chunk)
                var r = 0
                while r < rows {
                    let g = min(4, rows - r)
                    let xr = x + r * ldx, yr = y + r * ldy
                    for o in o0..<o1 {
                        let qo = q + o * inF, dOut = d + o * blocks, yo = yr + o
                        switch g {
                        case 1: row(T1x1.self, qo, dOut, blocks, xr, ldx, yo, ldy)
                        case 2: row(T1x2.self, qo, dOut, blocks, xr, ldx, yo, ldy)
                        case 3: row(T1x3.self, qo, dOut, blocks, xr, ldx, yo, ldy)
                        default: row(T1x4.self, qo, dOut, blocks, xr, ldx, yo, ldy)
                        }
                    }
                    r += g
                }
                if let (bp, bt) = b {
                    for r in 0..<rows {
                        let yr = y + r * ldy
                        for o in o0..<o1 { yr[o] += MatVec.loadScalar(bp, bt, o) }
                    }
                }
            }
        }
    }

    /// One weight row against `G.g` activation rows (`G` one of the mat-vec's 1×g tile shapes) (`ldx` apart), results `ldy` apart. With one
    /// activation row the block's four 8-lane products go to four accumulators (independent FMA
    /// chains); with more, two per row, so that 4 rows still fit the 16 vector registers.
    @inline(__always)
    private static func row<G: TileShape>(_ g: G.Type, _ q: UnsafePointer<Int8>, _ d: UnsafePointer<Float16>,
                                               _ blocks: Int, _ x: UnsafePointer<Float>, _ ldx: Int,
                                               _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        let z = SIMD8<Float>(repeating: 0)
        var c0 = (z, z, z, z), c1 = (z, z), c2 = (z, z), c3 = (z, z)
        let qr = UnsafeRawPointer(q)
        for b in 0..<blocks {
            let s = SIMD8<Float>(repeating: Float(d[b]))
            let qb = qr + b * Q8.block
            let w0 = widen(qb, 0) * s, w1 = widen(qb, 8) * s, w2 = widen(qb, 16) * s, w3 = widen(qb, 24) * s
            let xb = UnsafeRawPointer(x + b * Q8.block)
            if G.g == 1 {
                madd(&c0.0, w0, xb, 0); madd(&c0.1, w1, xb, 32); madd(&c0.2, w2, xb, 64); madd(&c0.3, w3, xb, 96)
            } else {
                madd(&c0.0, w0, xb, 0); madd(&c0.1, w1, xb, 32); madd(&c0.0, w2, xb, 64); madd(&c0.1, w3, xb, 96)
                let x1 = xb + ldx * 4
                madd(&c1.0, w0, x1, 0); madd(&c1.1, w1, x1, 32); madd(&c1.0, w2, x1, 64); madd(&c1.1, w3, x1, 96)
                if G.g > 2 {
                    let x2 = xb + 2 * ldx * 4
                    madd(&c2.0, w0, x2, 0); madd(&c2.1, w1, x2, 32); madd(&c2.0, w2, x2, 64); madd(&c2.1, w3, x2, 96)
                }
                if G.g > 3 {
                    let x3 = xb + 3 * ldx * 4
                    madd(&c3.0, w0, x3, 0); madd(&c3.1, w1, x3, 32); madd(&c3.0, w2, x3, 64); madd(&c3.1, w3, x3, 96)
                }
            }
        }
        y[0] = ((c0.0 + c0.1) + (c0.2 + c0.3)).sum()
        if G.g > 1 { y[ldy] = (c1.0 + c1.1).sum() }
        if G.g > 2 { y[2 * ldy] = (c2.0 + c2.1).sum() }
        if G.g > 3 { y[3 * ldy] = (c3.0 + c3.1).sum() }
    }

    /// Eight int8 quants at byte `offset` as f32 lanes.
    @inline(__always)
    private static func widen(_ q: UnsafeRawPointer, _ offset: Int) -> SIMD8<Float> {
        SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q.loadUnaligned(fromByteOffset: offset, as: SIMD8<Int8>.self)))
    }

    /// `c += w · x[offset bytes ..< +32]`.
    @inline(__always)
    private static func madd(_ c: inout SIMD8<Float>, _ w: SIMD8<Float>, _ x: UnsafeRawPointer, _ offset: Int) {
        let xv = x.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
        #if UNIMOE_FMA
        c.addProduct(w, xv)
        #else
        c += w * xv
        #endif
    }
}
