import Foundation
import COpenBLAS
import Checkpoint
import Models
import Options
import Stages
import Tensor
import Training
import Wire

/// `unimoe bench train`: stage-3 training steps (LoRA on attention and experts, routers trainable,
/// aux loss) on random token sequences, timed after one warm-up step; prints one JSON object with
/// tokens/s, seconds per step and the GEMM throughput of the backward pass against this process's
/// sgemm peak. With `--pipeline FILE` the experts are trained by `unimoe-expert --train` workers.
enum BenchTrain {
    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "batch", "seq", "steps", "threads", "lora-r", "pipeline", "seed"])
        let dir = try a.required("model")
        let batch = try a.int("batch", default: 1, range: 1...1024) ?? 1
        let seq = try a.int("seq", default: 256, range: 2...65_536) ?? 256
        let steps = try a.int("steps", default: 3, range: 1...10_000) ?? 3
        let rank = try a.int("lora-r", default: 8, range: 1...4096) ?? 8
        let threads = try a.int("threads", default: 2, range: 1...256) ?? 2
        Linear.setThreads(threads)
        let remote = a.value("pipeline") != nil
        var (config, params, _) = try TrainableModel.loadParameters(directory: dir, expertsLocal: !remote)
        guard config.hasMoE else { throw UsageError("bench train needs a MoE model") }
        try StageSetup.addLoRA(config: config, params: params, rank: rank, seed: 1)
        try StageSetup.setTrainable(stage: .mixed, params: params, config: config)
        let model = try TrainableModel(directory: dir, config: config, params: params, loraScale: 2, expertsLocal: !remote)
        var shards: DistributedExperts?
        if let file = a.value("pipeline") {
            let pipeline = try PipelineConfig.load(file)
            let d = try Dispatcher(bind: pipeline.experts, policy: pipeline.heartbeat, name: "bench-trainer")
            shards = try RemoteTrainingExperts(dispatcher: d, layers: (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) },
                                               experts: config.experts,
                                               setup: ExpertTrainingSetup(stage: 3, loraRank: rank, loraAlpha: Double(2 * rank), seed: 1,
                                                                          weightDecay: 0, upcycleExperts: 0, moeLayers: nil),
                                               joinTimeout: 120, timeout: 600)
            model.trunk.backend = shards!
        }
        config = model.config
        var rng = Xoshiro256(seed: UInt64(a.value("seed") ?? "1") ?? 1)
        let examples = (0..<batch).map { _ -> TrainingExample in
            let ids = (0..<seq).map { _ in 3 + Int(rng.next() % UInt64(config.vocabSize - 3)) }
            return TrainingExample(ids: ids, labels: ids)
        }
        let tokens = examples.reduce(0) { $0 + $1.targetCount }
        let optimizer = AdamW(settings: .init())
        let trainable = model.params.trainable
        func step() throws {
            model.params.zeroGrads()
            try shards?.zeroGrads()
            _ = try model.accumulate(examples, ceScale: 1 / Float(tokens), auxScale: 0.01)
            let norm = (AdamW.gradientSquares(trainable) + (try shards?.gradientSquares() ?? 0)).squareRoot()
            let clip = AdamW.clipCoefficient(norm: norm, maxNorm: 1)
            AdamW.scaleGradients(trainable, by: clip)
            optimizer.update(trainable, lr: 1e-4)
            try shards?.step(lr: 1e-4, clip: clip)
        }
        try step()   // warm-up (allocations, OpenBLAS core selection)
        GemmProfile.reset()
        GemmProfile.enabled = true
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<steps { try step() }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 / Double(steps)
        GemmProfile.enabled = false
        let back = GemmProfile.totals["backward"] ?? (0, 0), fwd = GemmProfile.totals["forward"] ?? (0, 0)
        let peak = sgemmPeak()
        let out: [String: Any] = [
            "tokens_per_s": Double(batch * seq) / secs, "seconds_per_step": secs, "steps_per_s": 1 / secs,
            "backward_gemm_gflops": back.seconds > 0 ? back.flops / back.seconds / 1e9 : 0,
            "forward_gemm_gflops": fwd.seconds > 0 ? fwd.flops / fwd.seconds / 1e9 : 0,
            "gemm_share_of_step": (back.seconds + fwd.seconds) / Double(steps) / secs,
            "sgemm_peak_gflops": peak, "threads": threads, "trainable_values": trainable.reduce(0) { $0 + $1.count },
        ]
        printLine(jsonLine(out))
    }

    /// GFLOP/s of a 2048³ sgemm with this process's threads (best of 3).
    static func sgemmPeak() -> Double {
        let n = 2048
        let x = Tensor(zeros: [n, n]), w = Tensor(zeros: [n, n]), y = Tensor(zeros: [n, n])
        for i in 0..<(n * n) { x.floats[i] = Float(i % 7) * 0.1; w.floats[i] = Float(i % 5) * 0.1 }
        let t = OpenBLASCore.withOwnThreads(Linear.threads) {
            BenchReport.time(repeats: 3, minSeconds: 0.3) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(n), 1, x.floats, Int32(n),
                            w.floats, Int32(n), 0, y.floats, Int32(n))
            }
        }
        return withExtendedLifetime((x, w, y)) { 2 * Double(n * n * n) / t / 1e9 }
    }
}
