import Dispatch
import Foundation

/// Measures how fast this machine streams memory, the roofline for bandwidth-bound decode.
///
/// Why it exists: a decode step reads every active weight once, so tokens/s can never exceed
/// bandwidth ÷ bytes of weights per token. Benchmarks print measured decode speed as a fraction of
/// that ceiling; this is the one place the ceiling is measured: a sum over a buffer far larger than
/// the last-level cache, on huge pages as the weights are (`HugePageArena`), split over dedicated
/// threads, each reading its slice as `streams` interleaved sequential streams.
///
/// Why several streams: one core here keeps too few misses in flight on a single sequential stream
/// to reach what the memory gives. Measured with a C loop on the 2-core bench VM, 1 GiB, best of
/// 5: one stream per thread 10.2 GB/s (1 thread) and 20.4 (2 threads), 4 streams 15.1 / 28.4,
/// 8 streams 15.1 / 29.8–30.8, where 16 add nothing; the mat-vec's own pattern (4 rows read, the
/// next 4 prefetched) 31.5–32.8. Until December 2026 this was one stream per thread (24–27 GB/s
/// as measured here), which the f32 decode went past (1.1×) once its mat-vec ran in 512-bit
/// vectors: a ceiling one can beat is not one.
public enum MemoryBandwidth {
    /// Sequential streams each thread reads at once.
    public static let streams = 8

    /// Read bandwidth in bytes per second with `threads` threads, best of `repeats` passes over a
    /// buffer of `bytes` (default 1 GiB: larger than any L3 we run on).
    public static func read(threads: Int, bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        let n = max(threads, 1)
        // Each thread's slice a whole number of 64-byte lines per stream.
        let per = bytes / 4 / n / (16 * streams) * (16 * streams)
        let floats = per * n
        let chunk = HugePageArena.Chunk(size: floats * 4)
        let fallback = chunk == nil ? UnsafeMutablePointer<Float>.allocate(capacity: floats) : nil
        defer { fallback?.deallocate() }
        let buf = Shared(fallback ?? chunk!.base.bindMemory(to: Float.self, capacity: floats))
        // Touch every page (and give the sum something to add) in parallel.
        run(threads: n) { t in (buf.p + t * per).initialize(repeating: 1, count: per) }
        var best = Double.infinity
        let sink = Shared(UnsafeMutablePointer<Float>.allocate(capacity: n * 16))
        defer { sink.p.deallocate() }
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            run(threads: n) { t in sink.p[t * 16] = sum(buf.p + t * per, count: per) }
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            best = min(best, dt)
        }
        withExtendedLifetime(chunk) {}
        return Double(floats * 4) / best
    }

    /// Sum of `count` floats (a multiple of 16 · `streams`), read as `streams` equal runs side by
    /// side, one 64-byte line of each per step.
    @inline(never)
    static func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = SIMD8<Float>(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        let r = UnsafeRawPointer(p)
        let run = count / streams * 4
        var i = 0
        while i < run {
            for s in stride(from: 0, to: streams, by: 2) {
                a0 += r.loadUnaligned(fromByteOffset: s * run + i, as: SIMD8<Float>.self)
                a1 += r.loadUnaligned(fromByteOffset: s * run + i + 32, as: SIMD8<Float>.self)
                a2 += r.loadUnaligned(fromByteOffset: (s + 1) * run + i, as: SIMD8<Float>.self)
                a3 += r.loadUnaligned(fromByteOffset: (s + 1) * run + i + 32, as: SIMD8<Float>.self)
            }
            i += 64
        }
        return (a0 + a1 + a2 + a3).sum()
    }

    /// A buffer handed to the measuring threads. `@unchecked Sendable`: each thread touches only
    /// its own slice, and the caller waits for all of them before freeing it.
    private struct Shared: @unchecked Sendable {
        let p: UnsafeMutablePointer<Float>
        init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
    }

    /// Runs `body(t)` on `n` fresh threads at once (independent of the kernel pool's thread count).
    private static func run(threads n: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchSemaphore(value: 0)
        for t in 0..<n {
            let th = Thread { body(t); done.signal() }
            th.start()
        }
        for _ in 0..<n { done.wait() }
    }
}
