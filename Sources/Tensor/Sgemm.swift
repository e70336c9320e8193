import COpenBLAS

/// Row-major `C = alpha · op(A) · op(B) + beta · C` through OpenBLAS, split over our worker pool.
///
/// Why not OpenBLAS's own threads: a process then has two thread pools, and both spin for a while
/// after each job (OpenBLAS's workers ~0.1 s with `sched_yield`, ours ~1 ms). A prefill alternates
/// sgemm (attention projections) with pool jobs (experts, attention) every layer, so on two cores
/// three threads kept fighting: 13% of the prefill's samples were in `sched_yield`. OpenBLAS is
/// kept at one thread (`unimoe_openblas_single_thread`, before main) and every sgemm goes through here: C is cut into as many
/// column runs (or row runs, when it is narrow) as there are threads, each one single-threaded
/// sgemm. Bench model f32 prefill, 19–20 interleaved rounds in one process: 250 tokens/s mean
/// against 211 with OpenBLAS's threads; three (f32) and two (bf16) interleaved `unimoe bench lm` runs
/// against the build before: f32 265–305 against 218–286, bf16 272–300 against 210–271.
///
/// The cut depends on C's shape only, never on the thread count: OpenBLAS's AVX2 kernels (`Haswell`,
/// `Zen`) sum an element differently depending on the width of the call it falls in and on where
/// in it it lies (a 37×300×70 product cut 160 + 140 differed from the whole in 3526 of 11100
/// elements on a Zen 3 EPYC), so a cut per thread gave 1, 2 and 3 threads different bits there
/// (`SkylakeX`'s kernels happened not to). Runs are a power of two up to `maxRuns`, at least
/// `minRun` wide: they divide evenly over 1, 2, 4 … threads, and a product cut into 8 or 16 runs
/// of 128–176 columns ran as fast on one thread as one call (128 × 1024 × 1024 and
/// 128 × 2816 × 1024 on that EPYC). A call from inside a pool job (one expert per thread) runs its
/// runs one after another on that thread.
public enum Sgemm {
    /// Runs no narrower than this many columns (or rows): narrower calls lose to packing A again
    /// (64-column runs of a 128 × 256 × 1024 product: 1.13× the time of one call on one thread).
    static let minRun = 128
    /// The most runs a product is cut into, so more threads than this share no product.
    static let maxRuns = 16

    /// How many runs a product whose cut dimension is `length` long is cut into: the largest power
    /// of two up to `maxRuns` whose runs are at least `minRun` long (1 below 2 · `minRun`).
    static func runs(length: Int) -> Int {
        var runs = 1
        while runs * 2 <= maxRuns && length / (runs * 2) >= minRun { runs *= 2 }
        return runs
    }

    /// `C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C`, row-major with leading dimensions
    /// (op = transpose where asked), cut into `runs(length:)` runs of C's columns, or of its rows
    /// when C is taller than wide, spread over the pool.
    public static func product(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                               a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
                               c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m <= 0 || n <= 0 { return }
        OpenBLASCore.ensureSelected()
        let byColumns = n >= m
        let runs = runs(length: byColumns ? n : m)
        let job = Job(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                      beta: beta, c: c, ldc: ldc, byColumns: byColumns, runs: runs)
        if runs == 1 { job.run(task: 0, worker: 0) } else { Parallel.forEach(tasks: runs, job: job) }
    }

    /// One run of columns (or rows) of C. A value so that handing it to the pool allocates nothing.
    private struct Job: ParallelJob {
        let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float
        let a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float
        let c: UnsafeMutablePointer<Float>, ldc: Int
        let byColumns: Bool, runs: Int

        func run(task: Int, worker: Int) {
            let length = byColumns ? n : m
            // Even runs in whole 16-element steps.
            let step = (length + runs * 16 - 1) / (runs * 16) * 16
            let from = min(length, task * step), to = min(length, from + step)
            if to <= from { return }
            var a = self.a, b = self.b, rows = m, columns = n
            if byColumns {
                b += transB ? from * ldb : from     // op(B) columns `from..<to`: rows of Bᵀ or columns of B
                columns = to - from
            } else {
                a += transA ? from : from * lda     // op(A) rows `from..<to`
                rows = to - from
            }
            let out = byColumns ? c + from : c + from * ldc
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(rows), Int32(columns), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, out, Int32(ldc))
        }
    }
}
