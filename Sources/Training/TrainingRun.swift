import Foundation
import Checkpoint
import JSON
import Models
import Tensor
import Tokenizer

/// Everything `unimoe train` can be told.
public struct TrainingOptions: Sendable {
    public var stage: TrainingStage
    public var model: String
    public var data: String
    public var mediaDirectory: String
    public var out: String
    /// Optimizer steps; nil = `epochs` passes over the data.
    public var steps: Int?
    public var epochs: Int = 1
    public var batchSize: Int = 4
    public var gradientAccumulation: Int = 1
    public var learningRate: Double?
    public var warmupRatio: Double = 0.03
    public var weightDecay: Double = 0
    public var maxGradNorm: Double = 1
    public var loraRank: Int = 8
    public var loraAlpha: Double = 16
    public var seed: UInt64 = 0
    /// Write a resumable checkpoint every N steps (0: only at the end).
    public var saveEvery: Int = 0
    public var resume = false
    public var skipBad = false
    /// Stage 3: write adapters beside the base weights instead of merging them.
    public var saveAdapters = false
    /// Stage 2 on a dense model: experts to upcycle into, and on which layers (nil: even layers).
    public var upcycleExperts: Int = 4
    public var moeLayers: [Int]?
    /// Stage 2: which modality group each expert learns, in expert order.
    public var expertModalities: [String] = ["text", "image", "audio", "video"]
    public var auxLossCoefficient: Double?
    public var maxTokens = 2048
    /// Stage 0 only: train the vision tower and the Whisper encoder too (their inputs are cached,
    /// not their outputs), and write them to the output's tower directories.
    public var trainTowers = false
    /// Weight of the media-words objective (`MediaWordsOp`; 0: off): each medium, as the trunk
    /// receives it, predicts the words of its sample's answers. Needs trainable connectors (stages 0, 1).
    public var mediaWords: Double = 0
    /// Train on the media-words objective alone: only the connectors, the towers (with
    /// `trainTowers`) and the head learn, the trunk is neither run nor changed, text samples are skipped.
    public var mediaWordsOnly = false
    /// Modality data parallelism: this replica's rank among `world` trunk replicas. Each step takes
    /// `world × accumulation` batches; a replica runs the batches of the modality groups it owns
    /// (groups sorted by name, group i → replica i mod world) and the gradients are summed.
    public var rank = 0
    public var world = 1

    public init(stage: TrainingStage, model: String, data: String, mediaDirectory: String, out: String) {
        self.stage = stage; self.model = model; self.data = data; self.mediaDirectory = mediaDirectory; self.out = out
    }

    /// The reference's learning rates per stage (LLaVA-style alignment 1e-3; experts 2e-5; LoRA 4e-5... tiny
    /// models want more: pass --lr).
    public var effectiveLearningRate: Double {
        learningRate ?? [TrainingStage.pretrain: 1e-3, .alignment: 1e-3, .experts: 2e-5, .mixed: 4e-5][stage] ?? 1e-4
    }
}

/// One optimizer step's figures (a line of the loss log).
public struct StepRecord: Codable, Sendable, Equatable {
    public var step: Int
    public var epoch: Int
    public var loss: Double
    public var crossEntropy: Double
    public var auxLoss: Double
    /// The media-words objective per medium (nil without it).
    public var mediaWords: Double? = nil
    public var learningRate: Double
    public var gradNorm: Double
    public var tokens: Int
    public var tokensPerSecond: Double
    public var seconds: Double

    /// Sorted keys, so logs and checkpoints are byte-reproducible.
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    enum CodingKeys: String, CodingKey {
        case step, epoch, loss, tokens, seconds
        case crossEntropy = "ce", auxLoss = "aux", mediaWords = "words", learningRate = "lr", gradNorm = "grad_norm", tokensPerSecond = "tokens_per_s"
    }
}

/// Where a run stands (saved in each checkpoint as `state.json`).
struct RunState: Codable, Equatable {
    var step: Int
    var epoch: Int
    /// Next batch index within the epoch's batch list.
    var cursor: Int
    var stage: Int
    var seed: UInt64
    var totalSteps: Int
    var batchSize: Int
    var accumulation: Int
    var loraScale: Float
    var config: String   // config.json of the model being trained (after upcycling)
    /// The data (every sample's id, group and conversation, hashed) and the settings that shape the
    /// curve: a resume with other data, learning rate or replica count would not continue this run.
    var data: String?
    var learningRate: Double?
    var world: Int?
    /// The media-words weight (nil when off).
    var mediaWords: Double?
}

/// A training run: loads the model and data, sets up the stage, and runs optimizer steps with
/// progress lines, a JSONL loss log, periodic resumable checkpoints and the final model directory.
public final class TrainingRun {
    public let options: TrainingOptions
    public let model: TrainableModel
    public let samples: [RawSample]
    let examples: [TrainingExample?]
    let batcher: ModalityBatcher
    let optimizer: AdamW
    var schedule: LearningRateSchedule
    var state: RunState
    let log: (String) -> Void
    public var onStep: ((StepRecord) -> Void)?
    /// Called after every optimizer step with the step number (tests use it to stop a run early).
    public var shouldStop: (Int) -> Bool = { _ in false }
    /// Stage 2: the expert each modality group trains.
    let expertOfGroup: [String: Int]
    public private(set) var records: [StepRecord] = []
    /// Routing telemetry of this run: per modality group, per MoE layer, how many (row, choice)
    /// slots went to each expert (written to `OUT/routing.json`).
    public private(set) var routing: [String: [Int: [Int]]] = [:]

    /// Experts outside this process (nil: trained here with the trunk).
    public let remoteExperts: DistributedExperts?
    /// Sums gradients over data-parallel replicas (nil: one replica).
    public let reducer: GradientReducer?
    /// The replica that owns each modality group.
    let ownerOfGroup: [String: Int]

    /// `distributedExperts`, when given, builds the backend holding the experts from the setup the
    /// workers need (the trunk then never loads expert tensors).
    public init(options o: TrainingOptions,
                distributedExperts: ((ModelConfig, ExpertTrainingSetup) throws -> DistributedExperts)? = nil,
                reducer: GradientReducer? = nil,
                log: @escaping (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }) throws {
        options = o
        self.log = log
        guard o.batchSize >= 1, o.gradientAccumulation >= 1, o.epochs >= 1 else {
            throw TrainingError.invalidSetting("batch, accumulation and epochs must be at least 1")
        }
        guard o.world >= 1, (0..<o.world).contains(o.rank), (o.world == 1) == (reducer == nil || reducer?.world == 1) else {
            throw TrainingError.invalidSetting("rank \(o.rank) of \(o.world) replicas needs a gradient reducer for \(o.world) replicas")
        }
        guard o.world == 1 || distributedExperts == nil else {
            throw TrainingError.invalidSetting("data-parallel replicas keep their experts local: use either --pipeline experts or --world")
        }
        self.reducer = reducer
        // Samples first: bad data fails before any heavy loading.
        samples = try TrainingData.load(path: o.data, mediaDirectory: o.mediaDirectory, skipBad: o.skipBad, warn: log)
        guard !samples.isEmpty else { throw TrainingError.noData("\(o.data) holds no usable sample") }

        let resumeDir = o.resume ? try Self.latestCheckpoint(in: o.out) : nil
        let local = distributedExperts == nil
        var (config, params, loraScale) = try TrainableModel.loadParameters(directory: o.model, expertsLocal: local)
        if o.stage == .experts && !config.hasMoE {
            let layers = o.moeLayers ?? Array(stride(from: 0, to: config.numHiddenLayers, by: 2))
            config = try StageSetup.upcycle(config: config, params: params, experts: o.upcycleExperts, moeLayers: layers, seed: o.seed,
                                            createExperts: local)
        }
        if o.stage == .mixed {
            if !params.ordered.contains(where: { $0.name.hasSuffix(".lora_A.weight") }) {
                try StageSetup.addLoRA(config: config, params: params, rank: o.loraRank, seed: o.seed)
                loraScale = Float(o.loraAlpha / Double(o.loraRank))
            }
        }
        try StageSetup.setTrainable(stage: o.stage, params: params, config: config)
        model = try TrainableModel(directory: o.model, config: config, params: params, loraScale: loraScale, expertsLocal: local)
        model.trunk.auxLossCoefficient = Float(o.auxLossCoefficient ?? (o.stage == .mixed ? Double(model.trunk.auxLossCoefficient) : 0))
        if o.trainTowers {
            guard o.stage == .pretrain else { throw TrainingError.invalidSetting("--train-towers goes with stage 0") }
            guard let mm = model.multimodal else { throw TrainingError.unsupportedModel("\(o.model) has no towers to train") }
            guard mm.visionSelectFeature == "patch" else { throw TrainingError.unsupportedModel("--train-towers needs mm_vision_select_feature 'patch'") }
            func dir(_ sub: String?) -> String? { sub.map { $0.hasPrefix("/") ? $0 : (o.model as NSString).appendingPathComponent($0) } }
            model.attachTowers(vision: try dir(mm.visionTower).map { try TrainableVisionTower(directory: $0, selectLayer: mm.visionSelectLayer) },
                               audio: try dir(mm.audioTower).map { try TrainableWhisperEncoder(directory: $0) })
        }
        guard o.mediaWords >= 0, o.mediaWords.isFinite else { throw TrainingError.invalidSetting("--media-words must be a weight ≥ 0, got \(o.mediaWords)") }
        let wordIndex = o.mediaWords > 0 ? Self.mediaVocabulary(samples) : [:]
        if o.mediaWords > 0 {
            guard model.connectorsTrainable else {
                throw TrainingError.invalidSetting("--media-words trains the connectors (and towers) through each medium's rows: use it with stage 0 or 1")
            }
            guard !wordIndex.isEmpty else { throw TrainingError.noData("--media-words: no sample of \(o.data) has media and an answer with words") }
            model.attachMediaWords(vocabulary: wordIndex.count, seed: o.seed)
        }
        if o.mediaWordsOnly {
            guard o.mediaWords > 0 else { throw TrainingError.invalidSetting("--media-words-only needs --media-words W > 0") }
            let learners = Set(([model.visionTower?.params, model.audioTower?.params].compactMap { $0 }).flatMap { $0.ordered.map(\.name) }
                               + [MediaWordsOp.weightName, MediaWordsOp.biasName])
            model.params.setTrainable { TrainableModel.isConnector($0) || learners.contains($0) }
        }
        // Tokenise every sample and encode its media once (frozen encoders).
        let tokenizer = try Tokenizer(directory: o.model)
        let encoder = SampleEncoder(tokenizer: tokenizer, maxTokens: o.maxTokens)
        let features = MediaFeatures(modelDirectory: o.model)
        features.towerInputs = o.trainTowers
        var exs: [TrainingExample?] = []
        let start = Date()
        for (i, s) in samples.enumerated() {
            do {
                var ex = try features.example(s, encoder: encoder)
                if !wordIndex.isEmpty && ex.mediaCount > 0 {
                    ex.answerWords = Array(Set(Self.answerWords(s).compactMap { wordIndex[$0] })).sorted()
                }
                exs.append(ex)
            } catch let e as TrainingError {
                guard o.skipBad else { throw e }
                log("warning: skipping \(e)")
                exs.append(nil)
            }
            if (i + 1) % 50 == 0 || i + 1 == samples.count {
                log(String(format: "encoding media: %d/%d samples (%.1f s)", i + 1, samples.count, Date().timeIntervalSince(start)))
            }
        }
        examples = exs
        guard exs.contains(where: { $0 != nil }) else { throw TrainingError.noData("every sample of \(o.data) was skipped") }
        // Workers are configured only now: the dispatcher cannot heartbeat while media is encoded, and
        // a worker that hears nothing for its liveness window reconnects under a new identity.
        if let make = distributedExperts {
            let remote = try make(config, ExpertTrainingSetup(stage: o.stage.rawValue, loraRank: o.loraRank, loraAlpha: o.loraAlpha, seed: o.seed,
                                                      weightDecay: o.weightDecay, upcycleExperts: o.upcycleExperts, moeLayers: o.moeLayers))
            model.trunk.backend = remote
            remoteExperts = remote
        } else {
            remoteExperts = nil
        }
        // With the media-words objective alone, text batches are skipped: an epoch is the media batches.
        batcher = ModalityBatcher(samples: samples, batchSize: o.batchSize, seed: o.seed, skipping: o.mediaWordsOnly ? ["text"] : [])
        var map: [String: Int] = [:]
        if o.stage == .experts {
            for g in Set(samples.map(\.modalityGroup)) {
                let first = String(g.split(separator: "+").first ?? "text")
                guard let e = o.expertModalities.firstIndex(of: first) else {
                    throw TrainingError.invalidSetting("stage 2: no expert is assigned to modality '\(first)' (--expert-modalities \(o.expertModalities.joined(separator: ",")))")
                }
                map[g] = e % config.experts
            }
        }
        expertOfGroup = map
        let sortedGroups = Set(samples.map(\.modalityGroup)).sorted()
        ownerOfGroup = Dictionary(uniqueKeysWithValues: sortedGroups.enumerated().map { ($1, $0 % o.world) })
        let perStep = o.gradientAccumulation * o.world
        let epochBatches = batcher.batches(epoch: 0)
        guard !epochBatches.isEmpty else { throw TrainingError.noData("\(o.data) holds no sample with media for --media-words-only") }
        let perEpoch = (epochBatches.count + perStep - 1) / perStep
        let total = o.steps ?? perEpoch * o.epochs
        schedule = LearningRateSchedule(peak: o.effectiveLearningRate, warmupRatio: o.warmupRatio, totalSteps: total)
        optimizer = AdamW(settings: .init(weightDecay: o.weightDecay))
        let configJSON = try Self.configJSON(config, directory: o.model)
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for s in samples {
            for b in (s.id + "|" + s.modalityGroup + "|" + s.turns.map(\.value).joined(separator: "|") + "\n").utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        }
        state = RunState(step: 0, epoch: 0, cursor: 0, stage: o.stage.rawValue, seed: o.seed, totalSteps: total,
                         batchSize: o.batchSize, accumulation: o.gradientAccumulation, loraScale: loraScale, config: configJSON,
                         data: "\(samples.count):" + String(h, radix: 16), learningRate: o.effectiveLearningRate, world: o.world,
                         mediaWords: o.mediaWords > 0 ? o.mediaWords : nil)
        if let dir = resumeDir { try restore(from: dir) }
    }

    public var totalSteps: Int { state.totalSteps }
    public var step: Int { state.step }

    /// Runs until the total step count (or `shouldStop`), then writes the final model to `out`.
    public func run() throws {
        // Data-parallel replicas hold identical parameters: rank 0 alone writes logs, checkpoints and the model.
        let leader = options.rank == 0
        try FileManager.default.createDirectory(atPath: options.out, withIntermediateDirectories: true)
        let logPath = (options.out as NSString).appendingPathComponent("loss.jsonl")
        if leader && !options.resume {
            // A fresh run owns OUT: an earlier run's checkpoints left there would outrank its own
            // (only the two highest steps are kept) and a later --resume would continue that run.
            try? FileManager.default.removeItem(atPath: Self.checkpointRoot(options.out))
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        } else if leader {
            if FileManager.default.fileExists(atPath: logPath) { try Self.truncateLog(logPath, toStep: state.step) }
            else { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        }
        let trainable = model.params.trainable
        log("stage \(options.stage.rawValue): training \(trainable.count) tensors (\(trainable.reduce(0) { $0 + $1.count }) values) here"
            + (remoteExperts != nil ? " and the experts' in their workers" : "")
            + ", \(samples.count) samples, \(state.totalSteps) steps" + (state.step > 0 ? ", resuming at step \(state.step)" : ""))
        let runStart = Date()
        let firstStep = state.step
        while state.step < state.totalSteps {
            let t0 = Date()
            let record: StepRecord
            do { record = try trainStep() } catch TrainingError.remote(let why) {
                let last = (try? Self.latestCheckpoint(in: options.out)).flatMap { $0 }
                throw TrainingError.remote("\(why) — stopped at step \(state.step); " + (last.map { "resume from \($0) with --resume once every worker is back" }
                                                                                     ?? "no checkpoint was written yet (use --save-every N)"))
            }
            records.append(record)
            if leader { appendLog(record, to: logPath) }
            let elapsed = Date().timeIntervalSince(runStart)
            let done = state.step - firstStep
            let eta = elapsed / Double(max(done, 1)) * Double(state.totalSteps - state.step)
            log(String(format: "step %d/%d  loss %.4f  ce %.4f  aux %.4f%@  lr %.2e  |g| %.3f  %.0f tok/s  %.2f s/step  ETA %@",
                       record.step, state.totalSteps, record.loss, record.crossEntropy, record.auxLoss,
                       record.mediaWords.map { String(format: "  words %.4f", $0) } ?? "", record.learningRate,
                       record.gradNorm, record.tokensPerSecond, Date().timeIntervalSince(t0), Self.duration(eta)))
            onStep?(record)
            if leader && options.saveEvery > 0 && state.step % options.saveEvery == 0 && state.step < state.totalSteps {
                try saveCheckpoint()
            }
            if shouldStop(state.step) { return }
        }
        guard leader else { return }
        try saveCheckpoint()
        try exportModel(to: options.out)
        try writeRouting(to: (options.out as NSString).appendingPathComponent("routing.json"))
        log("wrote \(options.out) after \(state.step) steps (\(Self.duration(Date().timeIntervalSince(runStart))))")
    }

    /// One optimizer step over `accumulation` micro-batches.
    func trainStep() throws -> StepRecord {
        var micro: [[TrainingExample]] = []
        var groups: [String] = []
        while micro.count < state.accumulation * options.world {
            let epochBatches = batcher.batches(epoch: state.epoch)
            if state.cursor >= epochBatches.count { state.epoch += 1; state.cursor = 0; continue }
            let idx = epochBatches[state.cursor]
            state.cursor += 1
            let exs = idx.compactMap { examples[$0] }
            if exs.isEmpty { continue }
            micro.append(exs)
            groups.append(samples[idx[0]].modalityGroup)
        }
        let tokens = micro.reduce(0) { $0 + $1.reduce(0) { $0 + $1.targetCount } }
        guard tokens > 0 || options.mediaWordsOnly else { throw TrainingError.noData("a batch has no answer tokens to learn") }
        model.params.zeroGrads()
        try remoteExperts?.zeroGrads()
        let t0 = Date()
        var ce = 0.0, aux = 0.0
        let auxScale = model.trunk.auxLossCoefficient / Float(micro.count)
        // The media-words loss is a mean over the step's media.
        let media = micro.reduce(0) { $0 + $1.reduce(0) { $0 + $1.mediaCount } }
        let wordsScale = Float(options.mediaWords) / Float(max(media, 1))
        var words = 0.0
        for (exs, group) in zip(micro, groups) where (ownerOfGroup[group] ?? 0) == options.rank {
            model.trunk.forceExpert(options.stage == .experts ? expertOfGroup[group] : nil)
            let s = try model.accumulate(exs, ceScale: 1 / Float(max(tokens, 1)), auxScale: auxScale, wordsScale: wordsScale,
                                         trunkLoss: !options.mediaWordsOnly)
            words += s.mediaWordsLoss
            for (layer, counts) in s.routing {
                var c = routing[group, default: [:]][layer] ?? [Int](repeating: 0, count: counts.count)
                for (e, n) in counts.enumerated() where e < c.count { c[e] += n }
                routing[group, default: [:]][layer] = c
            }
            ce += s.crossEntropySum
            aux += s.auxLoss / Double(micro.count)
        }
        model.trunk.forceExpert(nil)
        let trainable = model.params.trainable
        if let reducer, reducer.world > 1 {
            let (sum, stats) = try reducer.allReduce(ParameterSet.flatGradients(trainable), stats: [ce, aux, words])
            try ParameterSet.setGradients(trainable, from: sum)
            ce = stats[0]; aux = stats[1]; words = stats[2]
        }
        let norm = (AdamW.gradientSquares(trainable) + (try remoteExperts?.gradientSquares() ?? 0)).squareRoot()
        let clip = AdamW.clipCoefficient(norm: norm, maxNorm: options.maxGradNorm)
        AdamW.scaleGradients(trainable, by: clip)
        let lr = schedule.rate(step: state.step)
        optimizer.update(trainable, lr: lr)
        try remoteExperts?.step(lr: lr, clip: clip)
        state.step += 1
        let secs = Date().timeIntervalSince(t0)
        let ceMean = ce / Double(max(tokens, 1))
        let wordsMean: Double? = model.mediaWords == nil ? nil : words / Double(max(media, 1))
        let trained = options.mediaWordsOnly ? 0 : tokens   // words alone train no answer token
        return StepRecord(step: state.step, epoch: state.epoch,
                          loss: ceMean + Double(model.trunk.auxLossCoefficient) * aux + options.mediaWords * (wordsMean ?? 0),
                          crossEntropy: ceMean, auxLoss: aux, mediaWords: wordsMean, learningRate: lr, gradNorm: norm, tokens: trained,
                          tokensPerSecond: Double(trained) / max(secs, 1e-9), seconds: secs)
    }

    /// The media-words vocabulary: every word of the answers of samples with media, sorted, → index.
    static func mediaVocabulary(_ samples: [RawSample]) -> [String: Int] {
        let words = Set(samples.filter { $0.modalityGroup != "text" }.flatMap(answerWords))
        return Dictionary(uniqueKeysWithValues: words.sorted().enumerated().map { ($1, $0) })
    }

    /// The words of a sample's answers (its gpt turns).
    static func answerWords(_ s: RawSample) -> [String] {
        s.turns.filter { !$0.fromHuman }.flatMap { MediaWordsOp.words($0.value) }
    }

    /// `{"group": {"layer": [slots per expert]}}` of the steps this process ran (since a resume).
    func writeRouting(to path: String) throws {
        guard !routing.isEmpty else { return }
        var obj: [String: [String: [Int]]] = [:]
        for (g, layers) in routing { obj[g] = Dictionary(uniqueKeysWithValues: layers.map { ("\($0.key)", $0.value) }) }
        try StepRecord.encoder.encode(obj).write(to: URL(fileURLWithPath: path))
    }

    func appendLog(_ r: StepRecord, to path: String) {
        guard let data = try? StepRecord.encoder.encode(r), let h = FileHandle(forWritingAtPath: path) else { return }
        h.seekToEndOfFile()
        h.write(data + Data("\n".utf8))
        try? h.close()
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }

    static func truncateLog(_ path: String, toStep step: Int) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let d = line.data(using: .utf8), let r = try? JSONDecoder().decode(StepRecord.self, from: d) else { return false }
            return r.step <= step
        }
        try (kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).write(toFile: path, atomically: true, encoding: .utf8)
    }
}
