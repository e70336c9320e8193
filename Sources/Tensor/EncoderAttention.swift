import Foundation

/// Multi-head attention over a batch of independent sequences (the frames of a video, the queries
/// of a connector), as encoders and connectors need it: no KV cache, optional causal mask, large
/// per-head GEMMs over whole sequences and a vectorised, parallel softmax (`FastMath.softmax`).
public enum EncoderAttention {
    /// For each sequence b and head h: `out_bh = softmax(scale · Q_bh K_bhᵀ [+ causal]) V_bh`.
    /// - q, out: `[batch·queries, heads·headDim]` (row stride `heads·headDim`);
    ///   k, v: `[batch·keys, heads·headDim]`. Query i of a causal pass sees keys j ≤ i.
    public static func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int,
                               scale: Float, causal: Bool, out: UnsafeMutablePointer<Float>) {
        if batch == 0 || queries == 0 { return }
        let stride = heads * headDim
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(1, queries * keys))
        defer { scores.deallocate() }
        for b in 0..<batch {
            let qb = q + b * queries * stride, kb = k + b * keys * stride, vb = v + b * keys * stride
            let ob = out + b * queries * stride
            for h in 0..<heads {
                Linear.gemm(m: queries, n: keys, k: headDim, a: qb + h * headDim, lda: stride,
                            b: kb + h * headDim, ldb: stride, transposeB: true, c: scores, ldc: keys)
                FastMath.softmax(scores, rows: queries, cols: keys, scale: scale,
                                 visible: causal ? { $0 + 1 } : nil)
                Linear.gemm(m: queries, n: headDim, k: keys, a: scores, lda: keys,
                            b: vb + h * headDim, ldb: stride, transposeB: false, c: ob + h * headDim, ldc: stride)
            }
        }
    }
}
