import Foundation

/// Fused, thread-parallel passes for pre-LN encoder layers (CLIP, Whisper): the GEMMs of a layer
/// split over the worker pool (`Sgemm`; OpenBLAS itself is single-threaded in every process), and
/// the element-wise work folded into as few passes as possible (bias + activation in one sweep, a
/// projection's bias carried into the next layer norm, residual adds done by the GEMM itself with
/// β = 1).
///
/// Why: the encoders are 85–95% GEMM by FLOPs, so every serial element-wise pass between two GEMMs
/// leaves a core idle (and OpenBLAS's own threads spinning for work while it runs). One thread
/// system — our pool — runs everything, and nothing runs on one core while the other waits.
public enum EncoderKernels {
    /// `y[r, o] (+)= Σ_i x[r, i] · W[o, i]` for W `[out, in]` in any dtype, no bias; `y` has row
    /// stride `out`. `accumulate` adds to `y` (the residual stream) instead of overwriting it.
    /// f32 weights: the output columns are split over the pool (`Sgemm`);
    /// 16-bit weights: the rows are split and each part goes through `Linear.forward`.
    public static func project(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, into y: UnsafeMutablePointer<Float>,
                               accumulate: Bool = false) {
        precondition(weight.rank == 2, "projection weight must be 2-D, got \(weight.shape)")
        let outF = weight.shape[0], inF = weight.shape[1]
        if rows == 0 || outF == 0 { return }
        let threads = Parallel.threads
        if rows <= MatVec.maxRows {
            // Few rows: the mat-vec kernel (already split over the pool) reads the weights once.
            if !accumulate { Linear.forward(x, rows: rows, weight: weight, into: y); return }
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: rows * outF)
            defer { tmp.deallocate() }
            Linear.forward(x, rows: rows, weight: weight, into: tmp)
            for i in 0..<(rows * outF) { y[i] += tmp[i] }
            return
        }
        if weight.dtype == .f32 {
            // `Sgemm` splits the output columns over the pool.
            Linear.gemm(m: rows, n: outF, k: inF, a: x, lda: inF, b: weight.floats, ldb: inF,
                        transposeB: true, c: y, ldc: outF, beta: accumulate ? 1 : 0)
            return
        }
        let tasks = min(threads, max(1, rows / 32))
        let chunk = (rows + tasks - 1) / tasks
        let tmp: UnsafeMutablePointer<Float>? = accumulate ? .allocate(capacity: rows * outF) : nil
        defer { tmp?.deallocate() }
        Parallel.forEach(tasks: tasks) { t, _ in
            let r0 = t * chunk, n = min(rows, r0 + chunk) - r0
            if n <= 0 { return }
            let dst = (tmp ?? y) + r0 * outF
            Linear.forward(x + r0 * inF, rows: n, weight: weight, into: dst)
            if accumulate {
                let out = y + r0 * outF
                for i in 0..<(n * outF) { out[i] += dst[i] }
            }
        }
    }

    /// `x[r, c] = act(x[r, c] + bias[c])` over `[rows, cols]`, one parallel sweep. `activation` is a
    /// Hugging Face name; `gelu` and `quick_gelu` are fused, others add the bias then `Activations.apply`.
    public static func biasActivate(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bias: UnsafePointer<Float>?,
                                    activation: String) throws {
        try Activations.check(activation)
        let kind: Int = activation == "gelu" ? 1 : activation == "quick_gelu" ? 2 : 0
        FastMath.parallel(rows, minChunk: max(1, 8192 / max(cols, 1))) { range in
            for r in range {
                let row = x + r * cols
                #if DEBUG
                // Unoptimised SIMD code is ~100× slower than libm: debug builds take the scalar kernels.
                if let bias { for j in 0..<cols { row[j] += bias[j] } }
                try? Activations.apply(activation, row, count: cols)
                #else
                switch kind {
                case 1: sweep(row, cols, bias) { FastMath.geluV($0) }
                case 2: sweep(row, cols, bias) { FastMath.quickGeluV($0) }
                default:
                    if let bias { for j in 0..<cols { row[j] += bias[j] } }
                    try? Activations.apply(activation, row, count: cols)
                }
                #endif
            }
        }
    }

    /// `row[j] = f(row[j] + bias[j])`, 16 lanes at a time, the tail padded.
    @inline(__always)
    static func sweep(_ row: UnsafeMutablePointer<Float>, _ cols: Int, _ bias: UnsafePointer<Float>?,
                      _ f: (FastMath.V) -> FastMath.V) {
        typealias V = FastMath.V
        var j = 0
        let p = UnsafeMutableRawPointer(row)
        while j + 16 <= cols {
            var v = p.loadUnaligned(fromByteOffset: j * 4, as: V.self)
            if let bias { v += UnsafeRawPointer(bias + j).loadUnaligned(as: V.self) }
            p.storeBytes(of: f(v), toByteOffset: j * 4, as: V.self)
            j += 16
        }
        if j < cols {
            var v = V(repeating: 0)
            for k in j..<cols { v[k - j] = row[k] + (bias?[k] ?? 0) }
            let y = f(v)
            for k in j..<cols { row[k] = y[k - j] }
        }
    }

    /// `x[r, c] += bias[c]` over `[rows, cols]` in parallel.
    public static func addBias(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bias: UnsafePointer<Float>) {
        FastMath.parallel(rows, minChunk: max(1, 16384 / max(cols, 1))) { range in
            for r in range {
                let row = x + r * cols
                for j in 0..<cols { row[j] += bias[j] }
            }
        }
    }

    /// Per row, in parallel: `h += pending` (a projection's bias not yet added, if any), then
    /// `y = LayerNorm(h)` with weight and bias `[dim]` (biased variance, as torch).
    public static func addLayerNorm(_ h: UnsafeMutablePointer<Float>, rows: Int, dim: Int, pending: UnsafePointer<Float>?,
                                    weight: Tensor, bias: Tensor, eps: Float, into y: UnsafeMutablePointer<Float>) {
        FastMath.parallel(rows, minChunk: max(1, 16384 / max(dim, 1))) { range in
            if let pending {
                for r in range {
                    let row = h + r * dim
                    for j in 0..<dim { row[j] += pending[j] }
                }
            }
            Norm.layer(h + range.lowerBound * dim, rows: range.count, dim: dim, weight: weight, bias: bias, eps: eps,
                       into: y + range.lowerBound * dim)
        }
    }
}

extension Activations {
    /// Throws when `name` is not an activation `apply` knows (so configs fail at load, not mid-run).
    public static func check(_ name: String) throws {
        var x: Float = 0
        try apply(name, &x, count: 1)
    }
}
