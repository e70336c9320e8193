import Dispatch
import Foundation

/// Measures how fast this machine streams memory, the roofline for bandwidth-bound decode.
///
/// Why it exists: a decode step reads every active weight once, so tokens/s can never exceed
/// bandwidth ÷ bytes of weights per token. Benchmarks print measured decode speed as a fraction of
/// that ceiling; this is the one place the ceiling is measured (a STREAM-like read: a sum over a
/// buffer far larger than the last-level cache, split over dedicated threads).
public enum MemoryBandwidth {
    /// Read bandwidth in bytes per second with `threads` threads, best of `repeats` passes over a
    /// buffer of `bytes` (default 1 GiB: larger than any L3 we run on).
    public static func read(threads: Int, bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        let n = max(threads, 1)
        let floats = (bytes / 4) & ~(63 * n)
        let buf = Shared(UnsafeMutablePointer<Float>.allocate(capacity: floats))
        defer { buf.p.deallocate() }
        // Touch every page (and give the sum something to add) in parallel.
        run(threads: n) { t in
            let per = floats / n
            (buf.p + t * per).initialize(repeating: 1, count: per)
        }
        var best = Double.infinity
        let sink = Shared(UnsafeMutablePointer<Float>.allocate(capacity: n * 16))
        defer { sink.p.deallocate() }
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            run(threads: n) { t in
                let per = floats / n
                sink.p[t * 16] = sum(buf.p + t * per, count: per)
            }
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            best = min(best, dt)
        }
        return Double(floats * 4) / best
    }

    /// Sum of `count` floats (`count` a multiple of 32) with four independent vector accumulators.
    @inline(never)
    static func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = SIMD8<Float>(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        let r = UnsafeRawPointer(p)
        var i = 0
        while i < count * 4 {
            a0 += r.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self)
            a1 += r.loadUnaligned(fromByteOffset: i + 32, as: SIMD8<Float>.self)
            a2 += r.loadUnaligned(fromByteOffset: i + 64, as: SIMD8<Float>.self)
            a3 += r.loadUnaligned(fromByteOffset: i + 96, as: SIMD8<Float>.self)
            i += 128
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
