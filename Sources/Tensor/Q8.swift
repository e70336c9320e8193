import CKernels

/// GGUF's q8_0 block quantisation (ggml `quantize_row_q8_0_ref` / `dequantize_row_q8_0`), the
/// element-wise reference every q8_0 kernel must agree with.
///
/// A block is 32 consecutive elements: `d = max|x| / 127` (stored as f16), `q = roundf(x · (1/d))`
/// with `1/d` taken from the f32 `d` before it is rounded to f16, exactly as ggml does (0 when the
/// block is all zeros); the value read back is `Float(q) · Float(d_f16)`.
///
/// Weights are quantised once (`unimoe quantize`); activations are quantised the same way before
/// every product with a q8_0 weight (as llama.cpp does), so the product is an exact int8 dot per
/// block (`MatVecQ8`) and prefill (`Linear`) computes the same thing with sgemm.
public enum Q8 {
    /// Elements per block.
    public static let block = 32

    /// Quantises `blocks` blocks of `x` into `quants` (32 per block) and `scales` (one per block).
    public static func quantize(_ x: UnsafePointer<Float>, blocks: Int,
                                quants: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float16>) {
        scales.withMemoryRebound(to: UInt16.self, capacity: blocks) { d in
            unimoe_q8_quantize(x, blocks, quants, d)
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

    /// `out = dequantize(quantize(x))` for `blocks` blocks: what a q8_0 product sees of its
    /// activation. `out` may be `x`.
    public static func roundTrip(_ x: UnsafePointer<Float>, blocks: Int, into out: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: block) { q in
            var d = Float16(0)
            for b in 0..<blocks {
                quantize(x + b * block, blocks: 1, quants: q.baseAddress!, scales: &d)
                dequantize(quants: q.baseAddress!, scales: &d, blocks: 1, into: out + b * block)
            }
        }
    }
}
