import Foundation
import Checkpoint
import Models
import Tensor

/// The three progressive stages of Uni-MoE and what each trains, after an optional stage 0:
/// 0. pretraining — every trunk tensor and the connectors (the encoders too with `--train-towers`):
///    for a model that starts from random weights (the embedded demo model), where the paper starts
///    from Vicuna;
/// 1. connector alignment — the image projector, the speech connector and its queries (trunk frozen);
/// 2. modality experts — the experts' FFNs, each expert on its own modality's batches (a dense model
///    is first upcycled: every MoE layer's experts start as copies of its dense MLP);
/// 3. mixed tuning — LoRA on every trunk linear except routers and the LM head, plus the routers,
///    with the auxiliary load-balancing loss (a dense trunk tunes its LoRA alone: the baseline of
///    the MoE-vs-dense comparison).
public enum TrainingStage: Int, Sendable, CaseIterable {
    case pretrain = 0, alignment = 1, experts = 2, mixed = 3
}

public enum StageSetup {
    /// Stage 2 on a dense trunk: makes `experts` copies of the dense MLP of every layer in
    /// `moeLayers` (named as a `unimoe` model) and a router initialised N(0, 0.02²) from `seed`;
    /// returns the MoE config.
    /// `createExperts` false leaves the expert tensors out (a trunk whose experts live in workers).
    public static func upcycle(config: ModelConfig, params: ParameterSet, experts: Int, moeLayers: [Int], seed: UInt64,
                               createExperts: Bool = true) throws -> ModelConfig {
        guard !config.hasMoE else { return config }
        guard experts >= 2 else { throw TrainingError.invalidSetting("upcycling needs at least 2 experts, got \(experts)") }
        var c = config
        c.modelType = "unimoe"
        c.numExpertsRaw = experts
        c.numExpertsPerTokRaw = min(2, experts)
        c.moeLayers = moeLayers
        c.raw["model_type"] = .string("unimoe")
        let arch = try Architecture.forConfig(c)
        var rng = Xoshiro256(seed: seed ^ 0x5EED_0002)
        let h = config.hiddenSize
        // The dense MLPs of the MoE layers are replaced by their expert copies; everything else stays.
        let moved = Set(moeLayers.flatMap { l in Projection.allCases.map { arch.denseName(layer: l, $0) } })
        if let missing = moved.sorted().first(where: { params[$0] == nil }) {
            throw TrainingError.badCheckpoint(path: missing, reason: "dense MLP tensor missing, cannot upcycle")
        }
        let rebuilt = ParameterSet()
        for p in params.ordered where !moved.contains(p.name) { rebuilt.add(p) }
        for l in moeLayers {
            let router = Tensor(zeros: [experts, h])
            for i in 0..<router.count { router.floats[i] = Float(gaussian(&rng) * 0.02) }
            rebuilt.add(Parameter(name: arch.routerName(layer: l), value: router))
            for e in 0..<experts where createExperts {
                for proj in Projection.allCases {
                    guard let src = params[arch.denseName(layer: l, proj)] else { continue }
                    rebuilt.add(Parameter(name: arch.expertName(layer: l, expert: e, proj), value: src.value))
                }
            }
        }
        params.replaceAll(with: rebuilt.ordered)
        return c
    }

    /// Adds LoRA adapters (A ~ U(±1/sqrt(in)) as PEFT's kaiming-uniform(a=√5), B = 0) to every trunk
    /// linear except routers and the LM head, unless the model already has them.
    /// Each A is drawn from a generator seeded by (seed, tensor name), so a process holding only some
    /// experts initialises them exactly as a process holding the whole model.
    public static func addLoRA(config: ModelConfig, params: ParameterSet, rank: Int, seed: UInt64) throws {
        guard rank > 0 else { throw TrainingError.invalidSetting("LoRA rank must be positive, got \(rank)") }
        if params.ordered.contains(where: { $0.name.hasSuffix(".lora_A.weight") }) { return }
        for p in params.ordered where isLoRATarget(p.name, config: config) {
            var rng = Xoshiro256(seed: seed ^ 0x10_4A ^ fnv1a(p.name))
            let out = p.shape[0], inF = p.shape[1]
            let a = Tensor(zeros: [rank, inF])
            let bound = 1 / Float(inF).squareRoot()
            for i in 0..<a.count { a.floats[i] = Float(Double(rng.next() >> 11) / Double(1 << 53)) * 2 * bound - bound }
            let base = String(p.name.dropLast(".weight".count))
            params.add(Parameter(name: base + ".lora_A.weight", value: a))
            params.add(Parameter(name: base + ".lora_B.weight", value: Tensor(zeros: [out, rank])))
        }
    }

    /// Trunk linears LoRA applies to: attention projections and every MLP / expert projection.
    public static func isLoRATarget(_ name: String, config: ModelConfig) -> Bool {
        guard name.hasPrefix("model.layers."), name.hasSuffix(".weight"), !name.contains(".lora_") else { return false }
        let linears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"]
        return linears.contains { name.hasSuffix(".\($0).weight") }
    }

    /// Marks what `stage` trains; everything else is frozen.
    public static func setTrainable(stage: TrainingStage, params: ParameterSet, config: ModelConfig) throws {
        let arch = try Architecture.forConfig(config)
        switch stage {
        case .pretrain:
            params.setTrainable { !$0.contains(".lora_") }
        case .alignment:
            params.setTrainable { MultimodalConfig.isConnectorTensor($0) }
            guard !params.trainable.isEmpty else { throw TrainingError.unsupportedModel("stage 1 trains the connectors, and this model has none") }
        case .experts:
            guard config.hasMoE else { throw TrainingError.unsupportedModel("stage 2 needs MoE layers (pass --experts N to upcycle a dense model)") }
            params.setTrainable { arch.isExpertTensor($0) && !$0.contains(".lora_") }
        case .mixed:
            // A dense trunk tunes its LoRA adapters alone (the dense baseline of the MoE-vs-dense comparison).
            params.setTrainable { $0.contains(".lora_A.") || $0.contains(".lora_B.") || isRouter($0, arch) }
        }
    }

    static func isRouter(_ name: String, _ arch: Architecture) -> Bool {
        name.hasPrefix("model.layers.") && name.hasSuffix(".\(arch.moeModule).gate.weight")
    }

    /// FNV-1a of a name (stable across runs and platforms, unlike `hashValue`).
    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    static func gaussian(_ rng: inout Xoshiro256) -> Double {
        let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-300), u2 = Double(rng.next() >> 11) / Double(1 << 53)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

extension ParameterSet {
    /// Replaces the whole set (upcycling rebuilds it in a new order).
    func replaceAll(with params: [Parameter]) {
        let fresh = ParameterSet()
        for p in params { fresh.add(p) }
        self.adopt(fresh)
    }
}
