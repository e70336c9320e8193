/// Matrix products. Hugging Face stores a Linear's weight as `[out, in]`, so the product every layer
/// needs is `y = x · Wᵀ`; f32 weights go straight to sgemm (`Sgemm`), narrower weights are widened
/// inside the kernel (never converted at load).
public enum Linear {
    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias)`, W `[out, in]` in any storage dtype, bias `[out]`
    /// in any dtype. Up to `MatVec.maxRows` rows use the bandwidth-bound mat-vec kernel (weights
    /// read once in their stored dtype, split over `Parallel.threads`; q8_0 by `MatVecQ8`, which
    /// quantises the activation to q8_0 first, as prefill then does too); up to `GemmNT`'s limits
    /// (24 rows f32, 128 rows 16-bit) its packing-free kernel where the CPU has AVX-512, and f32
    /// from there to 64 rows `GemmRowLanes` (with AVX2 only: 9–64 rows, 16-bit weights too); more
    /// rows use sgemm split over the pool (`Sgemm`; 16-bit and q8_0 weights widened block by block
    /// into per-thread scratch). Allocates nothing per call.
    public static func forward(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, bias: Tensor? = nil,
                               into y: UnsafeMutablePointer<Float>) {
        precondition(weight.rank == 2, "linear weight must be 2-D, got \(weight.shape)")
        let outF = weight.shape[0], inF = weight.shape[1]
        if rows == 0 || outF == 0 { return }
        if inF == 0 {
            for i in 0..<rows * outF { y[i] = 0 }
            if let bias { addBias(bias, rows: rows, outF: outF, into: y) }
            return
        }
        if rows <= MatVec.maxRows {
            MatVec.forwardAll(count: 1) { _ in Product(x, rows: rows, weight: weight, bias: bias, into: y) }
            return
        }
        if GemmNT.takes(rows: rows, dtype: weight.dtype) {
            GemmNT.forward(x, rows: rows, weight: weight, into: y)
            if let bias { addBias(bias, rows: rows, outF: outF, into: y) }
            return
        }
        if GemmRowLanes.takes(rows: rows, dtype: weight.dtype) {
            GemmRowLanes.forward(x, rows: rows, weight: weight, into: y)
            if let bias { addBias(bias, rows: rows, outF: outF, into: y) }
            return
        }
        switch weight.dtype {
        case .f32:
            gemm(m: rows, n: outF, k: inF, a: x, lda: inF, b: weight.floats, ldb: inF, transposeB: true, c: y, ldc: outF)
        case .bf16, .f16, .q8_0:
            // q8_0 products see the activation through q8_0 too (as the mat-vec does): round-trip it once.
            var a = x
            if weight.dtype == .q8_0 {
                let xq = ThreadScratch.floats(.input, count: rows * inF)
                Q8.roundTrip(x, blocks: rows * inF / Q8.block, into: xq)
                a = UnsafePointer(xq)
            }
            // Widen (q8_0: dequantise) blocks of weight rows (up to 8 MB) into scratch and hand
            // each to sgemm. sgemm packs the whole activation again for every block, so blocks are
            // large: at 128 rows, 1 MB blocks ran bf16 products at 0.47–0.74 of the f32 weights'
            // speed, 8 MB blocks at 0.58–0.80 (`unimoe bench kernels`, 11008×4096 and 2816×1024,
            // two alternating runs; 4096×4096: 0.65–0.70 with 1 MB, 0.84–0.93 with 16 MB).
            let block = max(1, min(outF, (1 << 21) / inF))
            let scratch = ThreadScratch.floats(.work, count: block * inF)
            var r0 = 0
            while r0 < outF {
                let nb = min(block, outF - r0)
                weight.widenRows(r0, nb, into: scratch)
                gemm(m: rows, n: nb, k: inF, a: a, lda: inF, b: scratch, ldb: inF, transposeB: true, c: y + r0, ldc: outF)
                r0 += nb
            }
        }
        if let bias { addBias(bias, rows: rows, outF: outF, into: y) }
    }

    /// One product of `forwardAll`: `y[rows, out] = x[rows, in] · weightᵀ (+ bias)`, rows contiguous.
    public struct Product {
        public let x: UnsafePointer<Float>
        public let rows: Int
        public let weight: Tensor
        public let bias: Tensor?
        public let y: UnsafeMutablePointer<Float>

        public init(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, bias: Tensor? = nil, into y: UnsafeMutablePointer<Float>) {
            self.x = x; self.rows = rows; self.weight = weight; self.bias = bias; self.y = y
        }
    }

    /// `count` independent products, `product(i)` each, as `forward` computes them. When every one
    /// is a decode-sized mat-vec they run as one parallel job (`MatVec.forwardAll`: one pool
    /// synchronisation instead of `count`), otherwise one after another. Allocates nothing.
    public static func forwardAll(count: Int, _ product: (Int) -> Product) {
        var matVec = true
        for i in 0..<count {
            let p = product(i)
            precondition(p.weight.rank == 2, "linear weight must be 2-D, got \(p.weight.shape)")
            if p.rows == 0 || p.rows > MatVec.maxRows || p.weight.shape[0] == 0 || p.weight.shape[1] == 0 { matVec = false }
        }
        if matVec {
            MatVec.forwardAll(count: count, product)
        } else {
            for i in 0..<count {
                let p = product(i)
                forward(p.x, rows: p.rows, weight: p.weight, bias: p.bias, into: p.y)
            }
        }
    }

    /// Adds a bias `[out]` of any dtype to every row, reading it in place.
    static func addBias(_ bias: Tensor, rows: Int, outF: Int, into y: UnsafeMutablePointer<Float>) {
        if bias.dtype == .f32 {
            let b = bias.floats
            for r in 0..<rows { let row = y + r * outF; for o in 0..<outF { row[o] += b[o] } }
        } else {
            let b = ThreadScratch.floats(.work2, count: outF)
            bias.widenRows(0, bias.rowCount, into: b)
            for r in 0..<rows { let row = y + r * outF; for o in 0..<outF { row[o] += b[o] } }
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
    /// leading dimensions so heads can be addressed inside interleaved buffers (`Sgemm.product`,
    /// split over the pool).
    public static func gemm(m: Int, n: Int, k: Int,
                            a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
                            c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0) {
        Sgemm.product(transB: transposeB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// Batched `C[i] = A[i] · B[i]` (or `· B[i]ᵀ` when `transposeB`) for i in `0..<batch`, as
    /// `torch.bmm`: A `[batch, m, k]`, B `[batch, k, n]` (or `[batch, n, k]`), C `[batch, m, n]`, contiguous.
    public static func batchedGemm(batch: Int, m: Int, n: Int, k: Int, a: UnsafePointer<Float>,
                                   b: UnsafePointer<Float>, transposeB: Bool, c: UnsafeMutablePointer<Float>) {
        for i in 0..<batch {
            gemm(m: m, n: n, k: k, a: a + i * m * k, lda: k, b: b + i * k * n, ldb: transposeB ? k : n,
                 transposeB: transposeB, c: c + i * m * n, ldc: n)
        }
    }

    /// Threads this process's kernels may use: our worker pool's size, which every kernel splits
    /// over (GEMMs too: OpenBLAS itself stays single-threaded, `Sgemm`). Set once per process (the
    /// pipeline file gives each role its count).
    public static func setThreads(_ n: Int) {
        OpenBLASCore.ensureSelected()
        Parallel.setThreads(n)
    }

    /// Threads our worker pool uses.
    public static var threads: Int { Parallel.threads }

    /// Whether decode's mat-vec (1–8 rows, f32 / bf16 / f16) runs in `GemmNT`'s AVX-512 kernel
    /// (true wherever the CPU has it) or in the portable Swift tiles. Settable so that tests can run
    /// the portable path on an AVX-512 machine too; nothing else sets it.
    public static var matVecUsesAVX512: Bool {
        get { MatVec.avx512 }
        set { MatVec.avx512 = newValue && GemmNT.available }
    }
}
