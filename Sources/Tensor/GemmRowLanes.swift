import CKernels

/// `y = x · Wᵀ` for f32 weights and the row counts an expert sees in prefill (25–64), with the
/// activation rows in the vector lanes (`unimoe_gemm_row_lanes`, Sources/CKernels/GemmRowLanes.c).
///
/// Why a third product beside sgemm and `GemmNT`: at ~32 rows sgemm spends about a third of its
/// time packing the weight matrix, which it does on every call, and `GemmNT`'s dot-product tiles
/// re-read the activation from L2 for every 4 weight rows. Here the activation is transposed once
/// (32 rows × 1024: 128 KB), each weight is broadcast from its row as it streams past once, and a
/// tile of 12 weight rows covers all 32 rows in 24 registers.
///
/// Measured on one thread of the bench machine, 8 different 2816 × 1024 weights in turn (so they
/// stream from memory), GFLOP/s (sgemm / `GemmNT` / this): 32 rows 64 / 84 / 92, 48 rows
/// 81 / 93 / 118, 64 rows 66 / 74 / 88; at 12–20 rows `GemmNT` is ahead (49–71 against 27–43),
/// so this one starts above its limit. Bench model f32 prefill (2 threads, 19 interleaved rounds
/// in one process, sgemm already split over the pool): 269 tokens/s mean against 250 with sgemm
/// above 24 rows, 264 with `GemmNT` up to 64 rows; again with the final wiring, 266 against 243.
/// Taking up to 128 rows in 64-row chunks (1.1–1.2× sgemm at 96–128 rows on one thread) read 264
/// against 266 over 19 rounds each, so it stops at 64. Nor did chunking inside each weight tile
/// pay (the tile against every 64-row chunk in turn, so the weights come from memory once): on one
/// thread 1.1–1.25× sgemm at 65–128 rows for 2816 × 1024 weights but 0.87–1.08× for 1024 × 2816,
/// whose x^T outgrows L2, and end to end 240 against 245 tokens/s over 14 interleaved rounds.
///
/// Without AVX-512 (AVX2 + FMA) the kernel takes 9–64 rows in 8-lane vectors, walking k in blocks
/// (GemmRowLanes.c), and `GemmNT` does not run, so it starts above the mat-vec. On a Zen 3 EPYC,
/// one thread, 8 different 2816 × 1024 weights in turn, GFLOP/s against sgemm: 8 rows 28 / 25,
/// 16 rows 48 / 37, 24 rows 66–76 / 47–51, 32 rows 71–77 / 54–58, 48 rows 66–70 / 62–68, 64 rows
/// 72–78 / 69–70; 32 rows of the 1024 × 2816 down projection 77–80 / 65–66.
public enum GemmRowLanes {
    /// The fewest rows sent here: fewer go to `GemmNT` where it runs (faster there), else to the
    /// mat-vec.
    public static let minRows = (GemmNT.available ? GemmNT.maxRowsF32 : MatVec.maxRows) + 1
    /// The most rows the kernel takes on this CPU: 64 (four 16-lane vectors with AVX-512, eight
    /// 8-lane ones with AVX2), 0 without either.
    public static let maxRows = unimoe_gemm_row_lanes_max_rows()

    /// Whether this CPU runs the kernel (AVX-512, or AVX2 with FMA).
    public static let available = maxRows > 0
    /// Whether it also reads bf16 / f16 weights: on the AVX2 path, where `GemmNT` (which takes
    /// them with AVX-512) does not run, instead of widening whole blocks for sgemm.
    public static let reads16Bit = available && !GemmNT.available

    /// Whether `Linear` sends a product of `rows` rows with weights stored as `dtype` here.
    public static func takes(rows: Int, dtype: DType) -> Bool {
        available && rows >= minRows && rows <= maxRows && reads(dtype)
    }

    private static func reads(_ dtype: DType) -> Bool {
        dtype == .f32 || (reads16Bit && (dtype == .bf16 || dtype == .f16))
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ` (no bias) for W `[out, in]` (f32; bf16 / f16 where
    /// `reads16Bit`), rows of x and y contiguous, up to 64 rows; output rows split over
    /// `Parallel.threads`. The transposed activation goes to this thread's `.input` scratch.
    /// Returns false, writing nothing, when the kernel cannot run here. Allocates nothing once the
    /// scratch has grown.
    @discardableResult
    public static func forward(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor,
                               into y: UnsafeMutablePointer<Float>) -> Bool {
        guard available, reads(weight.dtype), let code = GemmNT.code(weight.dtype), weight.rank == 2,
              rows <= maxRows else { return false }
        let outF = weight.shape[0], inF = weight.shape[1]
        guard rows * outF <= Int(Int32.max) else { return false }
        if rows <= 0 || outF == 0 { return true }
        let xt = ThreadScratch.floats(.input, count: unimoe_gemm_row_lanes_packed_count(rows, inF))
        unimoe_gemm_row_lanes_pack(x, rows, inF, inF, xt)
        // Outputs are independent lanes, so any split gives the same bits; whole 72-output runs keep
        // the tiles (24, 12, 8 or 6 outputs) and the AVX2 path's 36-output blocks full.
        let runs = (outF + 71) / 72
        let tasks = max(1, min(Parallel.threads, runs))
        Parallel.forEach(tasks: tasks, job: Job(xt: xt, rows: rows, weight: UnsafeRawPointer(weight.raw), dtype: code,
                                                inF: inF, outF: outF, runsPerTask: (runs + tasks - 1) / tasks, y: y))
        return true
    }

    /// One task: a run of output rows. A value so that handing it to the pool allocates nothing.
    private struct Job: ParallelJob {
        let xt: UnsafePointer<Float>, rows: Int
        let weight: UnsafeRawPointer, dtype: Int32, inF: Int, outF: Int, runsPerTask: Int
        let y: UnsafeMutablePointer<Float>

        func run(task: Int, worker: Int) {
            let o0 = min(outF, task * runsPerTask * 72), o1 = min(outF, o0 + runsPerTask * 72)
            _ = unimoe_gemm_row_lanes(xt, rows, weight, dtype, inF, o0, o1, y, outF)
        }
    }
}
