import Foundation

/// Vectorised transcendental functions and row-parallel element-wise passes for the encoders, whose
/// softmax and GELU touch hundreds of millions of elements per input: a scalar `expf`/`erff` loop
/// would cost as much as the matrix products. Accuracy: exp within ~2 ulp, erf within 1e-6
/// absolute (Abramowitz–Stegun 7.1.26), far inside the 1e-4 model tolerance.
public enum FastMath {
    public typealias V = SIMD16<Float>

    /// e^x lane-wise (Cephes expf scheme: 2^n · p(r), r = x − n·ln2). Below −87.3 gives 0, above 88.7 +∞.
    @inline(__always) public static func exp(_ x: V) -> V {
        // Only concrete SIMD operations (arithmetic, comparisons, bit casts): the generic ones
        // (`clamped`, `rounded`, integer conversion) are per-lane loops in the standard library.
        let hi = V(repeating: 88.72283), lo = V(repeating: -87.33654)
        var c = x.replacing(with: hi, where: x .> hi)
        c = c.replacing(with: lo, where: c .< lo)
        // Round to nearest by the 1.5·2²³ trick; the low mantissa bits then hold n as an integer.
        let magic = V(repeating: 12582912)
        let t = c * 1.44269504088896341 + magic
        let n = t - magic
        let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
        var r = c - n * 0.693359375
        r = r + n * 2.12194440e-4
        var p = V(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        // 2^n as two factors so n up to 128 (x near 88.7) and down to −126 stay representable.
        let half = ni &>> 1
        let s1 = unsafeBitCast((half &+ 127) &<< 23, to: V.self)
        let s2 = unsafeBitCast((ni &- half &+ 127) &<< 23, to: V.self)
        var y = p * s1 * s2
        y = y.replacing(with: 0, where: x .< lo)
        y = y.replacing(with: .infinity, where: x .> hi)
        return y
    }

    /// erf(x) lane-wise: sign(x)·(1 − t·poly(t)·e^(−x²)), t = 1/(1 + p|x|).
    @inline(__always) public static func erf(_ x: V) -> V {
        let a = unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: V.self)
        let t = 1 / (1 + 0.3275911 * a)
        var p = V(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let y = 1 - p * t * exp(-(a * a))
        return y.replacing(with: -y, where: x .< 0)
    }

    /// Runs `body` over `count` items split into contiguous chunks on all cores (2 here). Pure Swift
    /// passes only: BLAS calls stay on the caller's thread (OpenBLAS threads them itself).
    public static func parallel(_ count: Int, minChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, max(1, count / max(minChunk, 1)))
        if workers <= 1 { body(0..<count); return }
        let chunk = (count + workers - 1) / workers
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let s = w * chunk, e = min(count, s + chunk)
                if s < e { box.value(s..<e) }
            }
        }
    }

    /// Applies a lane-wise function to `count` floats in place, in parallel, the tail padded.
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
        map(x, count: count) { v in 0.5 * v * (1 + erf(v * 0.70710678118654752440)) }
        #endif
    }

    /// CLIP quick-GELU x·σ(1.702x), vectorised and parallel.
    public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        #if DEBUG
        Activations.quickGelu(x, count: count)
        #else
        map(x, count: count) { v in v / (1 + exp(-1.702 * v)) }
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
        let lanes = V.scalarCount
        parallel(rows, minChunk: max(1, 16384 / max(cols, 1))) { range in
            for r in range {
                let row = x + r * cols
                let n = visible.map { min(cols, max(0, $0(r))) } ?? cols
                let full = n / lanes * lanes
                var mv = V(repeating: -.infinity)
                var i = 0
                while i < full {
                    let v = UnsafeRawPointer(row + i).loadUnaligned(as: V.self)
                    mv = mv.replacing(with: v, where: v .> mv); i += lanes
                }
                var m = mv.max()
                for j in full..<n { m = max(m, row[j]) }
                if n == 0 || m == -.infinity {
                    for j in 0..<cols { row[j] = 0 }
                    continue
                }
                let sm = V(repeating: scale * m), sc = V(repeating: scale)
                var sv = V(repeating: 0)
                i = 0
                while i < full {
                    let p = UnsafeMutableRawPointer(row + i)
                    let e = exp(p.loadUnaligned(as: V.self) * sc - sm)
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
    }
}

/// Carries a closure into `concurrentPerform`. `@unchecked Sendable` because `FastMath.parallel`
/// gives each worker a disjoint index range and waits for all of them before returning.
private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
