import CKernels

/// `y = x · Wᵀ` for a few dozen rows without packing (`unimoe_gemm_nt`, Sources/CKernels/GemmNT.c):
/// the product an expert computes in prefill and a batched decode step computes for 9–24 rows (f32)
/// or 9–128 (bf16, f16).
///
/// Why not sgemm there: OpenBLAS packs the whole weight matrix on every call, which for ~16–32
/// rows costs as much as the arithmetic, and 16-bit weights first need a widening pass into
/// scratch. Measured on one thread of the bench machine (AVX-512 Xeon, 1024 × 2816 weights), against
/// sgemm on the f32 matrix and against the widening pass + sgemm for bf16:
///
/// | rows | f32 | bf16 |
/// |---|---|---|
/// | 9 | 1.55× | 2.2× |
/// | 16 | 1.2× | 1.1–1.6× |
/// | 32 | 0.9–1.1× | 1.3× |
/// | 64 | 0.7–0.8× | 0.9× |
///
/// so f32 uses it up to `maxRowsF32` rows and 16-bit weights up to `maxRows16`. CPUs without
/// AVX-512 keep sgemm (`forward` returns false). The 16-bit limit was 48 until end-to-end runs
/// showed the one-thread table underselling it: bench model prefill, interleaved rounds in one
/// process, limit 128 against 48, bf16 272 tokens/s mean against 249 (faster in 10 of 12 rounds),
/// f16 287 against 274 (7 of 10); a 512-token prompt, whose experts get more rows, 260 against 265
/// (6 rounds, even). Earlier, on the bench model (128-token prefill, experts of ~32 rows, 2
/// threads), four interleaved pairs against the build before it: bf16 prefill 243
/// tokens/s mean against 227 (the widening pass is gone), f32 227 against 227 (most experts have
/// more than 24 rows; an f32 limit of 48 gained nothing either, nor again with the weights in huge
/// pages: 238 against 233 tokens/s over 14 interleaved pairs, 8 faster and 6 slower). For f32 the
/// gain is in products of 9–16 rows, such as the attention projections of a batched decode step of
/// that many requests.
/// Its compute ceiling is lower than sgemm's (~110 GFLOP/s on one thread with everything in L1,
/// 60–75 once the weights stream from L2 and beyond, where sgemm on packed panels reaches 90+ from
/// 64 rows), which is why it stops where it does.
public enum GemmNT {
    /// The most rows an f32 product sends here.
    public static let maxRowsF32 = 24
    /// The most rows a bf16 / f16 product sends here.
    public static let maxRows16 = 128

    /// Whether this CPU runs the kernel.
    public static let available = unimoe_gemm_nt_available() != 0

    /// The kernel's code for `dtype`, nil for storage it does not read (q8_0).
    static func code(_ dtype: DType) -> Int32? {
        switch dtype {
        case .f32: return Int32(UNIMOE_GEMM_F32)
        case .bf16: return Int32(UNIMOE_GEMM_BF16)
        case .f16: return Int32(UNIMOE_GEMM_F16)
        case .q8_0: return nil
        }
    }

    /// Whether `Linear` sends a product of `rows` rows with weights stored as `dtype` here (the
    /// kernel runs and was measured faster than sgemm there; `forward` itself takes any row count).
    public static func takes(rows: Int, dtype: DType) -> Bool {
        guard available, code(dtype) != nil else { return false }
        return rows <= (dtype == .f32 ? maxRowsF32 : maxRows16)
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ` (no bias) for W `[out, in]` f32 / bf16 / f16, rows of x
    /// and y contiguous; output rows are split over `Parallel.threads` (one task per thread: every
    /// task reads the whole of x, so fewer, larger ones). Returns false, writing nothing, when the
    /// kernel cannot run here. Allocates nothing.
    @discardableResult
    public static func forward(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor,
                               into y: UnsafeMutablePointer<Float>) -> Bool {
        guard available, let dtype = code(weight.dtype), weight.rank == 2 else { return false }
        let outF = weight.shape[0], inF = weight.shape[1]
        let (xk, ldx) = layout(x, rows: rows, k: inF, dtype: weight.dtype)
        // Whole 4-row tiles per task, so a split never changes which rows share a tile.
        let tiles = (outF + 3) / 4
        let tasks = max(1, min(Parallel.threads, tiles))
        let job = Job(x: xk, ldx: ldx, rows: rows, weight: UnsafeRawPointer(weight.raw), dtype: dtype, inF: inF, outF: outF,
                      tilesPerTask: (tiles + tasks - 1) / tasks, y: y)
        Parallel.forEach(tasks: tasks, job: job)
        return true
    }

    /// The activation as the kernel reads it against `dtype` weights, and its row stride: bf16 wants
    /// each row pair-split (`unimoe_split_pairs32`, k rounded up to 32), written to this thread's
    /// `.input` scratch; other dtypes read the rows where they are.
    static func layout(_ x: UnsafePointer<Float>, rows: Int, k: Int, dtype: DType) -> (UnsafePointer<Float>, Int) {
        guard dtype == .bf16 else { return (x, k) }
        let out = ThreadScratch.floats(.input, count: rows * pairedStride(k))
        splitPairs(x, rows: rows, k: k, into: out)
        return (UnsafePointer(out), pairedStride(k))
    }

    /// The row stride of a pair-split activation of `k` elements: k rounded up to 32.
    static func pairedStride(_ k: Int) -> Int { (k + 31) & ~31 }

    /// `rows` rows of k floats (contiguous) pair-split into `out`, `pairedStride(k)` apart.
    static func splitPairs(_ x: UnsafePointer<Float>, rows: Int, k: Int, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<rows { unimoe_split_pairs32(x + r * k, k, out + r * pairedStride(k)) }
    }

    /// One task: a run of output rows. A value so that handing it to the pool allocates nothing.
    private struct Job: ParallelJob {
        let x: UnsafePointer<Float>, ldx: Int, rows: Int
        let weight: UnsafeRawPointer, dtype: Int32, inF: Int, outF: Int, tilesPerTask: Int
        let y: UnsafeMutablePointer<Float>

        func run(task: Int, worker: Int) {
            let o0 = min(outF, task * tilesPerTask * 4), o1 = min(outF, o0 + tilesPerTask * 4)
            _ = unimoe_gemm_nt(x, rows, ldx, weight, dtype, inF, o0, o1, y, outF)
        }
    }
}
