import CFFmpeg
import Foundation
import Tensor

/// Whisper's input features, as transformers' `WhisperFeatureExtractor` computes them: 30 s windows
/// of 16 kHz audio, a centred (reflect-padded) STFT with a periodic Hann window of `nFFT`, hop `hop`,
/// power spectrum, Slaney-normalised mel filters on the Slaney mel scale (0–8 kHz), log10 floored at
/// 1e-10, clamped to max − 8, then (x + 4) / 4; the STFT's last frame is dropped (3000 frames).
public struct WhisperFeatureExtractor: Sendable {
    public let melBins: Int
    public let sampleRate: Int
    public let nFFT: Int
    public let hop: Int
    public let chunkSeconds: Int
    /// `[melBins, nFFT/2 + 1]`, row-major.
    let filters: [Float]
    /// Per mel bin, the FFT bins where its filter is nonzero (empty when it is zero everywhere).
    let filterSpans: [Range<Int>]

    public var samplesPerWindow: Int { sampleRate * chunkSeconds }
    public var framesPerWindow: Int { samplesPerWindow / hop }

    public init(melBins: Int = 80, sampleRate: Int = 16000, nFFT: Int = 400, hop: Int = 160, chunkSeconds: Int = 30) {
        self.melBins = melBins
        self.sampleRate = sampleRate
        self.nFFT = nFFT
        self.hop = hop
        self.chunkSeconds = chunkSeconds
        filters = WhisperFeatureExtractor.melFilters(bins: melBins, nFFT: nFFT, sampleRate: sampleRate)
        let nFreq = nFFT / 2 + 1
        filterSpans = (0..<max(melBins, 0)).map { [filters] m in
            guard (m + 1) * nFreq <= filters.count else { return 0..<0 }
            let row = filters[(m * nFreq)..<((m + 1) * nFreq)]
            guard let first = row.firstIndex(where: { $0 != 0 }), let last = row.lastIndex(where: { $0 != 0 }) else { return 0..<0 }
            return (first - m * nFreq)..<(last - m * nFreq + 1)
        }
    }

    /// `samples` cut into windows of `samplesPerWindow`, the last one zero-padded; at most
    /// `maxWindows` (later audio is dropped, as Uni-MoE does). Empty audio gives no window.
    public func windows(_ samples: [Float], maxWindows: Int = 20) -> [[Float]] {
        let n = samplesPerWindow
        guard n > 0, maxWindows > 0 else { return [] }
        var out: [[Float]] = []
        var start = 0
        while start < samples.count && out.count < maxWindows {
            var w = Array(samples[start..<min(samples.count, start + n)])
            if w.count < n { w.append(contentsOf: repeatElement(0, count: n - w.count)) }
            out.append(w)
            start += n
        }
        return out
    }

    /// Log-mel features `[melBins, framesPerWindow]` of one window (shorter input is zero-padded).
    public func logMel(_ window: [Float]) throws -> Tensor {
        let n = samplesPerWindow
        guard nFFT > 0, hop > 0, melBins > 0, n >= nFFT else {
            throw MediaError.invalidArgument("WhisperFeatureExtractor needs positive sizes and a window of at least nFFT samples")
        }
        guard window.count <= n else {
            throw MediaError.invalidArgument("log-mel window has \(window.count) samples, more than \(n) (\(chunkSeconds) s); cut it with windows()")
        }
        var x = window
        if x.count < n { x.append(contentsOf: repeatElement(0, count: n - x.count)) }
        let half = nFFT / 2, bins = half + 1, frames = framesPerWindow
        // Reflect padding (torch.stft center=True): x[-i] = x[i], x[n-1+i] = x[n-1-i].
        var padded = [Float](repeating: 0, count: n + 2 * half)
        for i in 0..<half { padded[i] = x[half - i]; padded[half + n + i] = x[n - 2 - i] }
        for i in 0..<n { padded[half + i] = x[i] }
        let hann = (0..<nFFT).map { Float(0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(nFFT))) }

        var power = [Float](repeating: 0, count: (frames + 1) * bins)
        let dft = try RealDFT(length: nFFT)
        var windowed = [Float](repeating: 0, count: 2 * nFFT)
        padded.withUnsafeBufferPointer { pb in
            hann.withUnsafeBufferPointer { hb in
                windowed.withUnsafeMutableBufferPointer { wb in
                    power.withUnsafeMutableBufferPointer { pw in
                        let p = pb.baseAddress!, h = hb.baseAddress!, a = wb.baseAddress!, b = a + nFFT, out = pw.baseAddress!
                        var f = 0
                        while f < frames {
                            // Two frames per transform; an odd last frame is paired with a copy of itself.
                            let g = min(f + 1, frames - 1)
                            for i in 0..<nFFT { a[i] = p[f * hop + i] * h[i]; b[i] = p[g * hop + i] * h[i] }
                            dft.power(a, b, into: out + f * bins, out + (f + 1) * bins)
                            f += 2
                        }
                    }
                }
            }
        }
        let out = Tensor(zeros: [melBins, frames])
        // The filter bank is sparse (each mel bin spans a few FFT bins), so each output is a short
        // dot product over its bin's nonzero span, summed in bin order by one thread. Unlike a BLAS
        // GEMM, whose tiling follows OpenBLAS's thread count (which another thread of the process
        // may change meanwhile), this gives the same bits on every call.
        filters.withUnsafeBufferPointer { fb in
            power.withUnsafeBufferPointer { pw in
                // Frame by frame: each power spectrum is read once, while it is in cache.
                let w = fb.baseAddress!, p = pw.baseAddress!, o = out.floats
                for f in 0..<frames {
                    let spectrum = p + f * bins
                    for m in 0..<melBins {
                        let row = w + m * bins
                        var sum: Float = 0
                        for k in filterSpans[m] { sum += row[k] * spectrum[k] }
                        o[m * frames + f] = sum
                    }
                }
            }
        }
        let total = melBins * frames
        let v = out.floats
        var maxVal = -Float.infinity
        for i in 0..<total {
            let l = log10(max(v[i], 1e-10))
            v[i] = l
            maxVal = max(maxVal, l)
        }
        let floor = maxVal - 8
        for i in 0..<total { v[i] = (max(v[i], floor) + 4) / 4 }
        return out
    }

    // MARK: Slaney mel filters (transformers.audio_utils.mel_filter_bank, norm="slaney", mel_scale="slaney")

    private static func hzToMel(_ f: Double) -> Double {
        let minLogHz = 1000.0, minLogMel = 15.0, logstep = 27.0 / log(6.4)
        return f >= minLogHz ? minLogMel + log(f / minLogHz) * logstep : 3.0 * f / 200.0
    }

    private static func melToHz(_ m: Double) -> Double {
        let minLogHz = 1000.0, minLogMel = 15.0, logstep = log(6.4) / 27.0
        return m >= minLogMel ? minLogHz * exp(logstep * (m - minLogMel)) : 200.0 * m / 3.0
    }

    static func melFilters(bins: Int, nFFT: Int, sampleRate: Int) -> [Float] {
        let nFreq = nFFT / 2 + 1
        guard bins > 0, nFreq > 1 else { return [] }
        let melMin = hzToMel(0), melMax = hzToMel(8000)
        let filterFreqs = (0..<(bins + 2)).map { melToHz(melMin + (melMax - melMin) * Double($0) / Double(bins + 1)) }
        let fftFreqs = (0..<nFreq).map { Double(sampleRate / 2) * Double($0) / Double(nFreq - 1) }
        var out = [Float](repeating: 0, count: bins * nFreq)
        for m in 0..<bins {
            let lower = filterFreqs[m], center = filterFreqs[m + 1], upper = filterFreqs[m + 2]
            let enorm = 2.0 / (upper - lower)
            for k in 0..<nFreq {
                let down = (fftFreqs[k] - lower) / (center - lower)
                let up = (upper - fftFreqs[k]) / (upper - center)
                out[m * nFreq + k] = Float(max(0, min(down, up)) * enorm)
            }
        }
        return out
    }
}
