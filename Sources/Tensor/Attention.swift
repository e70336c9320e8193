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
        Parallel.forEach(tasks: tasks, job: Heads(q: q, queries: queries, heads: heads, group: group, headDim: headDim,
                                                  keys: keys, values: values, keyCount: keyCount, causalOffset: causalOffset,
                                                  scale: scale, out: out, qStride: qStride, kvStride: kvStride, tasks: tasks))
    }

    /// One task of `vectorPath`: one head (all heads when there is one task). A value so that
    /// handing it to the pool allocates nothing.
    private struct Heads: ParallelJob {
        let q: UnsafePointer<Float>, queries: Int, heads: Int, group: Int, headDim: Int
        let keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int, causalOffset: Int?
        let scale: Float, out: UnsafeMutablePointer<Float>, qStride: Int, kvStride: Int, tasks: Int

        func run(task: Int, worker: Int) {
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
                    scoreKeys(qv, kg, kvStride, visible, headDim, scale, scores)
                    var m = -Float.infinity
                    for j in 0..<visible { m = max(m, scores[j]) }
                    var sum: Float = 0
                    for j in 0..<visible { let e = expf(scores[j] - m); scores[j] = e; sum += e }
                    let inv = 1 / sum
                    for j in 0..<visible { scores[j] *= inv }
                    weightedValues(scores, vg, kvStride, visible, headDim, o)
                }
            }
        }
    }

    /// scores[j] = scale · q·K[j] for j < n, four keys at a time so four FMA chains run in parallel
    /// and each q chunk is loaded once per four keys.
    @inline(__always)
    static func scoreKeys(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ ldk: Int, _ n: Int, _ d: Int,
                          _ scale: Float, _ scores: UnsafeMutablePointer<Float>) {
        let d8 = d & ~7
        let rq = UnsafeRawPointer(q)
        var j = 0
        while j + 4 <= n {
            let k0 = UnsafeRawPointer(k + j * ldk), k1 = k0 + ldk * 4, k2 = k1 + ldk * 4, k3 = k2 + ldk * 4
            var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
            var i = 0
            while i < d8 {
                let qv = rq.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                a0 += qv * k0.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                a1 += qv * k1.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                a2 += qv * k2.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                a3 += qv * k3.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
            let kr = k + j * ldk
            for t in d8..<d {
                s0 += q[t] * kr[t]; s1 += q[t] * kr[ldk + t]; s2 += q[t] * kr[2 * ldk + t]; s3 += q[t] * kr[3 * ldk + t]
            }
            scores[j] = s0 * scale; scores[j + 1] = s1 * scale; scores[j + 2] = s2 * scale; scores[j + 3] = s3 * scale
            j += 4
        }
        while j < n { scores[j] = dot(q, k + j * ldk, count: d) * scale; j += 1 }
    }

    /// o = Σ_j p[j] · V[j] for j < n, 32 output lanes at a time held in registers across all keys
    /// (no load/store of `o` per key).
    @inline(__always)
    static func weightedValues(_ p: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ ldv: Int, _ n: Int, _ d: Int,
                               _ o: UnsafeMutablePointer<Float>) {
        let ro = UnsafeMutableRawPointer(o)
        var c = 0
        while c + 32 <= d {
            var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
            for j in 0..<n {
                let w = SIMD8<Float>(repeating: p[j])
                let r = UnsafeRawPointer(v + j * ldv + c)
                a0 += w * r.loadUnaligned(as: SIMD8<Float>.self)
                a1 += w * r.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                a2 += w * r.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
                a3 += w * r.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
            }
            ro.storeBytes(of: a0, toByteOffset: c * 4, as: SIMD8<Float>.self)
            ro.storeBytes(of: a1, toByteOffset: c * 4 + 32, as: SIMD8<Float>.self)
            ro.storeBytes(of: a2, toByteOffset: c * 4 + 64, as: SIMD8<Float>.self)
            ro.storeBytes(of: a3, toByteOffset: c * 4 + 96, as: SIMD8<Float>.self)
            c += 32
        }
        if c < d {
            for t in c..<d { o[t] = 0 }
            for j in 0..<n { axpy(p[j], v + j * ldv + c, o + c, count: d - c) }
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
