import Checkpoint

/// The three projections of a SwiGLU feed-forward block (`down(act(gate(x)) · up(x))`).
public enum Projection: Sendable, CaseIterable {
    case gate, up, down
}

/// Where an architecture keeps its tensors: the registry maps `model_type` to the checkpoint names
/// of routers, experts and dense MLPs, so the trunk and `LocalExperts` never spell names themselves.
/// Attention, norms and embeddings use the LLaMA names in every architecture.
public struct Architecture: Sendable, Equatable {
    public let modelType: String
    /// Module holding a sparse layer's router (`gate`) and `experts`: `block_sparse_moe` or `mlp`.
    public let moeModule: String
    /// Per-expert projection names for gate, up, down (`w1 w3 w2` in Mixtral).
    public let expertProjections: [String]
    /// How the router's logits become the k choices and their weights.
    public let routingRule: RoutingRule
    /// Whether sparse layers also hold a shared expert (`mlp.shared_expert.*`) and its gate
    /// (`mlp.shared_expert_gate.weight` `[1, hidden]`), added as `sigmoid(gate · x) · shared(x)`.
    /// It is part of the trunk: remote placement serves only the routed experts.
    public let sharedExpert: Bool

    public init(modelType: String, moeModule: String, expertProjections: [String],
                routingRule: RoutingRule = .softmaxOverChosen, sharedExpert: Bool = false) {
        self.modelType = modelType
        self.moeModule = moeModule
        self.expertProjections = expertProjections
        self.routingRule = routingRule
        self.sharedExpert = sharedExpert
    }

    /// Every architecture the engine implements, by `model_type`.
    public static let registry: [String: Architecture] = [
        "llama": Architecture(modelType: "llama", moeModule: "mlp", expertProjections: ["gate_proj", "up_proj", "down_proj"]),
        "mixtral": Architecture(modelType: "mixtral", moeModule: "block_sparse_moe", expertProjections: ["w1", "w3", "w2"]),
        // Softmax over all experts; `norm_topk_prob` (config) decides whether the top-k are renormalised.
        "qwen2_moe": Architecture(modelType: "qwen2_moe", moeModule: "mlp", expertProjections: ["gate_proj", "up_proj", "down_proj"],
                                  routingRule: .softmaxOverAll(renormalize: false), sharedExpert: true),
        "unimoe": Architecture(modelType: "unimoe", moeModule: "mlp", expertProjections: ["gate_proj", "up_proj", "down_proj"]),
    ]

    /// The architecture for a config's `model_type`.
    public static func named(_ modelType: String) throws -> Architecture {
        guard let a = registry[modelType] else {
            throw ModelError.unsupported("model_type '\(modelType)'; supported: \(registry.keys.sorted().joined(separator: ", "))")
        }
        return a
    }

    /// The architecture for a config, with qwen2_moe's `norm_topk_prob` folded into the routing rule.
    public static func forConfig(_ config: ModelConfig) throws -> Architecture {
        let a = try named(config.modelType)
        guard case .softmaxOverAll = a.routingRule else { return a }
        return Architecture(modelType: a.modelType, moeModule: a.moeModule, expertProjections: a.expertProjections,
                            routingRule: .softmaxOverAll(renormalize: config.normTopKProb), sharedExpert: a.sharedExpert)
    }

    public func layerPrefix(_ layer: Int) -> String { "model.layers.\(layer)" }

    /// Router weight `[experts, hidden]` of a sparse layer.
    public func routerName(layer: Int) -> String { "\(layerPrefix(layer)).\(moeModule).gate.weight" }

    /// One expert's projection weight.
    public func expertName(layer: Int, expert: Int, _ p: Projection) -> String {
        "\(layerPrefix(layer)).\(moeModule).experts.\(expert).\(projectionName(p)).weight"
    }

    /// A dense layer's MLP projection weight.
    public func denseName(layer: Int, _ p: Projection) -> String {
        let n: String
        switch p { case .gate: n = "gate_proj"; case .up: n = "up_proj"; case .down: n = "down_proj" }
        return "\(layerPrefix(layer)).mlp.\(n).weight"
    }

    /// A sparse layer's shared-expert projection weight (architectures with `sharedExpert`).
    public func sharedExpertName(layer: Int, _ p: Projection) -> String {
        let n: String
        switch p { case .gate: n = "gate_proj"; case .up: n = "up_proj"; case .down: n = "down_proj" }
        return "\(layerPrefix(layer)).\(moeModule).shared_expert.\(n).weight"
    }

    /// The shared expert's gate `[1, hidden]`.
    public func sharedExpertGateName(layer: Int) -> String { "\(layerPrefix(layer)).\(moeModule).shared_expert_gate.weight" }

    private func projectionName(_ p: Projection) -> String {
        switch p { case .gate: return expertProjections[0]; case .up: return expertProjections[1]; case .down: return expertProjections[2] }
    }

    /// Whether `unimoe quantize` stores a trunk tensor as q8_0: the linear weights the trunk reads
    /// through `Linear` or `Gather` — attention and MLP/expert/shared-expert projections
    /// (`*_proj.weight`, Mixtral's `experts.E.w1/w2/w3.weight`), `model.embed_tokens.weight` and
    /// `lm_head.weight`. Routers, the shared-expert gate, norms and connectors stay as stored.
    /// (The caller also needs a 2-D shape with columns divisible by 32.)
    public func isQuantizable(_ name: String) -> Bool {
        if name == "model.embed_tokens.weight" || name == "lm_head.weight" { return true }
        guard name.hasPrefix("model.layers."), name.hasSuffix(".weight") else { return false }
        return name.hasSuffix("_proj.weight") || isExpertTensor(name)
    }

    /// Whether a checkpoint tensor belongs to an expert (what a router process skips and an
    /// expert worker loads).
    public func isExpertTensor(_ name: String) -> Bool {
        name.hasPrefix("model.layers.") && name.contains(".\(moeModule).experts.")
    }
}
