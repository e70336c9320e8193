import Foundation

/// Vectorised transcendental functions and row-parallel element-wise passes, shared by the
/// language model's SiLU/SwiGLU (`Activations`) and the encoders' GELU, quick-GELU and softmax,
/// which touch hundreds of millions of elements per input: a scalar `expf`/`erff` loop would cost
/// as much as the matrix products. Accuracy: exp within ~2 ulp (gradual underflow to 0 below
/// −103.9, +∞ above 88.72), erf within 1e-6 absolute (Abramowitz–Stegun 7.1.26).
///
/// Written with concrete SIMD operations only (arithmetic, `pointwiseMin/Max`, bit casts, FMA):
/// the generic helpers (`replacing(with:where:)`, comparisons, `rounded`, integer conversion)
/// are per-lane loops in the standard library. Not `@inlinable` on purpose: the bodies must be
/// compiled with this module's FMA target, so other modules call the array-level kernels.
public enum FastMath {
    public typealias V = SIMD16<Float>

    /// a·b + c lane-wise, one fused instruction where the target has FMA.
    @inline(__always) static func fma(_ a: V, _ b: V, _ c: V) -> V {
        #if UNIMOE_FMA
        return c.addingProduct(a, b)
        #else
        return a * b + c
        #endif
    }

    /// e^x lane-wise (Cephes expf scheme: 2^n · p(r), r = x − n·ln2, ~2 ulp). The one exp of the
    /// project (SiLU, SwiGLU, GELU, quick-GELU, softmax): ~7× a libm `expf` loop.
    @inline(__always) public static func exp(_ x: V) -> V {
        // Clamp so n stays in [−150, 128]: 2^n built as two normal factors still rounds to 0 below
        // and overflows to +∞ above, as expf does.
        let c = pointwiseMax(pointwiseMin(x, V(repeating: 89)), V(repeating: -104))
        // Round to nearest by the 1.5·2²³ trick; the low mantissa bits then hold n as an integer.
        let magic = V(repeating: 12_582_912)
        let t = fma(c, V(repeating: 1.44269504088896341), magic)
        let n = t - magic
        var r = fma(n, V(repeating: -0.693359375), c)
        r = fma(n, V(repeating: 2.12194440e-4), r)
        var p = V(repeating: 1.9875691500e-4)
        p = fma(p, r, V(repeating: 1.3981999507e-3))
        p = fma(p, r, V(repeating: 8.3334519073e-3))
        p = fma(p, r, V(repeating: 4.1665795894e-2))
        p = fma(p, r, V(repeating: 1.6666665459e-1))
        p = fma(p, r, V(repeating: 5.0000001201e-1))
        p = fma(p, r * r, r + 1)
        let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let half = ni &>> 1
        let s1 = unsafeBitCast((half &+ 127) &<< 23, to: V.self)
        let s2 = unsafeBitCast((ni &- half &+ 127) &<< 23, to: V.self)
        return p * s1 * s2
    }

    /// erf(x) lane-wise: sign(x)·(1 − t·poly(t)·e^(−x²)), t = 1/(1 + p|x|).
    @inline(__always) public static func erf(_ x: V) -> V {
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        let a = unsafeBitCast(bits & 0x7FFF_FFFF, to: V.self)
        let t = 1 / fma(a, V(repeating: 0.3275911), V(repeating: 1))
        var p = V(repeating: 1.061405429)
        p = fma(p, t, V(repeating: -1.453152027))
        p = fma(p, t, V(repeating: 1.421413741))
        p = fma(p, t, V(repeating: -0.284496736))
        p = fma(p, t, V(repeating: 0.254829592))
        let y = 1 - p * t * exp(-(a * a))
        return unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) ^ (bits & 0x8000_0000), to: V.self)
    }

    /// Lane-wise max(a, b) by the sign of a − b and a bit select. `pointwiseMax` is a per-lane
    /// loop in the standard library, which in a running reduction costs ~10× the whole softmax.
    @inline(__always) static func maxV(_ a: V, _ b: V) -> V {
        let takeB = unsafeBitCast(a - b, to: SIMD16<Int32>.self) &>> 31   // all ones where a < b
        let ai = unsafeBitCast(a, to: SIMD16<Int32>.self), bi = unsafeBitCast(b, to: SIMD16<Int32>.self)
        return unsafeBitCast((ai & (takeB ^ -1)) | (bi & takeB), to: V.self)
    }

    /// Exact GELU lane-wise, 0.5·x·(1 + erf(x/√2)).
    @inline(__always) static func geluV(_ v: V) -> V { 0.5 * v * (1 + erf(v * 0.70710678118654752440)) }

    /// CLIP quick-GELU lane-wise, x·σ(1.702x).
    @inline(__always) static func quickGeluV(_ v: V) -> V { v / (1 + exp(v * -1.702)) }

    /// Runs `body` over `count` items split into contiguous chunks on the worker pool
    /// (`Parallel.forEach`, the threads OpenBLAS also uses, so the two never oversubscribe).
    /// A few chunks per thread, so a descheduled worker's share is picked up by the others.
    public static func parallel(_ count: Int, minChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
        let threads = Parallel.threads
        let tasks = min(4 * threads, max(1, count / max(minChunk, 1)))
        if tasks <= 1 || threads <= 1 { body(0..<count); return }
        let chunk = (count + tasks - 1) / tasks
        Parallel.forEach(tasks: tasks) { t, _ in
            let s = t * chunk, e = min(count, s + chunk)
            if s < e { body(s..<e) }
        }
    }

    /// Applies a lane-wise function to `count` floats in place, in parallel, the tail padded.
    @inline(__always)
    public static func map(_ x: UnsafeMutablePointer<Float>, count: Int, _ f: (V) -> V) {
        let lanes = V.scalarCount
        parallel((count + lanes - 1) / lanes, minChunk: 2048) { r in
            for b in r {
                let i = b * lanes
                if i + lanes <= count {
                    let p = UnsafeMutableRawPointer(x + i)
                    p.storeBytes(of: f(p.loadUnaligned(as: V.self)), as: V.self)
                } else {
                    var v = V(repeating: 0)
                    for j in 0..<(count - i) { v[j] = x[i + j] }
                    let y = f(v)
                    for j in 0..<(count - i) { x[i + j] = y[j] }
                }
            }
        }
    }

    /// Exact GELU 0.5·x·(1 + erf(x/√2)), vectorised and parallel.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        #if DEBUG
        Activations.gelu(x, count: count)   // unoptimised SIMD code is ~100× slower than libm
        #else
        map(x, count: count) { geluV($0) }
        #endif
    }

    /// CLIP quick-GELU x·σ(1.702x), vectorised and parallel.
    public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        #if DEBUG
        Activations.quickGelu(x, count: count)
        #else
        map(x, count: count) { quickGeluV($0) }
        #endif
    }

    /// The activations the encoders use, by Hugging Face name; others fall back to `Activations.apply`.
    public static func activate(_ name: String, _ x: UnsafeMutablePointer<Float>, count: Int) throws {
        switch name {
        case "gelu": gelu(x, count: count)
        case "quick_gelu": quickGelu(x, count: count)
        default: try Activations.apply(name, x, count: count)
        }
    }

    /// Row softmax of `scale · x` with the first `visible(row)` columns kept and the rest set to 0
    /// (a causal or padding mask), vectorised; rows run in parallel.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, scale: Float,
                               visible: ((Int) -> Int)? = nil) {
        #if DEBUG
        // Debug builds (the test suite) run the scalar form: generic SIMD code unoptimised is far slower.
        for r in 0..<rows {
            let row = x + r * cols
            let n = visible.map { min(cols, max(0, $0(r))) } ?? cols
            for j in 0..<n { row[j] *= scale }
            for j in n..<cols { row[j] = -.infinity }
        }
        Activations.softmax(x, rows: rows, cols: cols)
        #else
        softmaxVectorised(x, rows: rows, cols: cols, scale: scale, visible: visible)
        #endif
    }

    /// The vectorised, parallel body of `softmax` (called directly by tests in debug builds).
    public static func softmaxVectorised(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, scale: Float,
                                         visible: ((Int) -> Int)? = nil) {
        parallel(rows, minChunk: max(1, 16384 / max(cols, 1))) { range in
            for r in range {
                softmaxRow(x + r * cols, visible: visible.map { min(cols, max(0, $0(r))) } ?? cols, cols: cols, scale: scale)
            }
        }
    }

    /// One row of `softmax`, serial: `row[0..<n]` ← softmax(scale · row[0..<n]), `row[n..<cols]` ← 0.
    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, visible n: Int, cols: Int, scale: Float) {
        let lanes = V.scalarCount
        let full = n / lanes * lanes
        var mv = V(repeating: -.infinity)
        var i = 0
        while i < full {
            mv = maxV(mv, UnsafeRawPointer(row + i).loadUnaligned(as: V.self)); i += lanes
        }
        var m = mv.max()
        for j in full..<n { m = max(m, row[j]) }
        if n == 0 || m == -.infinity {
            for j in 0..<cols { row[j] = 0 }
            return
        }
        let sm = V(repeating: -scale * m), sc = V(repeating: scale)
        var sv = V(repeating: 0)
        i = 0
        while i < full {
            let p = UnsafeMutableRawPointer(row + i)
            let e = exp(fma(p.loadUnaligned(as: V.self), sc, sm))
            p.storeBytes(of: e, as: V.self)
            sv += e; i += lanes
        }
        var s = sv.sum()
        if full < n {
            var v = V(repeating: -.infinity)
            for j in full..<n { v[j - full] = row[j] * scale - scale * m }
            let e = exp(v)
            for j in full..<n { row[j] = e[j - full]; s += e[j - full] }
        }
        let inv = V(repeating: 1 / s)
        i = 0
        while i < full {
            let p = UnsafeMutableRawPointer(row + i)
            p.storeBytes(of: p.loadUnaligned(as: V.self) * inv, as: V.self)
            i += lanes
        }
        for j in full..<n { row[j] *= inv[0] }
        for j in n..<cols { row[j] = 0 }
    }
}
