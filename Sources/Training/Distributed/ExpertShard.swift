import Foundation
import Checkpoint
import Models
import Tensor

/// How the trunk tells an expert worker what to train (sent once when a run starts): the stage, the
/// LoRA shape, the seed (LoRA initialisation is per tensor name, so a worker's adapters equal the
/// ones an in-process run makes), upcycling of a dense model, and AdamW's weight decay.
public struct ExpertTrainingSetup: Codable, Sendable, Equatable {
    public var stage: Int
    public var loraRank: Int
    public var loraAlpha: Double
    public var seed: UInt64
    public var weightDecay: Double
    /// Dense model only: experts per MoE layer and which layers become MoE.
    public var upcycleExperts: Int
    public var moeLayers: [Int]?

    public init(stage: Int, loraRank: Int, loraAlpha: Double, seed: UInt64, weightDecay: Double, upcycleExperts: Int, moeLayers: [Int]?) {
        self.stage = stage; self.loraRank = loraRank; self.loraAlpha = loraAlpha; self.seed = seed
        self.weightDecay = weightDecay; self.upcycleExperts = upcycleExperts; self.moeLayers = moeLayers
    }
}

/// The experts one worker process trains: their parameters (f32, with LoRA in stage 3), the
/// activations of the last forward per expert, their gradients and AdamW moments. The trunk drives it
/// (forward, backward, gradient norm, step, state) through `DistributedExperts`; the same class
/// serves in-process tests.
public final class ExpertShard {
    public let config: ModelConfig
    public let setup: ExpertTrainingSetup
    let params = ParameterSet()
    private var ops: [String: FeedForwardOp] = [:]
    private let optimizer: AdamW
    public let loraScale: Float
    /// (layer, expert) pairs held, sorted.
    public let held: [(layer: Int, expert: Int)]

    /// Loads only the tensors of `experts` in `layers` (nil: every MoE layer) from `modelDirectory`.
    public init(modelDirectory: String, layers: [Int]?, experts: [Int], setup: ExpertTrainingSetup) throws {
        self.setup = setup
        guard let stage = TrainingStage(rawValue: setup.stage) else { throw TrainingError.invalidSetting("stage \(setup.stage)") }
        var config = try ModelConfig.load(directory: modelDirectory)
        let ckpt = try Checkpoint(directory: modelDirectory, mergeAdapters: false)
        var arch = try Architecture.forConfig(config)
        if !config.hasMoE {
            let moeLayers = setup.moeLayers ?? Array(stride(from: 0, to: config.numHiddenLayers, by: 2))
            let dense = ParameterSet()
            for l in moeLayers {
                for p in Projection.allCases { let n = arch.denseName(layer: l, p); dense.add(Parameter(name: n, value: try ckpt.take(n))) }
            }
            config = try StageSetup.upcycle(config: config, params: dense, experts: setup.upcycleExperts, moeLayers: moeLayers, seed: setup.seed)
            arch = try Architecture.forConfig(config)
            let wantedLayers = Set(layers ?? moeLayers)
            for p in dense.ordered where arch.isExpertTensor(p.name) {
                if let (l, e) = Self.layerExpert(p.name), wantedLayers.contains(l), experts.contains(e) { params.add(p) }
            }
        } else {
            let moe = (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
            for l in layers ?? moe {
                guard config.isMoE(layer: l) else { throw TrainingError.invalidSetting("layer \(l) is not a MoE layer of \(modelDirectory)") }
                for e in experts {
                    guard e >= 0 && e < config.experts else { throw TrainingError.invalidSetting("expert \(e): the model has \(config.experts)") }
                    for p in Projection.allCases {
                        let n = arch.expertName(layer: l, expert: e, p)
                        params.add(Parameter(name: n, value: try ckpt.take(n)))
                    }
                }
            }
        }
        self.config = config
        // Adapters saved with the model (a resumed stage 3) come along for the held experts.
        var scale = Float(setup.loraAlpha / Double(max(setup.loraRank, 1)))
        let adapterPath = (modelDirectory as NSString).appendingPathComponent(AdapterConfig.weightsFile)
        if FileManager.default.fileExists(atPath: adapterPath) {
            scale = try AdapterConfig.load(directory: modelDirectory).scale
            let adapters = try Checkpoint(file: adapterPath)
            let heldNames = Set(params.ordered.map { String($0.name.dropLast(".weight".count)) })
            for n in adapters.names {
                let stem = n.replacingOccurrences(of: ".lora_A.weight", with: "").replacingOccurrences(of: ".lora_B.weight", with: "")
                if heldNames.contains(stem) { params.add(Parameter(name: n, value: try adapters.take(n))) }
            }
        }
        if stage == .mixed { try StageSetup.addLoRA(config: config, params: params, rank: setup.loraRank, seed: setup.seed) }
        loraScale = scale
        switch stage {
        case .pretrain: params.setTrainable { !$0.contains(".lora_") }
        case .alignment: params.setTrainable { _ in false }
        case .experts: params.setTrainable { !$0.contains(".lora_") }
        case .mixed: params.setTrainable { $0.contains(".lora_") }
        }
        var pairs: [(Int, Int)] = []
        for p in params.ordered where p.name.hasSuffix(".weight") && !p.name.contains(".lora_") {
            guard let (l, e) = Self.layerExpert(p.name), ops["\(l)/\(e)"] == nil else { continue }
            ops["\(l)/\(e)"] = try TrainableTrunk.expert(params, config: config, architecture: arch, layer: l, expert: e, loraScale: scale)
            pairs.append((l, e))
        }
        held = pairs.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { (layer: $0.0, expert: $0.1) }
        optimizer = AdamW(settings: .init(weightDecay: setup.weightDecay))
    }

    /// (layer, expert) of an expert tensor name `model.layers.L.<module>.experts.E.…`.
    static func layerExpert(_ name: String) -> (Int, Int)? {
        let parts = name.split(separator: ".")
        guard parts.count > 5, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]),
              let i = parts.firstIndex(of: "experts"), i + 1 < parts.count, let e = Int(parts[i + 1]) else { return nil }
        return (l, e)
    }

    private func op(_ layer: Int, _ expert: Int) throws -> FeedForwardOp {
        guard let o = ops["\(layer)/\(expert)"] else { throw TrainingError.remote("this worker does not hold expert \(expert) of layer \(layer)") }
        return o
    }

    public func forward(layer: Int, expert: Int, rows: Tensor) throws -> Tensor {
        let o = try op(layer, expert)
        guard rows.rank == 2, rows.lastDim == config.hiddenSize else {
            throw TrainingError.remote("expert rows \(rows.shape), expected [n, \(config.hiddenSize)]")
        }
        return o.forward(rows.converted(to: .f32).copy())
    }

    public func backward(layer: Int, expert: Int, outputGrad: Tensor) throws -> Tensor {
        let o = try op(layer, expert)
        guard outputGrad.rank == 2, outputGrad.lastDim == config.hiddenSize else {
            throw TrainingError.remote("expert gradient \(outputGrad.shape), expected [n, \(config.hiddenSize)]")
        }
        let dx = o.backward(outputGrad.converted(to: .f32).copy())
        o.release()
        return dx
    }

    public var trainable: [Parameter] { params.trainable }
    public func zeroGrads() { params.zeroGrads() }
    public func gradientSquares() -> Double { AdamW.gradientSquares(trainable) }

    /// Scales the gradients by the trunk's clipping factor, then one AdamW update.
    public func step(lr: Double, clip: Float) {
        AdamW.scaleGradients(trainable, by: clip)
        optimizer.update(trainable, lr: lr)
    }

    /// Trainable tensors by name plus their moments (`exp_avg.NAME`, `exp_avg_sq.NAME`), for checkpoints.
    public func state() -> [(String, Tensor)] { trainable.map { ($0.name, $0.value) } + optimizer.stateTensors() }

    /// Restores the trainable values and moments present in `tensors` (a page of the saved state).
    public func restore(step: Int, tensors: [String: Tensor]) throws {
        for p in trainable {
            guard let t = tensors[p.name] else { continue }
            guard t.shape == p.shape else { throw TrainingError.badCheckpoint(path: p.name, reason: "shape \(t.shape) in the restored state, \(p.shape) here") }
            Vec.copy(p.value, at: 0, from: t)
        }
        let mine = Set(trainable.map(\.name))
        optimizer.restore(step: step, tensors: tensors.filter { k, _ in
            mine.contains(k.hasPrefix("exp_avg_sq.") ? String(k.dropFirst(11)) : k.hasPrefix("exp_avg.") ? String(k.dropFirst(8)) : "")
        }, merge: true)
    }

    /// The held experts' tensors for the final model: LoRA merged into the weights, or kept apart.
    public func export(mergeLoRA: Bool) -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        for p in params.ordered where !p.name.contains(".lora_") {
            let stem = String(p.name.dropLast(".weight".count))
            if let a = params[stem + ".lora_A.weight"], let b = params[stem + ".lora_B.weight"] {
                if mergeLoRA { out.append((p.name, LoRA(a: a, b: b, scale: loraScale).merged(into: p.value))) } else {
                    out += [(p.name, p.value), (a.name, a.value), (b.name, b.value)]
                }
            } else {
                out.append((p.name, p.value))
            }
        }
        return out
    }
}

extension LoRA {
    /// W + scale · B·A as a new tensor.
    func merged(into w: Tensor) -> Tensor {
        let m = w.copy()
        Matmul.gemm(m: w.shape[0], n: w.shape[1], k: rank, a: b.value, lda: rank, b: a.value, ldb: w.shape[1], c: m, ldc: w.shape[1],
                    alpha: scale, beta: 1)
        return m
    }
}
