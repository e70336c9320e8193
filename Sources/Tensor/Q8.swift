/// GGUF's q8_0 block quantisation (ggml `quantize_row_q8_0_ref` / `dequantize_row_q8_0`), the
/// element-wise reference every q8_0 kernel must agree with.
///
/// A block is 32 consecutive elements: `d = max|x| / 127` (stored as f16), `q = roundf(x · (1/d))`
/// with `1/d` taken from the f32 `d` before it is rounded to f16, exactly as ggml does (0 when the
/// block is all zeros); the value read back is `Float(q) · Float(d_f16)`.
public enum Q8 {
    /// Elements per block.
    public static let block = 32

    /// Quantises `blocks` blocks of `x` into `quants` (32 per block) and `scales` (one per block).
    public static func quantize(_ x: UnsafePointer<Float>, blocks: Int,
                                quants: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float16>) {
        for b in 0..<blocks {
            let xb = x + b * block, qb = quants + b * block
            var amax: Float = 0
            for j in 0..<block { amax = max(amax, abs(xb[j])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            scales[b] = Float16(d)
            // `rounded()` is round-half-away-from-zero, C's roundf; |x·id| ≤ 127 (+1 ulp) by construction.
            for j in 0..<block { qb[j] = Int8(max(-127, min(127, (xb[j] * id).rounded()))) }
        }
    }

    /// Widens `blocks` blocks of quants and scales into f32 `out` (32 per block).
    public static func dequantize(quants: UnsafePointer<Int8>, scales: UnsafePointer<Float16>, blocks: Int,
                                  into out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let d = Float(scales[b]), qb = quants + b * block, ob = out + b * block
            for j in 0..<block { ob[j] = Float(qb[j]) * d }
        }
    }
}
