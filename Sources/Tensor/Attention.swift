import Foundation

/// Rotary position embedding exactly as Hugging Face LLaMA applies it: rotate-half layout
/// (pairs are i and i + d/2), inverse frequencies θ^(−2i/d) in f32, angles position · inv_freq in
/// f32, cos/sin of that f32 angle. Allocates nothing per call (cos/sin live in thread scratch).
public struct Rope: Sendable {
    public let headDim: Int
    public let invFreq: [Float]

    public init(headDim: Int, theta: Float) {
        self.headDim = headDim
        let half = headDim / 2
        invFreq = (0..<half).map { i in
            let e = Float(2 * i) / Float(headDim)
            return 1 / powf(theta, e)
        }
    }

    /// Rotates `rows` vectors laid out as `[rows, heads, headDim]`; row r sits at position `positions[r]`.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, positions: UnsafePointer<Int>) {
        for r in 0..<rows { rotate(x + r * heads * headDim, heads: heads, position: positions[r]) }
    }

    /// Consecutive positions start, start+1, ….
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, startPosition: Int) {
        for r in 0..<rows { rotate(x + r * heads * headDim, heads: heads, position: startPosition + r) }
    }

    /// One row: every head of `x` (`[heads, headDim]`) rotated for `position`.
    private func rotate(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDim / 2
        let cs = ThreadScratch.floats(.work2, count: 2 * half)
        let p = Float(position)
        invFreq.withUnsafeBufferPointer { f in
            for i in 0..<half {
                let a = p * f[i]
                cs[i] = cosf(a); cs[half + i] = sinf(a)
            }
        }
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let a = v[i], b = v[i + half], c = cs[i], s = cs[half + i]
                v[i] = a * c - b * s
                v[i + half] = b * c + a * s
            }
        }
    }
}

/// Scaled dot-product attention over interleaved head buffers with grouped-query heads and a KV
/// cache. Two paths, because decode and prefill are different problems:
/// - few queries (decode, ≤ 8): per (head, query) dot products against the cached keys, softmax,
///   weighted sum of values — vectorised, heads split over the worker pool, no GEMM call overhead;
/// - many queries (prefill, encoders): one `QKᵀ` and one `PV` GEMM per head through OpenBLAS.
public enum Attention {
    /// Query counts up to this take the vector path.
    static let vectorQueries = 8

    /// out[q, h, :] = softmax(scale · Q_h K_gᵀ + mask) V_g, g = h / (heads / kvHeads).
    /// - q: `[queries, heads, headDim]`; keys/values: `[keyCount, kvHeads, headDim]`;
    ///   out: `[queries, heads, headDim]`; scratch: at least `queries · keyCount` floats (used by
    ///   the GEMM path only; the vector path uses per-thread scratch).
    /// - causalOffset: query i sees keys j ≤ causalOffset + i; nil for no mask (encoders).
    public static func forward(q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int,
                               keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                               causalOffset: Int?, scale: Float,
                               scratch: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads \(heads) not a multiple of kv heads \(kvHeads)")
        if queries == 0 { return }
        if queries <= vectorQueries {
            vectorPath(q: q, queries: queries, heads: heads, kvHeads: kvHeads, headDim: headDim, keys: keys,
                       values: values, keyCount: keyCount, causalOffset: causalOffset, scale: scale, out: out)
            return
        }
        let group = heads / kvHeads
        let qStride = heads * headDim, kvStride = kvHeads * headDim
        for h in 0..<heads {
            let g = h / group
            Linear.gemm(m: queries, n: keyCount, k: headDim,
                        a: q + h * headDim, lda: qStride,
                        b: keys + g * headDim, ldb: kvStride, transposeB: true,
                        c: scratch, ldc: keyCount)
            for i in 0..<queries {
                let row = scratch + i * keyCount
                let visible = causalOffset.map { max(0, min(keyCount, $0 + i + 1)) } ?? keyCount
                for j in 0..<visible { row[j] *= scale }
                for j in visible..<keyCount { row[j] = -Float.infinity }
            }
            Activations.softmax(scratch, rows: queries, cols: keyCount)
            Linear.gemm(m: queries, n: headDim, k: keyCount,
                        a: scratch, lda: keyCount,
                        b: values + g * headDim, ldb: kvStride, transposeB: false,
                        c: out + h * headDim, ldc: qStride)
        }
    }

    private static func vectorPath(q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int,
                                   keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                                   causalOffset: Int?, scale: Float, out: UnsafeMutablePointer<Float>) {
        let group = heads / kvHeads
        let qStride = heads * headDim, kvStride = kvHeads * headDim
        let work = heads * queries * keyCount * headDim
        let tasks = work >= 1 << 15 ? heads : 1
        Parallel.forEach(tasks: tasks) { task, _ in
            let hs = tasks == 1 ? 0..<heads : task..<(task + 1)
            let scores = ThreadScratch.floats(.work, count: keyCount)
            for h in hs {
                let g = h / group
                let kg = keys + g * headDim, vg = values + g * headDim
                for i in 0..<queries {
                    let qv = q + i * qStride + h * headDim
                    let o = out + i * qStride + h * headDim
                    let visible = causalOffset.map { max(0, min(keyCount, $0 + i + 1)) } ?? keyCount
                    if visible == 0 { for d in 0..<headDim { o[d] = 0 }; continue }
                    var m = -Float.infinity
                    for j in 0..<visible {
                        let s = dot(qv, kg + j * kvStride, count: headDim) * scale
                        scores[j] = s
                        m = max(m, s)
                    }
                    var sum: Float = 0
                    for j in 0..<visible { let e = expf(scores[j] - m); scores[j] = e; sum += e }
                    let inv = 1 / sum
                    for d in 0..<headDim { o[d] = 0 }
                    for j in 0..<visible { axpy(scores[j] * inv, vg + j * kvStride, o, count: headDim) }
                }
            }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 8 <= count {
            acc += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        var s = acc.sum()
        while i < count { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// y += a · x
    @inline(__always)
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let av = SIMD8<Float>(repeating: a)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        while i + 8 <= count {
            let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                + av * rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { y[i] += a * x[i]; i += 1 }
    }
}
