import COpenBLAS

/// Matrix products. Hugging Face stores a Linear's weight as `[out, in]`, so the product every layer
/// needs is `y = x · Wᵀ`; f32 weights go straight to `cblas_sgemm`, narrower weights are widened
/// inside the kernel (never converted at load).
public enum Linear {
    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias)`, W `[out, in]` in any storage dtype, bias f32 `[out]`.
    public static func forward(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, bias: Tensor? = nil,
                               into y: UnsafeMutablePointer<Float>) {
        precondition(weight.rank == 2, "linear weight must be 2-D, got \(weight.shape)")
        let outF = weight.shape[0], inF = weight.shape[1]
        if rows == 0 || outF == 0 { return }
        switch weight.dtype {
        case .f32:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outF), Int32(inF),
                        1, x, Int32(inF), weight.floats, Int32(inF), 0, y, Int32(outF))
        case .bf16, .f16:
            // Widen blocks of weight rows into a scratch buffer and hand each block to sgemm.
            let block = max(1, min(outF, (1 << 18) / max(inF, 1)))
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * inF)
            defer { scratch.deallocate() }
            var r0 = 0
            while r0 < outF {
                let nb = min(block, outF - r0)
                Convert.toF32(UnsafeRawPointer(weight.raw) + r0 * inF * weight.dtype.size, weight.dtype,
                              count: nb * inF, into: scratch)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(nb), Int32(inF),
                            1, x, Int32(inF), scratch, Int32(inF), 0, y + r0, Int32(outF))
                r0 += nb
            }
        }
        if let bias {
            let b = bias.converted(to: .f32)
            for r in 0..<rows {
                let row = y + r * outF
                for o in 0..<outF { row[o] += b.floats[o] }
            }
        }
    }

    /// Tensor form: x `[..., in]` → `[..., out]`.
    public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        guard weight.rank == 2, x.lastDim == weight.shape[1] else {
            throw TensorError.shapeMismatch("input \(x.shape) · weight\(weight.shape)ᵀ")
        }
        if let bias, bias.count != weight.shape[0] {
            throw TensorError.shapeMismatch("bias \(bias.shape) for weight \(weight.shape)")
        }
        let xf = x.converted(to: .f32)
        var outShape = x.shape
        outShape[outShape.count - 1] = weight.shape[0]
        let y = Tensor(zeros: outShape)
        forward(xf.floats, rows: x.rowCount, weight: weight, bias: bias, into: y.floats)
        return y
    }

    /// `C[m, n] = A[m, k] · B[k, n]` (or `· Bᵀ` when `transposeB`, B then `[n, k]`), all f32, with
    /// leading dimensions so heads can be addressed inside interleaved buffers.
    public static func gemm(m: Int, n: Int, k: Int,
                            a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
                            c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0) {
        if m == 0 || n == 0 { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Threads OpenBLAS may use in this process (set from the pipeline file per role).
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
