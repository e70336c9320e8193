import Foundation
import Checkpoint
import Options
import Stages
import Tensor
import Training
import Wire

/// `unimoe train`: one of Uni-MoE's three progressive training stages on a model directory and a
/// data file in the reference's format, with a progress line per step on stderr, `OUT/loss.jsonl`,
/// resumable checkpoints under `OUT/checkpoints/` and the trained model written to `OUT`.
public enum TrainCommand: Command {
    public static let name = "train"
    public static let usage = "train --stage 0|1|2|3 --model DIR --data FILE --media-dir DIR --out DIR [--steps N] [--epochs N] "
        + "[--batch B] [--accumulate N] [--lr X] [--warmup-ratio R] [--weight-decay W] [--max-grad-norm G] [--lora-r R] "
        + "[--lora-alpha A] [--aux-coef C] [--experts N] [--moe-layers 0,2,…] [--expert-modalities text,image,audio,video] "
        + "[--save-every N] [--save-adapters] [--train-towers] [--media-words W [--media-words-only]] [--resume] [--skip-bad] [--seed S] [--threads N] [--pipeline FILE] "
        + "[--rank R --world W (--allreduce ENDPOINT | --pipeline FILE)] [--json]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["stage", "model", "data", "media-dir", "out", "steps", "epochs", "batch", "accumulate",
                                             "lr", "warmup-ratio", "weight-decay", "max-grad-norm", "lora-r", "lora-alpha", "aux-coef",
                                             "experts", "moe-layers", "expert-modalities", "save-every", "seed", "threads", "max-tokens",
                                             "pipeline", "join-timeout", "rank", "world", "allreduce", "media-words"],
                              flags: ["save-adapters", "resume", "skip-bad", "json", "train-towers", "media-words-only"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        guard let stageNumber = try a.int("stage", range: 0...3), let stage = TrainingStage(rawValue: stageNumber) else {
            throw UsageError("missing required option --stage (0, 1, 2 or 3)")
        }
        let data = try a.required("data")
        var o = TrainingOptions(stage: stage, model: try a.required("model"), data: data,
                                mediaDirectory: a.value("media-dir") ?? (data as NSString).deletingLastPathComponent,
                                out: try a.required("out"))
        o.steps = try a.int("steps", range: 1...100_000_000)
        o.epochs = try a.int("epochs", default: 1, range: 1...100_000) ?? 1
        o.batchSize = try a.int("batch", default: 4, range: 1...65_536) ?? 4
        o.gradientAccumulation = try a.int("accumulate", default: 1, range: 1...65_536) ?? 1
        o.learningRate = try a.double("lr", range: 0...10)
        o.warmupRatio = try a.double("warmup-ratio", default: 0.03, range: 0...1) ?? 0.03
        o.weightDecay = try a.double("weight-decay", default: 0, range: 0...10) ?? 0
        o.maxGradNorm = try a.double("max-grad-norm", default: 1, range: 0...1e9) ?? 1
        o.loraRank = try a.int("lora-r", default: 8, range: 1...4096) ?? 8
        o.loraAlpha = try a.double("lora-alpha", default: 16, range: 0...1e6) ?? 16
        o.auxLossCoefficient = try a.double("aux-coef", range: 0...100)
        o.upcycleExperts = try a.int("experts", default: 4, range: 2...1024) ?? 4
        o.moeLayers = try a.intList("moe-layers")
        if let m = a.value("expert-modalities") {
            o.expertModalities = m.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            let known: Set<String> = ["text", "image", "audio", "video"]
            if let bad = o.expertModalities.first(where: { !known.contains($0) }) {
                throw UsageError("--expert-modalities: unknown modality '\(bad)' (text, image, audio, video)")
            }
        }
        o.saveEvery = try a.int("save-every", default: 0, range: 0...100_000_000) ?? 0
        o.maxTokens = try a.int("max-tokens", default: 2048, range: 8...1_000_000) ?? 2048
        if let s = a.value("seed") {
            guard let v = UInt64(s) else { throw UsageError("--seed needs an unsigned integer, got '\(s)'") }
            o.seed = v
        }
        o.saveAdapters = a.has("save-adapters")
        o.trainTowers = a.has("train-towers")
        if o.trainTowers && stage != .pretrain { throw UsageError("--train-towers goes with --stage 0") }
        o.mediaWords = try a.double("media-words", default: 0, range: 0...1000) ?? 0
        if o.mediaWords > 0 && stage != .pretrain && stage != .alignment { throw UsageError("--media-words goes with --stage 0 or 1 (it trains the connectors)") }
        o.mediaWordsOnly = a.has("media-words-only")
        if o.mediaWordsOnly && o.mediaWords == 0 { throw UsageError("--media-words-only needs --media-words W (a weight > 0)") }
        o.resume = a.has("resume")
        o.skipBad = a.has("skip-bad")
        if o.saveAdapters && stage != .mixed { throw UsageError("--save-adapters applies to stage 3 (LoRA) only") }
        if let t = try a.int("threads", range: 1...256) { Linear.setThreads(t) }
        let json = a.has("json")
        var distributed: ((ModelConfig, ExpertTrainingSetup) throws -> DistributedExperts)?
        var reducer: GradientReducer?
        o.world = try a.int("world", default: 1, range: 1...1024) ?? 1
        o.rank = try a.int("rank", default: 0, range: 0...1023) ?? 0
        guard o.rank < o.world else { throw UsageError("--rank \(o.rank) must be below --world \(o.world)") }
        if o.world > 1 {
            // Modality data parallel: trunk replicas sum their gradients each step over ZeroMQ.
            let endpoint = try a.value("allreduce") ?? a.value("pipeline").map { try PipelineConfig.load($0).allreduce } ?? nil
            guard let endpoint else { throw UsageError("--world \(o.world) needs --allreduce ENDPOINT (or a pipeline file with \"allreduce\")") }
            reducer = try ZeroMQAllReduce(rank: o.rank, world: o.world, endpoint: endpoint)
        } else if let file = a.value("pipeline") {
            // Expert-parallel: the experts are trained by `unimoe-expert --train` workers that join the
            // pipeline's expert endpoint; this process holds the trunk only.
            let pipeline = try PipelineConfig.load(file)
            let join = try a.double("join-timeout", default: 60, range: 1...3600) ?? 60
            distributed = { config, setup in
                let dispatcher = try Dispatcher(bind: pipeline.experts, policy: pipeline.heartbeat, name: "trainer")
                let layers = (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
                return try RemoteTrainingExperts(dispatcher: dispatcher, layers: layers, experts: config.experts, setup: setup,
                                                 joinTimeout: join, timeout: max(pipeline.expertTimeout, 60))
            }
        }
        let run = try TrainingRun(options: o, distributedExperts: distributed, reducer: reducer)
        if json { run.onStep = { r in
            if let d = try? StepRecord.encoder.encode(r) { printLine(String(decoding: d, as: UTF8.self)) }
        } }
        try run.run()
        if let last = run.records.last {
            let summary: [String: Any] = ["steps": run.step, "loss": last.loss, "out": o.out]
            if json { printLine(jsonLine(summary)) } else { printLine("trained \(run.step) steps, final loss \(String(format: "%.4f", last.loss)) → \(o.out)") }
        }
    }
}
