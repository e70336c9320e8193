import Foundation
import Options
import Tensor
import Checkpoint
import Models

/// `unimoe bench encoders`: one 336×336 image through a ViT-L/14-336-shaped CLIP tower and one 30 s
/// window through a Whisper-small-shaped encoder (random weights made by scripts/bench-encoders),
/// against the transformers timings that script measured in the same run, plus achieved GFLOP/s as
/// a fraction of the sgemm peak measured here on the models' largest GEMM shapes.
enum BenchEncoders {
    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["cache", "threads", "repeats", "only"])
        let cache = try a.required("cache")
        let threads = try a.int("threads", default: 2, range: 1...256) ?? 2
        let repeats = try a.int("repeats", default: 3, range: 1...100) ?? 3
        let only = a.value("only")   // "clip" or "whisper": run one tower (profiling)
        Linear.setThreads(threads)
        guard let refData = FileManager.default.contents(atPath: cache + "/encoders-reference.json") else {
            throw UsageError("\(cache)/encoders-reference.json is missing: run scripts/bench-encoders, which makes it")
        }
        guard let ref = try JSONSerialization.jsonObject(with: refData) as? [String: Double] else {
            throw UsageError("\(cache)/encoders-reference.json is not an object of numbers")
        }
        let io = try SafeTensorsFile(path: cache + "/encoders-io.safetensors")

        // Matmul peak: the GEMM shapes that dominate both towers, best of several.
        let peak = max(gemmPeak(m: 577, n: 4096, k: 1024), gemmPeak(m: 1500, n: 3072, k: 768))
        printLine("sgemm peak this run: \(BenchReport.fmt(peak / 1e9)) GFLOP/s (\(threads) threads)")

        if only != "whisper" {
        let clip = try VisionTower(directory: cache + "/clip-vit-l14-336")
        let pixels = try io.tensor("pixel_values")
        let c = clip.config
        var clipOut = Tensor(zeros: [1])
        let tClip = try best(repeats) { clipOut = try clip.forward(pixels: pixels, selectLayer: c.layers, keepCLS: true) }
        let clipErr = relativeError(clipOut.toArray(), try io.tensor("clip_last_hidden_state").toArray())
        let t = Double(c.patches + 1), d = Double(c.hiddenSize), f = Double(c.intermediateSize)
        let clipFlops = 2 * Double(c.patches) * Double(3 * c.patchSize * c.patchSize) * d
            + Double(c.layers) * (2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d)
        report("vit-l14-336 image", seconds: tClip, refSeconds: ref["clip_seconds"] ?? .nan, flops: clipFlops, peak: peak, err: clipErr)
        }
        if only == "clip" { return }

        let whisper = try WhisperEncoder(directory: cache + "/whisper-small")
        let mel = try io.tensor("input_features")
        var wOut = Tensor(zeros: [1])
        let tW = try best(repeats) { wOut = try whisper.forward(mel: mel) }
        let wErr = relativeError(wOut.toArray(), try io.tensor("whisper_last_hidden_state").toArray())
        let w = whisper.config
        let p = Double(w.maxSourcePositions), wd = Double(w.dModel), wf = Double(w.encoderFFN)
        let wFlops = 2 * Double(w.melFrames) * Double(3 * w.melBins) * wd + 2 * p * 3 * wd * wd
            + Double(w.encoderLayers) * (2 * p * (4 * wd * wd + 2 * wd * wf) + 4 * p * p * wd)
        report("whisper-small encoder 30 s window", seconds: tW, refSeconds: ref["whisper_seconds"] ?? .nan, flops: wFlops, peak: peak, err: wErr)
    }

    static func report(_ name: String, seconds: Double, refSeconds: Double, flops: Double, peak: Double, err: Float) {
        printLine(BenchReport.line("\(name) speed", ours: 1 / seconds, reference: 1 / refSeconds, unit: "per s",
                                   refLabel: "transformers, same threads"))
        printLine(BenchReport.line("\(name) GFLOP/s vs matmul peak", ours: flops / seconds / 1e9, reference: peak / 1e9,
                                   unit: "GFLOP/s", refLabel: "sgemm peak this run"))
        printLine(BenchReport.line("\(name) GFLOP/s vs transformers", ours: flops / seconds / 1e9,
                                   reference: flops / refSeconds / 1e9, unit: "GFLOP/s", refLabel: "transformers"))
        printLine("\(name) max relative error vs transformers: \(err)")
    }

    /// max|a−b| / max|b|, the figure the tests' tolerances use.
    static func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count else { return .nan }
        var num: Float = 0, den: Float = 1e-30
        for i in 0..<a.count { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
        return num / den
    }

    /// Best wall time of `n` runs after one warm-up.
    static func best(_ n: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var bestT = Double.infinity
        for _ in 0..<n {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            bestT = min(bestT, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        return bestT
    }

    /// FLOP/s of `C[m,n] = A[m,k]·B[n,k]ᵀ` through `Linear.gemm` (cblas_sgemm), best of several.
    static func gemmPeak(m: Int, n: Int, k: Int) -> Double {
        let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [n, k]), c = Tensor(zeros: [m, n])
        for i in 0..<(m * k) { a.floats[i] = Float(i % 97) * 0.01 }
        for i in 0..<(n * k) { b.floats[i] = Float(i % 89) * 0.01 }
        let t = BenchReport.time(repeats: 5, minSeconds: 0.3) {
            Linear.gemm(m: m, n: n, k: k, a: a.floats, lda: k, b: b.floats, ldb: k, transposeB: true, c: c.floats, ldc: n)
        }
        return 2 * Double(m * n * k) / t
    }
}
