import CKernels

/// The decode-time matrix product for q8_0 weights (`DType.q8_0`, see `Q8`), llama.cpp's way:
/// each activation row is quantised to q8_0 once per call, then
/// `y[r, o] = Σ_b d_w[o, b] · d_x[r, b] · Σ_j q_w[o, 32b + j] · q_x[r, 32b + j]`
/// with the inner sums exact in int32 (`unimoe_q8_dot`, Sources/CKernels).
///
/// Why its own kernel: decode is bound by the bytes of weights read, and a q8_0 row is 34 bytes per
/// 32 weights (half of bf16). Widening every weight to f32 costs more instructions per byte than
/// two cores can retire at memory speed; the int8 multiply-add (`vpmaddubsw` + `vpmaddwd`) handles
/// 32 weights in four instructions, and no dequantised copy of a weight is ever written.
enum MatVecQ8 {
    /// Computes `y[r, o] = q8(x[r, ·]) · W[o, ·] (+ bias[o])` for W `[out, in]` q8_0 (in % 32 == 0),
    /// rows of x and y contiguous.
    static func forward(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, bias: Tensor?,
                        into y: UnsafeMutablePointer<Float>) {
        let outF = weight.shape[0], inF = weight.shape[1], blocks = inF / Q8.block, ldy = outF
        let b = bias.map { (UnsafeRawPointer($0.raw), $0.dtype) }
        // The quantised activation rows, prepared on this thread before the parallel job: int8
        // quants (rows × in), then f16 scales (rows × blocks).
        let bytes = rows * inF + rows * blocks * 2
        let buffer = UnsafeMutableRawPointer(ThreadScratch.floats(.input, count: (bytes + 3) / 4))
        buffer.withMemoryRebound(to: Int8.self, capacity: rows * inF) { xq in
            (buffer + rows * inF).withMemoryRebound(to: UInt16.self, capacity: rows * blocks) { xd in
                unimoe_q8_quantize(x, rows * blocks, xq, xd)
                weight.withQ8 { q, d in
                    d.withMemoryRebound(to: UInt16.self, capacity: outF * blocks) { d in
                        let threads = outF * inF * rows >= 1 << 16 ? Parallel.threads : 1
                        // Chunks of output rows, a few per thread for balance.
                        let tasks = threads == 1 ? 1 : min(threads * 4, max(1, outF / 16))
                        let chunk = (outF + tasks - 1) / tasks
                        Parallel.forEach(tasks: (outF + chunk - 1) / chunk,
                                         job: Dot(q: q, d: d, blocks: blocks, outF: outF, chunk: chunk, xq: UnsafePointer(xq),
                                                  xd: UnsafePointer(xd), rows: rows, y: y, ldy: ldy, bias: b))
                    }
                }
            }
        }
    }

    /// One task: a chunk of output rows (`unimoe_q8_dot`), plus the bias. A value so that handing
    /// it to the pool allocates nothing.
    private struct Dot: ParallelJob {
        let q: UnsafePointer<Int8>, d: UnsafePointer<UInt16>, blocks: Int, outF: Int, chunk: Int
        let xq: UnsafePointer<Int8>, xd: UnsafePointer<UInt16>, rows: Int
        let y: UnsafeMutablePointer<Float>, ldy: Int
        let bias: (UnsafeRawPointer, DType)?

        func run(task: Int, worker: Int) {
            let o0 = task * chunk, o1 = min(outF, o0 + chunk)
            unimoe_q8_dot(q, d, blocks, o0, o1, xq, xd, rows, y, ldy)
            if let (bp, bt) = bias {
                for r in 0..<rows {
                    let yr = y + r * ldy
                    for o in o0..<o1 { yr[o] += MatVec.loadScalar(bp, bt, o) }
                }
            }
        }
    }
}
