import COpenBLAS
import Foundation
import Options
import Tensor

/// `unimoe bench kernels`: matmul throughput against raw `cblas_sgemm`, bf16/f16/q8_0 weights against
/// f32, and the machine's memory bandwidth (the roofline every decode figure is compared with).
enum BenchKernels {
    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["threads", "shapes"], flags: ["quick", "hot"])
        let threads = try a.int("threads", default: 2, range: 1...256) ?? 2
        let quick = a.has("quick")
        Linear.setThreads(threads)
        // Weights of a 7B layer, [out, in]; the rows=1 case streams enough copies to leave the L3.
        var shapes = [(4096, 4096), (11008, 4096)]
        if let s = a.value("shapes") {
            shapes = try s.split(separator: ",").map { p in
                let d = p.split(separator: "x").compactMap { Int($0) }
                guard d.count == 2, d[0] > 0, d[1] > 0 else { throw UsageError("--shapes needs OUTxIN,…, got '\(p)'") }
                return (d[0], d[1])
            }
        }
        let streamBytes = quick ? 1 << 28 : 1 << 29
        let rep = quick ? 3 : 5

        let bw1 = MemoryBandwidth.read(threads: 1, bytes: streamBytes * 2)
        let copy1 = copyBandwidth(bytes: streamBytes)
        printLine(BenchReport.line("memory read bandwidth threads=1", ours: bw1 / 1e9, reference: copy1 / 1e9,
                                   unit: "GB/s", refLabel: "memcpy read+write, threads=1"))
        let bwN = MemoryBandwidth.read(threads: threads, bytes: streamBytes * 2)
        printLine(BenchReport.line("memory read bandwidth threads=\(threads)", ours: bwN / 1e9, reference: bw1 / 1e9,
                                   unit: "GB/s", refLabel: "threads=1"))

        // Fork-join cost of one parallel kernel call (decode makes ~150 per token).
        let noop = { (_: Int, _: Int) in }
        let tPool = BenchReport.time(repeats: rep, minSeconds: 0.05) { Parallel.forEach(tasks: threads, noop) }
        let tDispatch = BenchReport.time(repeats: rep, minSeconds: 0.05) {
            DispatchQueue.concurrentPerform(iterations: threads) { _ in }
        }
        printLine(BenchReport.line("parallel dispatch threads=\(threads)", ours: tPool * 1e6, reference: tDispatch * 1e6,
                                   unit: "us", refLabel: "DispatchQueue.concurrentPerform"))

        // SwiGLU activation over a prefill's worth of MLP rows (128 × 11008), vector vs libm expf.
        let actN = 128 * 11008
        let gate = randomBuffer(count: actN, seed: 5), up = randomBuffer(count: actN, seed: 6)
        defer { gate.deallocate(); up.deallocate() }
        let tAct = BenchReport.time(repeats: rep, minSeconds: 0.05) { Activations.siluMul(gate, up, count: actN) }
        let tActRef = BenchReport.time(repeats: rep, minSeconds: 0.05) {
            for i in 0..<actN { let v = gate[i]; gate[i] = v / (1 + expf(-v)) * up[i] }
        }
        printLine(BenchReport.line("siluMul 128x11008", ours: Double(actN) / tAct / 1e9, reference: Double(actN) / tActRef / 1e9,
                                   unit: "Gelem/s", refLabel: "scalar expf loop"))

        // Decode attention: one query against a KV cache, GQA, vs per-head cblas_sgemv calls.
        for (heads, kvHeads, headDim, keys) in [(32, 8, 128, 1024), (16, 16, 64, 192)] {
            let q = randomBuffer(count: heads * headDim, seed: 7)
            let k = randomBuffer(count: keys * kvHeads * headDim, seed: 8), v = randomBuffer(count: keys * kvHeads * headDim, seed: 9)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: heads * headDim)
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: keys)
            defer { q.deallocate(); k.deallocate(); v.deallocate(); out.deallocate(); scores.deallocate() }
            let scale = 1 / Float(headDim).squareRoot()
            let tOurs = BenchReport.time(repeats: rep, minSeconds: 0.05) {
                Attention.forward(q: q, queries: 1, heads: heads, kvHeads: kvHeads, headDim: headDim, keys: k, values: v,
                                  keyCount: keys, causalOffset: keys - 1, scale: scale, scratch: scores, out: out)
            }
            let tRef = BenchReport.time(repeats: rep, minSeconds: 0.05) {
                let group = heads / kvHeads, ld = Int32(kvHeads * headDim)
                for h in 0..<heads {
                    let g = h / group
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(keys), Int32(headDim), scale, k + g * headDim, ld,
                                q + h * headDim, 1, 0, scores, 1)
                    Activations.softmax(scores, rows: 1, cols: keys)
                    cblas_sgemv(CblasRowMajor, CblasTrans, Int32(keys), Int32(headDim), 1, v + g * headDim, ld,
                                scores, 1, 0, out + h * headDim, 1)
                }
            }
            printLine(BenchReport.line("attention decode heads=\(heads) kv=\(kvHeads) d=\(headDim) keys=\(keys)",
                                       ours: tOurs * 1e6, reference: tRef * 1e6, unit: "us", refLabel: "per-head cblas_sgemv"))
        }

        for (outF, inF) in shapes {
            let name = "\(outF)x\(inF)"
            let flops1 = 2.0 * Double(outF * inF)
            // rows = 1: bandwidth-bound; several weight copies so every call streams from DRAM.
            // --hot: one copy, so small shapes measure the kernel's arithmetic speed from cache.
            let copies = a.has("hot") ? 1 : max(1, streamBytes / (outF * inF * 4))
            let f32 = (0..<copies).map { randomWeight([outF, inF], dtype: .f32, seed: UInt64($0 + 1)) }
            let x = randomBuffer(count: 128 * inF, seed: 99)
            let y = UnsafeMutablePointer<Float>.allocate(capacity: 128 * outF)
            defer { x.deallocate(); y.deallocate() }
            var k = 0
            let tOurs1 = BenchReport.time(repeats: rep) { Linear.forward(x, rows: 1, weight: f32[k % copies], into: y); k += 1 }
            let tBlas1 = OpenBLASCore.withOwnThreads(threads) {
                BenchReport.time(repeats: rep) { sgemm(x, rows: 1, f32[k % copies], y); k += 1 }
            }
            printLine(BenchReport.line("matmul f32 \(name) rows=1", ours: flops1 / tOurs1 / 1e9, reference: flops1 / tBlas1 / 1e9,
                                       unit: "GFLOP/s", refLabel: "cblas_sgemm"))
            printLine(BenchReport.line("matmul f32 \(name) rows=1 bandwidth", ours: Double(outF * inF * 4) / tOurs1 / 1e9,
                                       reference: bwN / 1e9, unit: "GB/s", refLabel: "read bandwidth threads=\(threads)"))
            let tOurs128 = BenchReport.time(repeats: rep) { Linear.forward(x, rows: 128, weight: f32[0], into: y) }
            let tBlas128 = OpenBLASCore.withOwnThreads(threads) { BenchReport.time(repeats: rep) { sgemm(x, rows: 128, f32[0], y) } }
            printLine(BenchReport.line("matmul f32 \(name) rows=128", ours: 128 * flops1 / tOurs128 / 1e9,
                                       reference: 128 * flops1 / tBlas128 / 1e9, unit: "GFLOP/s", refLabel: "cblas_sgemm"))

            for dtype in [DType.bf16, .f16, .q8_0] {
                // As many copies as make streamBytes in this dtype: the f32 copies converted would
                // total a half or a quarter of it, which a large last-level cache holds (260 MB on
                // the AVX-512 Xeons here, where q8_0 read as 46 GB/s from a 21 GB/s memory).
                let oneCopy = f32[0].converted(to: dtype)
                let narrowCopies = a.has("hot") ? 1 : max(1, streamBytes / oneCopy.storedBytes)
                let narrow = [oneCopy] + (1..<narrowCopies).map {
                    (($0 < copies) ? f32[$0] : randomWeight([outF, inF], dtype: .f32, seed: UInt64($0 + 1))).converted(to: dtype)
                }
                let tag = dtype.rawValue.lowercased(), bytes = Double(narrow[0].storedBytes)
                let tNarrow1 = BenchReport.time(repeats: rep) { Linear.forward(x, rows: 1, weight: narrow[k % narrowCopies], into: y); k += 1 }
                printLine(BenchReport.line("matmul \(tag) \(name) rows=1 time", ours: tNarrow1 * 1e3, reference: tOurs1 * 1e3,
                                           unit: "ms", refLabel: "ours, f32 weights"))
                printLine(BenchReport.line("matmul \(tag) \(name) rows=1 bandwidth", ours: bytes / tNarrow1 / 1e9,
                                           reference: bwN / 1e9, unit: "GB/s", refLabel: "read bandwidth threads=\(threads)"))
                if dtype == .bf16 {
                    let tNarrow128 = BenchReport.time(repeats: rep) { Linear.forward(x, rows: 128, weight: narrow[0], into: y) }
                    printLine(BenchReport.line("matmul \(tag) \(name) rows=128", ours: 128 * flops1 / tNarrow128 / 1e9,
                                               reference: 128 * flops1 / tOurs128 / 1e9, unit: "GFLOP/s", refLabel: "ours, f32 weights"))
                }
            }
        }
    }

    /// Raw `cblas_sgemm` for `y = x · Wᵀ`, the reference our matmul is measured against (called
    /// inside `OpenBLASCore.withOwnThreads`, so OpenBLAS threads it its own way).
    static func sgemm(_ x: UnsafePointer<Float>, rows: Int, _ w: Tensor, _ y: UnsafeMutablePointer<Float>) {
        let outF = w.shape[0], inF = w.shape[1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outF), Int32(inF),
                    1, x, Int32(inF), w.floats, Int32(inF), 0, y, Int32(outF))
    }

    /// memcpy throughput counting bytes read plus written (STREAM "copy"), one thread.
    static func copyBandwidth(bytes: Int) -> Double {
        let a = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let b = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { a.deallocate(); b.deallocate() }
        memset(a, 1, bytes); memset(b, 2, bytes)
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            memcpy(b, a, bytes)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        return 2 * Double(bytes) / best
    }

    /// Uniform values in [-1, 1) from a xorshift generator (fast enough for hundreds of MB).
    static func randomBuffer(count: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
        var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<count {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            p[i] = Float(Int32(truncatingIfNeeded: s >> 32)) * 0x1p-31
        }
        return p
    }

    static func randomWeight(_ shape: [Int], dtype: DType, seed: UInt64) -> Tensor {
        let t = Tensor(zeros: shape, dtype: .f32)
        let src = randomBuffer(count: t.count, seed: seed)
        t.floats.update(from: src, count: t.count)
        src.deallocate()
        return t.converted(to: dtype)
    }
}
