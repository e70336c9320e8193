import CKernels

/// The decode-time matrix product: `y[r, o] = Σ_i x[r, i] · W[o, i]` for a few rows r (1…8).
///
/// Why it exists: with one or a few activation rows the product is bound by memory bandwidth, not
/// arithmetic — every weight is used once per row. `cblas_sgemm` with m = 1 is not tuned for that,
/// and a bf16/f16 weight would first have to be widened into a buffer (read 2 bytes, write 4, read
/// 4 again). This kernel streams each weight row once, in its stored dtype, widening in registers,
/// and splits the output rows over the worker pool.
///
/// Lane order trick for bf16 weights: 16 weights are loaded as 8 `UInt32` words; `w << 16` gives
/// the even elements and `w & 0xFFFF0000` the odd ones as f32 (bf16 is the top half of an f32).
/// The activation is re-laid-out once per call to the same even/odd order, so the inner loop is
/// two bit operations and two FMAs per 16 weights. f16 weights keep the natural order: Swift 6.3
/// compiles the `SIMD8<Float16>` → `SIMD8<Float>` conversion to F16C's `vcvtph2ps`. (f16 rows
/// used to be widened 4 at a time into an f32 scratch buffer first, which the tiles' prefetch did
/// not cover: 0.39–0.52 of the bandwidth ceiling in `unimoe bench kernels`, against 1.06–1.07 in
/// registers, as bf16.)
enum MatVec {
    /// Largest row count this kernel is used for; more rows go to sgemm.
    static let maxRows = 8

    /// Whether each chunk goes through `GemmNT`'s kernel (`unimoe_gemm_nt`: 512-bit vectors, the
    /// same prefetches) rather than the Swift tiles below (the package's CPU level is AVX2, so SIMD8
    /// halves), which remain for CPUs without AVX-512. In interleaved f32 decodes of the bench model
    /// (2 threads) 22.9–26.6 tokens/s against 20.5–24.6, f16 +4%, bf16 +3%; and a row now gets the
    /// same bits here as in `GemmNT` (prefill, batches of 9+ rows). A `var` so tests can hold the
    /// two paths to each other.
    nonisolated(unsafe) static var avx512 = GemmNT.available

    /// Computes `count` independent products `y = x · Wᵀ (+ bias)` (`product(i)`, each with
    /// 1…`maxRows` rows, contiguous on both sides) in one parallel region: their output-row chunks
    /// are the tasks of a single job, so the pool synchronises once instead of once per product,
    /// and a thread that finishes its share of one weight goes straight on to the next instead of
    /// idling at a barrier (an expert's gate and up, all experts of a layer, q/k/v). Products of one 16-bit or f32 dtype share the job;
    /// q8_0 or mixed dtypes run one after another. (q8_0 products in one job too, each distinct
    /// activation quantised once up front, decoded the bench model no faster on Zen 3: 88.5–104.1
    /// tokens/s against 99.9–103.1, five interleaved pairs.)
    static func forwardAll(count: Int, _ product: (Int) -> Linear.Product) {
        if count == 0 { return }
        let dtype = product(0).weight.dtype
        var same = true
        for i in 1..<count where product(i).weight.dtype != dtype { same = false }
        if !same || dtype == .q8_0 {
            for i in 0..<count {
                let p = product(i)
                if p.weight.dtype == .q8_0 {
                    MatVecQ8.forward(p.x, rows: p.rows, weight: p.weight, bias: p.bias, into: p.y)
                } else {
                    forwardAll(count: 1) { _ in p }
                }
            }
            return
        }
        switch dtype {
        case .f32: run(F32Weights.self, count, product)
        case .bf16: run(BF16Weights.self, count, product)
        case .f16: run(F16Weights.self, count, product)
        case .q8_0: preconditionFailure("q8_0 products run by MatVecQ8")
        }
    }

    /// A product laid out for the job: its weight, chunking and first task.
    struct Plan {
        let w: UnsafeRawPointer, wStride: Int, outF: Int
        let chunk: Int, firstTask: Int, tasks: Int
        let a: Operands, y: UnsafeMutablePointer<Float>
        let bias: (UnsafeRawPointer, DType)?
    }

    private static func run<L: WeightLanes>(_ l: L.Type, _ count: Int, _ product: (Int) -> Linear.Product) {
        var work = 0, relaid = 0
        for i in 0..<count {
            let p = product(i)
            work += p.weight.shape[0] * p.weight.shape[1] * p.rows
            if L.splitsPairs { relaid += p.rows * splitStride(p.weight.shape[1]) }
        }
        let threads = work >= 1 << 16 ? Parallel.threads : 1
        // Activations in the weight's lane order (bf16 only; f32 and f16 keep the natural
        // order), each distinct activation once.
        let buf = relaid > 0 ? ThreadScratch.floats(.input, count: relaid) : nil
        withUnsafeTemporaryAllocation(of: Plan.self, capacity: count) { plans in
            var used = 0, tasks = 0
            var last: (x: UnsafePointer<Float>, rows: Int, k: Int, at: UnsafePointer<Float>)?
            for i in 0..<count {
                let p = product(i)
                let outF = p.weight.shape[0], inF = p.weight.shape[1], kMain = inF & ~15
                var xp = p.x, ldxp = inF
                let stride = splitStride(inF)
                if let buf, stride > 0 {
                    if let l = last, l.x == p.x, l.rows == p.rows, l.k == inF {
                        xp = l.at
                    } else {
                        let at = buf + used
                        if avx512 {
                            GemmNT.splitPairs(p.x, rows: p.rows, k: inF, into: at)
                        } else {
                            for r in 0..<p.rows { splitPairs(p.x + r * inF, count: kMain, into: at + r * stride) }
                        }
                        used += p.rows * stride
                        xp = UnsafePointer(at)
                        last = (p.x, p.rows, inF, xp)
                    }
                    ldxp = stride
                }
                // Chunks of output rows, multiples of 4 so the 4-row tile applies; a few per thread for balance.
                let parts = threads == 1 ? 1 : min(threads * 4, max(1, outF / 16))
                let chunk = ((outF + parts - 1) / parts + 3) & ~3
                let n = (outF + chunk - 1) / chunk
                let a = Operands(x: xp, ldx: ldxp, xTail: p.x, ldxTail: inF, rows: p.rows, kMain: kMain, k: inF, ldy: outF)
                (plans.baseAddress! + i).initialize(to: Plan(
                    w: UnsafeRawPointer(p.weight.raw), wStride: inF * L.bytes, outF: outF,
                    chunk: chunk, firstTask: tasks, tasks: n, a: a, y: p.y,
                    bias: p.bias.map { (UnsafeRawPointer($0.raw), $0.dtype) }))
                tasks += n
            }
            Parallel.forEach(tasks: tasks, job: Sweep<L>(plans: UnsafePointer(plans.baseAddress!), count: count))
            plans.baseAddress!.deinitialize(count: count)
        }
    }

    /// One task of `run`: a chunk of one product's output rows against its activation rows, plus
    /// the bias. A value (not a closure) so that handing it to the pool allocates nothing.
    private struct Sweep<L: WeightLanes>: ParallelJob {
        let plans: UnsafePointer<Plan>, count: Int

        func run(task: Int, worker: Int) {
            var i = 0
            while i + 1 < count && task >= plans[i + 1].firstTask { i += 1 }
            let p = plans[i]
            let o0 = (task - p.firstTask) * p.chunk, o1 = min(p.outF, o0 + p.chunk)
            let (w, wStride, a, y) = (p.w, p.wStride, p.a, p.y)
            // The kernel reads bf16 against the pair-split activation, other dtypes the natural one.
            let (x, ldx) = L.splitsPairs ? (a.x, a.ldx) : (a.xTail, a.ldxTail)
            if !avx512 || unimoe_gemm_nt(x, a.rows, ldx, w, GemmNT.code(L.dtype)!, a.k, o0, o1, y, a.ldy) == 0 {
                sweep(L.self, w + o0 * wStride, wStride, o1 - o0, a, y + o0)
            }
            if let (bp, bt) = p.bias {
                for r in 0..<a.rows {
                    let yr = y + r * a.ldy
                    for o in o0..<o1 { yr[o] += loadScalar(bp, bt, o) }
                }
            }
        }
    }

    /// The activation side of one product, shared by every tile.
    struct Operands {
        let x: UnsafePointer<Float>, ldx: Int          // in the weight's lane order
        let xTail: UnsafePointer<Float>, ldxTail: Int  // natural order, for the k % 16 tail
        let rows: Int, kMain: Int, k: Int, ldy: Int
    }

    /// `n` consecutive weight rows starting at `w` against every activation row, into `y[·, 0..<n]`.
    @inline(__always)
    private static func sweep<L: WeightLanes>(_ l: L.Type, _ w: UnsafeRawPointer, _ wStride: Int, _ n: Int,
                                              _ a: Operands, _ y: UnsafeMutablePointer<Float>) {
        let (xp, ldxp, x, ldx, kMain, inF, ldy) = (a.x, a.ldx, a.xTail, a.ldxTail, a.kMain, a.k, a.ldy)
        var r = 0
        while r < a.rows {
            let g = min(4, a.rows - r)
            let xr = xp + r * ldxp, xt = x + r * ldx, yr = y + r * ldy
            var o = 0
            switch g {
            case 1:
                if inF >= L.rowByRowBelow {
                    while o + 4 <= n { tile(L.self, T4x1.self, w + o * wStride, wStride, xr, ldxp, xt, ldx, kMain, inF, yr + o, ldy); o += 4 }
                }
                while o < n { tileRow(L.self, w + o * wStride, wStride, xr, xt, kMain, inF, yr + o); o += 1 }
            case 2:
                while o + 2 <= n { tile(L.self, T2x2.self, w + o * wStride, wStride, xr, ldxp, xt, ldx, kMain, inF, yr + o, ldy); o += 2 }
                while o < n { tile(L.self, T1x2.self, w + o * wStride, wStride, xr, ldxp, xt, ldx, kMain, inF, yr + o, ldy); o += 1 }
            case 3:
                while o < n { tile(L.self, T1x3.self, w + o * wStride, wStride, xr, ldxp, xt, ldx, kMain, inF, yr + o, ldy); o += 1 }
            default:
                while o < n { tile(L.self, T1x4.self, w + o * wStride, wStride, xr, ldxp, xt, ldx, kMain, inF, yr + o, ldy); o += 1 }
            }
            r += g
        }
    }

    /// 16-bit (f16, bf16) weight rows shorter than this many elements go one at a time through
    /// `tileRow` when one activation row is swept (their `WeightLanes.rowByRowBelow`). Zen 3 (AVX2,
    /// 2 threads), the kernel bench's streamed f16 mat-vec, two runs each: 2816×1024 27.8 / 25.2
    /// GB/s row by row against 23.7 / 19.4 in 4-row tiles, 1024×1024 26.5 / 22.6 against
    /// 22.3 / 23.0; but 1024×2816 (k = 2816) lost, 29.4 / 24.3 against 32.8 / 25.9 (a first variant
    /// with four accumulator pairs). bf16, the same bench: 2816×1024 26.6–30.5 against 23.5–27.6,
    /// 1024×1024 27.4–30.0 against 24.0–25.1 (three runs each); whole bf16 decodes of the bench
    /// model 45.2–58.0 tokens/s against 40.9–53.8, better in 10 of 10 interleaved pairs (an earlier
    /// trial, five pairs, read even). f32 was no better (25.8–32.7 against 25.8–35.8; again
    /// 28.2–33.2 against 26.7–37.2, five pairs): it keeps the 4-row tiles.
    static let rowByRowBelow = 2048

    /// One weight row against one activation row (every row of short 16-bit weights, the last
    /// n % 4 rows of the others), with the 4-row tile's sums (one accumulator pair fed in k order,
    /// `finish`), so the same bits; unrolled 4× with one prefetch call per 64 elements, for the same
    /// offset of the next row. One weight stream per thread instead of four:
    /// f16 decode of the bench model (Zen 3, 2 threads, interleaved pairs) 51.3–58.9 tokens/s
    /// against 45.2–55.0 for the 4-row tiles, 6 of 6 pairs; with four accumulator pairs no faster,
    /// with the generic tile's prefetch every 64 bytes 39–44.
    @inline(__always)
    private static func tileRow<L: WeightLanes>(_ l: L.Type, _ w: UnsafeRawPointer, _ wStride: Int,
                                                _ x: UnsafePointer<Float>, _ xTail: UnsafePointer<Float>,
                                                _ kMain: Int, _ k: Int, _ y: UnsafeMutablePointer<Float>) {
        let z = SIMD8<Float>(repeating: 0)
        var c = (z, z)
        var i = 0
        while i + 64 <= kMain {
            unimoe_prefetch_rows(w + wStride + i * L.bytes, 64, L.bytes)
            fma(&c, L.load16(w, i), load8x2(x + i))
            fma(&c, L.load16(w, i + 16), load8x2(x + i + 16))
            fma(&c, L.load16(w, i + 32), load8x2(x + i + 32))
            fma(&c, L.load16(w, i + 48), load8x2(x + i + 48))
            i += 64
        }
        while i < kMain { fma(&c, L.load16(w, i), load8x2(x + i)); i += 16 }
        finish(L.self, c, 0, 0, (w, wStride, xTail, 0, kMain, k, y, 0))
    }

    /// Element `i` of a bias vector (f32/bf16/f16; q8_0 tensors are matrices, never biases).
    @inline(__always)
    static func loadScalar(_ p: UnsafeRawPointer, _ dtype: DType, _ i: Int) -> Float {
        switch dtype {
        case .f32: return p.load(fromByteOffset: i * 4, as: Float.self)
        case .bf16: return Convert.bf16ToF32(p.load(fromByteOffset: i * 2, as: UInt16.self))
        case .f16: return Convert.f16ToF32(p.load(fromByteOffset: i * 2, as: UInt16.self))
        case .q8_0: preconditionFailure("a bias cannot be q8_0 (checkpoints hold q8_0 matrices only)")
        }
    }

    /// The row stride of a pair-split activation of `k` elements: `GemmNT.pairedStride` for its
    /// kernel, the whole 16-element blocks for the Swift tiles (`splitPairs`).
    static func splitStride(_ k: Int) -> Int { avx512 ? GemmNT.pairedStride(k) : k & ~15 }

    /// Re-lays 16-element blocks as [even elements, odd elements] (the 16-bit weights' lane order).
    @inline(__always)
    static func splitPairs(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i < count {
            for j in 0..<8 {
                out[i + j] = x[i + 2 * j]
                out[i + 8 + j] = x[i + 2 * j + 1]
            }
            i += 16
        }
    }

    /// One tile: `o` consecutive output rows × `g` activation rows, o·g ≤ 4, each accumulator two
    /// SIMD8 halves. `o` and `g` are constants at every call site, so after inlining the branches
    /// fold away and each (o, g) becomes its own straight loop.
    @inline(__always)
    private static func tile<L: WeightLanes, T: TileShape>(_ l: L.Type, _ t: T.Type,
                                             _ w: UnsafeRawPointer, _ wStride: Int,
                                             _ x: UnsafePointer<Float>, _ ldx: Int,
                                             _ xTail: UnsafePointer<Float>, _ ldxTail: Int,
                                             _ kMain: Int, _ k: Int,
                                             _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        let o = T.o, g = T.g
        let z = SIMD8<Float>(repeating: 0)
        var c0 = (z, z), c1 = (z, z), c2 = (z, z), c3 = (z, z)
        var i = 0
        while i < kMain {
            // One prefetch per 64-byte line of each weight row: the same line of the next tile's rows
            // (a call on purpose: CKernels.h says why).
            if (i * L.bytes) & 63 == 0 { unimoe_prefetch_rows(w + o * wStride + i * L.bytes, wStride, o) }
            let x0 = load8x2(x + i)
            if o == 4 {
                let w0 = L.load16(w, i), w1 = L.load16(w + wStride, i)
                let w2 = L.load16(w + 2 * wStride, i), w3 = L.load16(w + 3 * wStride, i)
                fma(&c0, w0, x0); fma(&c1, w1, x0); fma(&c2, w2, x0); fma(&c3, w3, x0)
            } else if o == 2 {
                let w0 = L.load16(w, i), w1 = L.load16(w + wStride, i)
                fma(&c0, w0, x0); fma(&c2, w1, x0)
                if g > 1 { let x1 = load8x2(x + ldx + i); fma(&c1, w0, x1); fma(&c3, w1, x1) }
            } else {
                let w0 = L.load16(w, i)
                fma(&c0, w0, x0)
                if g > 1 { fma(&c1, w0, load8x2(x + ldx + i)) }
                if g > 2 { fma(&c2, w0, load8x2(x + 2 * ldx + i)) }
                if g > 3 { fma(&c3, w0, load8x2(x + 3 * ldx + i)) }
            }
            i += 16
        }
        // Horizontal sums, scalar tail over the last k % 16 elements, store.
        let a = (w, wStride, xTail, ldxTail, kMain, k, y, ldy)
        if o == 4 {
            finish(L.self, c0, 0, 0, a); finish(L.self, c1, 1, 0, a); finish(L.self, c2, 2, 0, a); finish(L.self, c3, 3, 0, a)
        } else if o == 2 {
            finish(L.self, c0, 0, 0, a); finish(L.self, c2, 1, 0, a)
            if g > 1 { finish(L.self, c1, 0, 1, a); finish(L.self, c3, 1, 1, a) }
        } else {
            finish(L.self, c0, 0, 0, a)
            if g > 1 { finish(L.self, c1, 0, 1, a) }
            if g > 2 { finish(L.self, c2, 0, 2, a) }
            if g > 3 { finish(L.self, c3, 0, 3, a) }
        }
    }

    /// Horizontal sum of one accumulator, the scalar tail over the last k % 16 elements, store.
    @inline(__always)
    private static func finish<L: WeightLanes>(_ l: L.Type, _ c: (SIMD8<Float>, SIMD8<Float>), _ oi: Int, _ gi: Int,
                                               _ a: (UnsafeRawPointer, Int, UnsafePointer<Float>, Int, Int, Int, UnsafeMutablePointer<Float>, Int)) {
        let (w, wStride, xTail, ldxTail, kMain, k, y, ldy) = a
        var s = (c.0 + c.1).sum()
        let wr = w + oi * wStride, xr = xTail + gi * ldxTail
        for t in kMain..<k { s += L.load1(wr, t) * xr[t] }
        y[gi * ldy + oi] = s
    }

    @inline(__always)
    private static func load8x2(_ p: UnsafePointer<Float>) -> (SIMD8<Float>, SIMD8<Float>) {
        let r = UnsafeRawPointer(p)
        return (r.loadUnaligned(as: SIMD8<Float>.self), r.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
    }

    @inline(__always)
    private static func fma(_ c: inout (SIMD8<Float>, SIMD8<Float>), _ w: (SIMD8<Float>, SIMD8<Float>),
                            _ x: (SIMD8<Float>, SIMD8<Float>)) {
        #if UNIMOE_FMA
        c.0.addProduct(w.0, x.0)
        c.1.addProduct(w.1, x.1)
        #else
        c.0 += w.0 * x.0
        c.1 += w.1 * x.1
        #endif
    }
}

/// Output rows × activation rows of one tile, as types so that generic specialisation turns them
/// into constants (plain arguments were not reliably inlined).
protocol TileShape { static var o: Int { get }; static var g: Int { get } }
enum T4x1: TileShape { static var o: Int { 4 }; static var g: Int { 1 } }
enum T2x2: TileShape { static var o: Int { 2 }; static var g: Int { 2 } }
enum T1x2: TileShape { static var o: Int { 1 }; static var g: Int { 2 } }
enum T1x3: TileShape { static var o: Int { 1 }; static var g: Int { 3 } }
enum T1x4: TileShape { static var o: Int { 1 }; static var g: Int { 4 } }

/// How one weight dtype is read: 16 elements as two SIMD8<Float> halves (in `splitsPairs` order
/// for 16-bit types), or one element as a scalar (tails).
protocol WeightLanes {
    static var bytes: Int { get }
    static var splitsPairs: Bool { get }
    /// The storage dtype these lanes read (which `GemmNT`'s kernel is told).
    static var dtype: DType { get }
    /// Rows shorter than this go through `tileRow` one at a time when one activation row is swept
    /// (4-row tiles otherwise): `MatVec.rowByRowBelow` for 16-bit weights, 0 for f32.
    static var rowByRowBelow: Int { get }
    static func load16(_ row: UnsafeRawPointer, _ i: Int) -> (SIMD8<Float>, SIMD8<Float>)
    static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float
}

enum F32Weights: WeightLanes {
    static var bytes: Int { 4 }
    static var splitsPairs: Bool { false }
    static var dtype: DType { .f32 }
    static var rowByRowBelow: Int { 0 }
    @inline(__always) static func load16(_ row: UnsafeRawPointer, _ i: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        (row.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self),
         row.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self))
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        row.load(fromByteOffset: i * 4, as: Float.self)
    }
}

enum BF16Weights: WeightLanes {
    static var bytes: Int { 2 }
    static var splitsPairs: Bool { true }
    static var dtype: DType { .bf16 }
    static var rowByRowBelow: Int { MatVec.rowByRowBelow }
    @inline(__always) static func load16(_ row: UnsafeRawPointer, _ i: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        let u = row.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt32>.self)
        return (unsafeBitCast(u &<< 16, to: SIMD8<Float>.self),
                unsafeBitCast(u & SIMD8(repeating: 0xFFFF_0000), to: SIMD8<Float>.self))
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        Convert.bf16ToF32(row.load(fromByteOffset: i * 2, as: UInt16.self))
    }
}

/// f16 weights: each 8 halves widened in registers (F16C `vcvtph2ps` on x86), as bf16 is.
enum F16Weights: WeightLanes {
    static var bytes: Int { 2 }
    static var splitsPairs: Bool { false }
    static var dtype: DType { .f16 }
    static var rowByRowBelow: Int { MatVec.rowByRowBelow }
    @inline(__always) static func load16(_ row: UnsafeRawPointer, _ i: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        (SIMD8<Float>(row.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<Float16>.self)),
         SIMD8<Float>(row.loadUnaligned(fromByteOffset: i * 2 + 16, as: SIMD8<Float16>.self)))
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        Convert.f16ToF32(row.load(fromByteOffset: i * 2, as: UInt16.self))
    }
}
