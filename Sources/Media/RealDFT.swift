import CFFmpeg
import Foundation

/// Power spectrum |X[k]|², k = 0…n/2, of a real frame of any length n, via av_tx. FFmpeg 5.1's av_tx
/// only has fast paths for 2^a times one of 1, 3, 5, 7, 9, 15 (400 = 16·25 falls back to an O(n²)
/// loop, ~0.7 ms a frame). So a length n = 5·m with such an m (400 = 5·80) is one radix-5
/// Cooley–Tukey step by hand: five FFTs of length m over the decimated frame, combined by twiddles
/// and radix-5 butterflies. Any other length goes through Bluestein's chirp-z algorithm on a
/// power-of-two FFT of length ≥ 2n − 1 (two FFTs of 1024 for n = 400: ~4× the work).
/// Owns the AVTXContexts (freed in deinit); one instance is used by one thread at a time.
final class RealDFT {
    let n: Int
    /// The FFT length: n / p (factored) or the power of two ≥ 2n − 1 (Bluestein).
    let m: Int
    /// The hand-made Cooley–Tukey radix (5); 1 selects Bluestein.
    let p: Int
    /// Factored: e^{-2πi·j·r/n} for j < 5, r < m (interleaved re, im), row j at 2m·j.
    private var twiddles: [Float] = []
    private var forward: OpaquePointer?
    private var inverse: OpaquePointer?
    private let forwardFn: av_tx_fn
    /// Bluestein only (nil, empty and 0 floats for radix 5):
    private let inverseFn: av_tx_fn?
    /// e^{-iπk²/n}, k < n (interleaved re, im).
    private var chirp: [Float] = []
    /// FFT of the conjugate chirp b[k] = e^{iπk²/n} wrapped over m, scaled by 1/m.
    private let chirpFFT: UnsafeMutablePointer<Float>
    /// av_tx's SIMD transforms need 32-byte aligned buffers (AV_TX_UNALIGNED makes them ~4× slower).
    private let work: UnsafeMutablePointer<Float>
    private let spectrum: UnsafeMutablePointer<Float>

    private static func aligned(_ count: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.size, alignment: 64)
        return p.initializeMemory(as: Float.self, repeating: 0, count: count)
    }

    /// 5 when n = 5·m and av_tx transforms length m fast (m = 2^a·q, q ∈ {1, 3, 5, 7, 9, 15}, and m
    /// a multiple of 4 so every sub-buffer stays 32-byte aligned); nil otherwise (Bluestein).
    static func factor(of n: Int) -> Int? {
        guard n % 5 == 0, (n / 5) % 4 == 0 else { return nil }
        var q = n / 5
        while q % 2 == 0 { q /= 2 }
        return [1, 3, 5, 7, 9, 15].contains(q) ? 5 : nil
    }

    init(length n: Int) throws {
        self.n = n
        let p = RealDFT.factor(of: n) ?? 1
        self.p = p
        var m = 1
        if p > 1 { m = n / p } else { while m < 2 * n - 1 { m <<= 1 } }
        self.m = m
        var scale: Float = 1
        var f: av_tx_fn?
        var i: av_tx_fn?
        try check(av_tx_init(&forward, &f, AV_TX_FLOAT_FFT, 0, Int32(m), &scale, 0), "av_tx_init", file: "log-mel")
        let r = p > 1 ? 0 : av_tx_init(&inverse, &i, AV_TX_FLOAT_FFT, 1, Int32(m), &scale, 0)
        guard r >= 0, let f, p > 1 || i != nil else {
            av_tx_uninit(&forward)
            av_tx_uninit(&inverse)
            throw MediaError.ffmpeg(file: "log-mel", function: "av_tx_init", code: r, message: ffErrorString(r))
        }
        forwardFn = f
        inverseFn = i
        // Radix 5: five decimated frames of m complex values each (m·5 = n); Bluestein: one of m ≥ n.
        work = RealDFT.aligned(2 * max(m * p, n))
        spectrum = RealDFT.aligned(2 * max(m * p, n))
        chirpFFT = RealDFT.aligned(p > 1 ? 0 : 2 * m)
        if p > 1 {
            twiddles = [Float](repeating: 0, count: 2 * m * p)
            for j in 0..<p {
                for r in 0..<m {
                    let angle = -2 * Double.pi * Double(j * r) / Double(n)
                    twiddles[2 * (j * m + r)] = Float(cos(angle)); twiddles[2 * (j * m + r) + 1] = Float(sin(angle))
                }
            }
            return
        }
        chirp = [Float](repeating: 0, count: 2 * n)
        let b = work
        for k in 0..<n {
            // k² mod 2n keeps the angle exact for large k.
            let q = Double((k * k) % (2 * n))
            let angle = Double.pi * q / Double(n)
            chirp[2 * k] = Float(cos(angle)); chirp[2 * k + 1] = Float(-sin(angle))
            b[2 * k] = Float(cos(angle)); b[2 * k + 1] = Float(sin(angle))
            if k > 0 { b[2 * (m - k)] = Float(cos(angle)); b[2 * (m - k) + 1] = Float(sin(angle)) }
        }
        forwardFn(forward, chirpFFT, b, MemoryLayout<Float>.size * 2)
        let inv = 1 / Float(m)
        for j in 0..<(2 * m) { chirpFFT[j] *= inv }
    }

    deinit {
        av_tx_uninit(&forward)
        av_tx_uninit(&inverse)
        work.deallocate()
        spectrum.deallocate()
        chirpFFT.deallocate()
    }

    /// Writes |DFT(a)[k]|² and |DFT(b)[k]|² for k = 0…n/2 into `outA` and `outB`: the two real frames
    /// go through one complex transform as a + ib and are separated by conjugate symmetry afterwards.
    func power(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into outA: UnsafeMutablePointer<Float>,
               _ outB: UnsafeMutablePointer<Float>) {
        separate(p > 1 ? factoredTransform(a, b) : bluesteinTransform(a, b), into: outA, outB)
    }

    /// Z = DFT(a + ib), returned in `work[0..<2n]`, by one Cooley–Tukey step of radix 5: F_j =
    /// FFT_m(z[5t + j]); for each r < m, x_j = e^{-2πi·j·r/n}·F_j[r] and Z[r + q·m] = Σ_j x_j·e^{-2πi·j·q/5}
    /// (the radix-5 butterfly below).
    private func factoredTransform(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let w = work, s = spectrum, m = m
        for t in 0..<m {
            for j in 0..<5 {
                w[2 * (j * m + t)] = a[5 * t + j]
                w[2 * (j * m + t) + 1] = b[5 * t + j]
            }
        }
        for j in 0..<5 { forwardFn(forward, s + 2 * j * m, w + 2 * j * m, MemoryLayout<Float>.size * 2) }
        let c1: Float = 0.309016994374947424, c2: Float = -0.809016994374947424   // cos 2π/5, cos 4π/5
        let s1: Float = 0.951056516295153572, s2: Float = 0.587785252292473129    // sin 2π/5, sin 4π/5
        twiddles.withUnsafeBufferPointer { tb in
            let tw = tb.baseAddress!
            for r in 0..<m {
                // x_j = F_j[r]·twiddle (x_0 needs none).
                @inline(__always) func x(_ j: Int) -> (Float, Float) {
                    let fr = s[2 * (j * m + r)], fi = s[2 * (j * m + r) + 1]
                    let cr = tw[2 * (j * m + r)], ci = tw[2 * (j * m + r) + 1]
                    return (fr * cr - fi * ci, fr * ci + fi * cr)
                }
                let x0 = (s[2 * r], s[2 * r + 1]), x1 = x(1), x2 = x(2), x3 = x(3), x4 = x(4)
                let t1 = (x1.0 + x4.0, x1.1 + x4.1), t2 = (x2.0 + x3.0, x2.1 + x3.1)
                let t3 = (x1.0 - x4.0, x1.1 - x4.1), t4 = (x2.0 - x3.0, x2.1 - x3.1)
                let a1 = (x0.0 + c1 * t1.0 + c2 * t2.0, x0.1 + c1 * t1.1 + c2 * t2.1)
                let a2 = (x0.0 + c2 * t1.0 + c1 * t2.0, x0.1 + c2 * t1.1 + c1 * t2.1)
                let b1 = (s1 * t3.0 + s2 * t4.0, s1 * t3.1 + s2 * t4.1)
                let b2 = (s2 * t3.0 - s1 * t4.0, s2 * t3.1 - s1 * t4.1)
                // X_q for q = 0…4; −i·(br + i·bi) = bi − i·br.
                w[2 * r] = x0.0 + t1.0 + t2.0; w[2 * r + 1] = x0.1 + t1.1 + t2.1
                w[2 * (r + m)] = a1.0 + b1.1; w[2 * (r + m) + 1] = a1.1 - b1.0
                w[2 * (r + 4 * m)] = a1.0 - b1.1; w[2 * (r + 4 * m) + 1] = a1.1 + b1.0
                w[2 * (r + 2 * m)] = a2.0 + b2.1; w[2 * (r + 2 * m) + 1] = a2.1 - b2.0
                w[2 * (r + 3 * m)] = a2.0 - b2.1; w[2 * (r + 3 * m) + 1] = a2.1 + b2.0
            }
        }
        return UnsafePointer(w)
    }

    /// Z = DFT(a + ib), returned in `spectrum[0..<2n]`, by Bluestein's chirp-z algorithm.
    private func bluesteinTransform(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let w = work, s = spectrum, n = n, m = m
        let bf = chirpFFT
        chirp.withUnsafeBufferPointer { cb in
            do {
                let c = cb.baseAddress!
                // (a + ib)·chirp, zero beyond n.
                for k in 0..<n {
                    let xr = a[k], xi = b[k], cr = c[2 * k], ci = c[2 * k + 1]
                    w[2 * k] = xr * cr - xi * ci
                    w[2 * k + 1] = xr * ci + xi * cr
                }
                (w + 2 * n).initialize(repeating: 0, count: 2 * (m - n))
                forwardFn(forward, s, w, MemoryLayout<Float>.size * 2)
                for j in 0..<m {
                    let ar = s[2 * j], ai = s[2 * j + 1], br = bf[2 * j], bi = bf[2 * j + 1]
                    s[2 * j] = ar * br - ai * bi
                    s[2 * j + 1] = ar * bi + ai * br
                }
                inverseFn!(inverse, w, s, MemoryLayout<Float>.size * 2)
                // Z[k] = y[k]·chirp[k] for k < n.
                for k in 0..<n {
                    let yr = w[2 * k], yi = w[2 * k + 1], cr = c[2 * k], ci = c[2 * k + 1]
                    s[2 * k] = yr * cr - yi * ci
                    s[2 * k + 1] = yr * ci + yi * cr
                }
            }
        }
        return UnsafePointer(s)
    }

    /// |A[k]|² and |B[k]|², k ≤ n/2, from Z = DFT(a + ib) (interleaved re, im).
    private func separate(_ s: UnsafePointer<Float>, into outA: UnsafeMutablePointer<Float>, _ outB: UnsafeMutablePointer<Float>) {
        let n = n
        // A[k] = (Z[k] + conj Z[n−k]) / 2, B[k] = (Z[k] − conj Z[n−k]) / 2i.
        for k in 0...(n / 2) {
            let j = k == 0 ? 0 : n - k
            let zr = s[2 * k], zi = s[2 * k + 1], qr = s[2 * j], qi = s[2 * j + 1]
            let ar = 0.5 * (zr + qr), ai = 0.5 * (zi - qi)
            let br = 0.5 * (zi + qi), bi = -0.5 * (zr - qr)
            outA[k] = ar * ar + ai * ai
            outB[k] = br * br + bi * bi
        }
    }
}
