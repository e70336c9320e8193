import Foundation

/// Multi-head attention over a batch of independent sequences (the frames of a video, the queries
/// of a connector), as encoders and connectors need it: no KV cache, optional causal mask.
///
/// Work is split into (sequence, head, block of queries) tasks on the worker pool, each running
/// its two GEMMs (scores = Q_blk·K_hᵀ over all keys, then scores·V_h) single-threaded with the
/// softmax in between while the scores are still in cache. Blocks are as tall as fits ~512 KB
/// of scores, so every GEMM is a large one (e.g. 256×1500×64 for Whisper), the softmax runs on
/// all cores, and OpenBLAS's threads never spin while our element-wise work runs.
public enum EncoderAttention {
    /// For each sequence b and head h: `out_bh = softmax(scale · Q_bh K_bhᵀ [+ causal]) V_bh`.
    /// - q, out: `[batch·queries, heads·headDim]` (row stride `heads·headDim`);
    ///   k, v: `[batch·keys, heads·headDim]`. Query i of a causal pass sees keys j ≤ i.
    public static func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int,
                               scale: Float, causal: Bool, out: UnsafeMutablePointer<Float>) {
        let stride = heads * headDim
        forward(q: q, ldq: stride, k: k, ldk: stride, v: v, ldv: stride, batch: batch, queries: queries, keys: keys,
                heads: heads, headDim: headDim, scale: scale, causal: causal, out: out, ldo: stride)
    }

    /// As `forward` above with explicit row strides, so q, k and v can be column ranges of one
    /// fused QKV projection `[rows, 3·D]`. Head h of a row occupies columns `h·headDim ..< (h+1)·headDim`.
    public static func forward(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                               v: UnsafePointer<Float>, ldv: Int,
                               batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int,
                               scale: Float, causal: Bool, out: UnsafeMutablePointer<Float>, ldo: Int) {
        if batch == 0 || queries == 0 { return }
        let threads = max(1, Parallel.threads)
        // Query block: scores ≤ ~1 MB, but at least ~2 tasks per thread overall.
        var block = max(16, min(queries, (1 << 18) / max(keys, 1)))
        let perHead = batch * heads
        if perHead * ((queries + block - 1) / block) < 2 * threads {
            let want = (2 * threads + perHead - 1) / perHead
            block = max(1, (queries + want - 1) / want)
        }
        let blocks = (queries + block - 1) / block
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: threads * block * max(keys, 1))
        defer { scratch.deallocate() }
        Parallel.forEach(tasks: perHead * blocks) { task, worker in
            let qb = task % blocks, bh = task / blocks
            let b = bh / heads, h = bh % heads
            let q0 = qb * block, m = min(queries, q0 + block) - q0
            let scores = scratch + worker * block * keys
            // Causal: this block's last query sees keys 0...q0+m−1, the rest of the row is masked.
            let n = causal ? min(keys, q0 + m) : keys
            let qp = q + (b * queries + q0) * ldq + h * headDim
            let kp = k + b * keys * ldk + h * headDim
            let vp = v + b * keys * ldv + h * headDim
            Linear.gemm(m: m, n: n, k: headDim, a: qp, lda: ldq, b: kp, ldb: ldk, transposeB: true, c: scores, ldc: n)
            for i in 0..<m {
                let visible = causal ? min(n, q0 + i + 1) : n
                #if DEBUG
                // Unoptimised SIMD code is far slower than libm: debug builds take the scalar form.
                let row = scores + i * n
                for j in 0..<visible { row[j] *= scale }
                for j in visible..<n { row[j] = -.infinity }
                Activations.softmax(row, rows: 1, cols: n)
                #else
                FastMath.softmaxRow(scores + i * n, visible: visible, cols: n, scale: scale)
                #endif
            }
            Linear.gemm(m: m, n: headDim, k: n, a: scores, lda: n, b: vp, ldb: ldv, transposeB: false,
                        c: out + (b * queries + q0) * ldo + h * headDim, ldc: ldo)
        }
    }
}
