import CFFmpeg
import Foundation

/// Power spectrum |X[k]|², k = 0…n/2, of a real frame of any length n, via av_tx. FFmpeg 5.1's av_tx
/// only has fast paths for lengths built from 2, 3, 5, 7, 9 and 15 (400 = 16·25 falls back to an
/// O(n²) loop, ~0.7 ms a frame), so the DFT is computed with Bluestein's chirp-z algorithm on a
/// power-of-two complex FFT of length ≥ 2n − 1: two FFTs and two pointwise products per frame.
/// Owns the AVTXContexts (freed in deinit); one instance is used by one thread at a time.
final class RealDFT {
    let n: Int
    let m: Int
    private var forward: OpaquePointer?
    private var inverse: OpaquePointer?
    private let forwardFn: av_tx_fn
    private let inverseFn: av_tx_fn
    /// e^{-iπk²/n}, k < n (interleaved re, im).
    private var chirp: [Float]
    /// FFT of the conjugate chirp b[k] = e^{iπk²/n} wrapped over m, scaled by 1/m.
    private let chirpFFT: UnsafeMutablePointer<Float>
    /// av_tx's SIMD transforms need 32-byte aligned buffers (AV_TX_UNALIGNED makes them ~4× slower).
    private let work: UnsafeMutablePointer<Float>
    private let spectrum: UnsafeMutablePointer<Float>

    private static func aligned(_ count: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.size, alignment: 64)
        return p.initializeMemory(as: Float.self, repeating: 0, count: count)
    }

    init(length n: Int) throws {
        self.n = n
        var m = 1
        while m < 2 * n - 1 { m <<= 1 }
        self.m = m
        var scale: Float = 1
        var f: av_tx_fn?
        var i: av_tx_fn?
        try check(av_tx_init(&forward, &f, AV_TX_FLOAT_FFT, 0, Int32(m), &scale, 0), "av_tx_init", file: "log-mel")
        let r = av_tx_init(&inverse, &i, AV_TX_FLOAT_FFT, 1, Int32(m), &scale, 0)
        guard r >= 0, let f, let i else {
            av_tx_uninit(&forward)
            av_tx_uninit(&inverse)
            throw MediaError.ffmpeg(file: "log-mel", function: "av_tx_init", code: r, message: ffErrorString(r))
        }
        forwardFn = f
        inverseFn = i
        work = RealDFT.aligned(2 * m)
        spectrum = RealDFT.aligned(2 * m)
        chirpFFT = RealDFT.aligned(2 * m)
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
                inverseFn(inverse, w, s, MemoryLayout<Float>.size * 2)
                // Z[k] = y[k]·chirp[k] for k < n; A[k] = (Z[k] + conj Z[n−k]) / 2, B[k] = (Z[k] − conj Z[n−k]) / 2i.
                for k in 0..<n {
                    let yr = w[2 * k], yi = w[2 * k + 1], cr = c[2 * k], ci = c[2 * k + 1]
                    s[2 * k] = yr * cr - yi * ci
                    s[2 * k + 1] = yr * ci + yi * cr
                }
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
    }
}
