/// Normalisation layers over the last dimension, computed in f32 as transformers does.
///
/// Why these are hand-written: they run on every token between the matrix products, so they must
/// not allocate — weights in f32 are read in place; 16-bit weights are widened into per-thread
/// scratch (O(dim), no allocation after the first call). The sums use vector accumulators.
public enum Norm {
    /// LLaMA RMSNorm: `y = w · x / √(mean(x²) + eps)`, weight `[dim]` in any dtype. `y` may equal `x`.
    public static func rms(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: Tensor, eps: Float,
                           into y: UnsafeMutablePointer<Float>) {
        let w = f32View(weight, count: dim, slot: .work)
        for r in 0..<rows {
            let xr = x + r * dim, yr = y + r * dim
            let inv = 1 / (sumSquares(xr, count: dim) / Float(dim) + eps).squareRoot()
            for i in 0..<dim { yr[i] = w[i] * (xr[i] * inv) }
        }
    }

    /// LayerNorm with affine weight and optional bias (biased variance, as torch), any dtype.
    /// `y` may equal `x`.
    public static func layer(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: Tensor, bias: Tensor?, eps: Float,
                             into y: UnsafeMutablePointer<Float>) {
        let w = f32View(weight, count: dim, slot: .work)
        let b = bias.map { f32View($0, count: dim, slot: .work2) }
        for r in 0..<rows {
            let xr = x + r * dim, yr = y + r * dim
            let mean = sum(xr, count: dim) / Float(dim)
            var v: Float = 0
            for i in 0..<dim { let d = xr[i] - mean; v += d * d }
            let inv = 1 / (v / Float(dim) + eps).squareRoot()
            if let b {
                for i in 0..<dim { yr[i] = (xr[i] - mean) * inv * w[i] + b[i] }
            } else {
                for i in 0..<dim { yr[i] = (xr[i] - mean) * inv * w[i] }
            }
        }
    }

    /// The weight as f32: in place when stored f32, else widened into this thread's scratch `slot`.
    static func f32View(_ t: Tensor, count: Int, slot: ThreadScratch.Slot) -> UnsafePointer<Float> {
        precondition(t.count >= count, "norm weight \(t.shape) shorter than dim \(count)")
        if t.dtype == .f32 { return UnsafePointer(t.floats) }
        let buf = ThreadScratch.floats(slot, count: count)
        Convert.toF32(UnsafeRawPointer(t.raw), t.dtype, count: count, into: buf)
        return UnsafePointer(buf)
    }

    @inline(__always)
    static func sumSquares(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a = SIMD8<Float>(repeating: 0), b = a
        var i = 0
        let r = UnsafeRawPointer(x)
        while i + 16 <= count {
            let u = r.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let v = r.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            a += u * u; b += v * v
            i += 16
        }
        var s = (a + b).sum()
        while i < count { s += x[i] * x[i]; i += 1 }
        return s
    }

    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a = SIMD8<Float>(repeating: 0), b = a
        var i = 0
        let r = UnsafeRawPointer(x)
        while i + 16 <= count {
            a += r.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            b += r.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (a + b).sum()
        while i < count { s += x[i]; i += 1 }
        return s
    }
}
