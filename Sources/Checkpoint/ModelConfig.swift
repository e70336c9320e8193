import Foundation
import JSON

/// The language-model trunk's `config.json` (`model_type` `llama`, `mixtral`, `qwen2_moe` or `unimoe`), decoded
/// with explicit snake_case keys and the defaults transformers uses, plus a normalised view of the
/// MoE layout (`experts`, `expertsPerToken`, `isMoE(layer:)`) so the model code never has to know
/// which spelling a checkpoint used. `raw` keeps every key, so other parts (the multimodal
/// `mm_*` keys) can read what this struct does not model.
public struct ModelConfig: Codable, Sendable, Equatable {
    /// The architectures the trunk implements.
    public static let supportedModelTypes = ["llama", "mixtral", "qwen2_moe", "unimoe"]

    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Defaults to `numAttentionHeads` (no grouped-query attention).
    public var numKeyValueHeads: Int
    /// Defaults to `hiddenSize / numAttentionHeads`.
    public var headDim: Int
    public var rmsNormEps: Double
    /// From `rope_theta`, or `rope_parameters.rope_theta` (transformers 5 spelling); default 10000.
    public var ropeTheta: Double
    /// `rope_parameters.rope_type` / `rope_scaling.rope_type`; only `default` is accepted by `validate`.
    public var ropeType: String
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var hiddenAct: String
    public var bosTokenId: Int?
    /// `eos_token_id` may be one id or a list; always a list here (possibly empty).
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    /// `torch_dtype` or `dtype` (transformers 5), e.g. `bfloat16`.
    public var torchDtype: String?
    /// Bias on every attention projection (LLaMA `attention_bias`); false for qwen2_moe, whose
    /// `o_proj` has none.
    public var attentionBias: Bool
    /// Bias on the q/k/v projections: `attention_bias` for LLaMA-style configs, `qkv_bias`
    /// (default true) for qwen2_moe.
    public var qkvBias: Bool
    public var mlpBias: Bool
    /// Mixtral's sliding-window attention size; nil (or absent) means full attention.
    public var slidingWindow: Int?
    /// Mixtral: `num_local_experts`; unimoe: `num_experts`; nil for dense llama.
    public var numExpertsRaw: Int?
    /// `num_experts_per_tok` (top-k); nil when the config has no experts.
    public var numExpertsPerTokRaw: Int?
    /// unimoe: layer indices whose MLP is MoE; nil means every layer.
    public var moeLayers: [Int]?
    /// unimoe `router_noise`: the 8-expert model's Gumbel-noised second choice (off by default).
    public var routerNoise: Bool
    /// qwen2_moe `moe_intermediate_size` (default 1408): the routed experts' inner size; nil
    /// elsewhere (experts then use `intermediate_size`).
    public var moeIntermediateSize: Int?
    /// qwen2_moe `shared_expert_intermediate_size` (default 5632): the shared expert every sparse
    /// layer adds, gated by `sigmoid(shared_expert_gate(x))`; nil elsewhere (no shared expert).
    public var sharedExpertIntermediateSize: Int?
    /// qwen2_moe `norm_topk_prob` (default false): renormalise the top-k of the softmax over all
    /// experts to sum 1. Only meaningful for qwen2_moe.
    public var normTopKProb: Bool
    /// qwen2_moe `decoder_sparse_step` (default 1): layer l is sparse when (l + 1) % step == 0 …
    public var decoderSparseStep: Int?
    /// … and l is not in `mlp_only_layers` (default []). `moeLayers` holds the result.
    public var mlpOnlyLayers: [Int]?

    /// Every key of the file as read (empty for a config built in code).
    public var raw: [String: JSONValue] = [:]

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case hiddenAct = "hidden_act"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case padTokenId = "pad_token_id"
        case torchDtype = "torch_dtype"
        case dtype = "dtype"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case numLocalExperts = "num_local_experts"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeLayers = "moe_layers"
        case routerNoise = "router_noise"
        case qkvBias = "qkv_bias"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case normTopKProb = "norm_topk_prob"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
        case useSlidingWindow = "use_sliding_window"
    }

    /// Builds a config in code (tests, tools); omitted values take the same defaults as decoding.
    public init(modelType: String = "llama", vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
                numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int? = nil, headDim: Int? = nil,
                rmsNormEps: Double = 1e-6, ropeTheta: Double = 10000, maxPositionEmbeddings: Int = 2048,
                tieWordEmbeddings: Bool = false, hiddenAct: String = "silu",
                bosTokenId: Int? = 1, eosTokenIds: [Int] = [2], padTokenId: Int? = nil,
                experts: Int? = nil, expertsPerToken: Int? = nil, moeLayers: [Int]? = nil, routerNoise: Bool = false) {
        self.modelType = modelType
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeType = "default"
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.hiddenAct = hiddenAct
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.padTokenId = padTokenId
        self.torchDtype = nil
        self.attentionBias = false
        self.qkvBias = false
        self.mlpBias = false
        self.slidingWindow = nil
        self.numExpertsRaw = experts
        self.numExpertsPerTokRaw = expertsPerToken ?? (experts == nil ? nil : 2)
        self.moeLayers = moeLayers
        self.routerNoise = routerNoise
        self.normTopKProb = false
        self.headDimGiven = headDim != nil
    }

    /// Whether `head_dim` was given explicitly (then heads need not divide hidden).
    public private(set) var headDimGiven: Bool

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decode(String.self, forKey: .modelType)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        let hd = try c.decodeIfPresent(Int.self, forKey: .headDim)
        headDimGiven = hd != nil
        headDim = hd ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        let isMixtral = modelType == "mixtral"
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? (isMixtral ? 1e-5 : 1e-6)

        // RoPE: transformers ≤ 4 writes `rope_theta` (+ optional `rope_scaling`), 5 writes `rope_parameters`.
        let ropeParameters = try c.decodeIfPresent([String: JSONValue].self, forKey: .ropeParameters)
        let ropeScaling = try c.decodeIfPresent([String: JSONValue].self, forKey: .ropeScaling)
        if let t = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) {
            ropeTheta = t
        } else if let p = ropeParameters?["rope_theta"] {
            guard let t = p.doubleValue else {
                throw DecodingError.typeMismatch(Double.self, .init(codingPath: [CodingKeys.ropeParameters],
                                                                    debugDescription: "rope_parameters.rope_theta is not a number"))
            }
            ropeTheta = t
        } else {
            ropeTheta = isMixtral ? 1e6 : 10000
        }
        let typeValue = ropeParameters?["rope_type"] ?? ropeParameters?["type"] ?? ropeScaling?["rope_type"] ?? ropeScaling?["type"]
        ropeType = typeValue?.stringValue ?? "default"

        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId) {
            eosTokenIds = [one]
        } else {
            eosTokenIds = try c.decodeIfPresent([Int].self, forKey: .eosTokenId) ?? []
        }
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId)
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype) ?? c.decodeIfPresent(String.self, forKey: .dtype)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        qkvBias = attentionBias
        normTopKProb = false
        switch modelType {
        case "qwen2_moe":
            // Qwen2MoeConfig: q/k/v always had a bias (`qkv_bias`, default true), o_proj none;
            // `sliding_window` only counts with `use_sliding_window` (validate rejects that).
            qkvBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? true
            attentionBias = false
            if try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) != true { slidingWindow = nil }
            numExpertsRaw = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 60
            numExpertsPerTokRaw = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
            moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
            sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 5632
            normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? false
            let step = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
            let dense = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
            decoderSparseStep = step
            mlpOnlyLayers = dense
            moeLayers = step > 0 ? (0..<numHiddenLayers).filter { !dense.contains($0) && ($0 + 1) % step == 0 } : []
        case "mixtral":
            numExpertsRaw = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 8
            numExpertsPerTokRaw = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
            moeLayers = nil
        case "unimoe":
            numExpertsRaw = try c.decode(Int.self, forKey: .numExperts)
            numExpertsPerTokRaw = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
            moeLayers = try c.decodeIfPresent([Int].self, forKey: .moeLayers)
        default:
            numExpertsRaw = nil
            numExpertsPerTokRaw = nil
            moeLayers = nil
        }
        routerNoise = try c.decodeIfPresent(Bool.self, forKey: .routerNoise) ?? false
    }

    /// Rejects qwen2_moe's sliding-window attention (decode drops the window when it is off).
    var usesSlidingWindowFlag: Bool { raw["use_sliding_window"]?.boolValue == true }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        if headDimGiven { try c.encode(headDim, forKey: .headDim) }
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        if ropeType != "default" { try c.encode(["rope_type": ropeType], forKey: .ropeScaling) }
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        if eosTokenIds.count == 1 { try c.encode(eosTokenIds[0], forKey: .eosTokenId) } else { try c.encode(eosTokenIds, forKey: .eosTokenId) }
        try c.encodeIfPresent(padTokenId, forKey: .padTokenId)
        try c.encodeIfPresent(torchDtype, forKey: .torchDtype)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encodeIfPresent(slidingWindow, forKey: .slidingWindow)
        switch modelType {
        case "mixtral": try c.encodeIfPresent(numExpertsRaw, forKey: .numLocalExperts)
        default: try c.encodeIfPresent(numExpertsRaw, forKey: .numExperts)
        }
        try c.encodeIfPresent(numExpertsPerTokRaw, forKey: .numExpertsPerTok)
        if modelType == "qwen2_moe" {
            try c.encode(qkvBias, forKey: .qkvBias)
            try c.encodeIfPresent(moeIntermediateSize, forKey: .moeIntermediateSize)
            try c.encodeIfPresent(sharedExpertIntermediateSize, forKey: .sharedExpertIntermediateSize)
            try c.encode(normTopKProb, forKey: .normTopKProb)
            try c.encodeIfPresent(decoderSparseStep, forKey: .decoderSparseStep)
            try c.encodeIfPresent(mlpOnlyLayers, forKey: .mlpOnlyLayers)
        } else {
            try c.encodeIfPresent(moeLayers, forKey: .moeLayers)
        }
        if routerNoise { try c.encode(routerNoise, forKey: .routerNoise) }
    }

    public static func == (a: ModelConfig, b: ModelConfig) -> Bool {
        a.modelType == b.modelType && a.vocabSize == b.vocabSize && a.hiddenSize == b.hiddenSize
            && a.intermediateSize == b.intermediateSize && a.numHiddenLayers == b.numHiddenLayers
            && a.numAttentionHeads == b.numAttentionHeads && a.numKeyValueHeads == b.numKeyValueHeads
            && a.headDim == b.headDim && a.rmsNormEps == b.rmsNormEps && a.ropeTheta == b.ropeTheta
            && a.ropeType == b.ropeType && a.maxPositionEmbeddings == b.maxPositionEmbeddings
            && a.tieWordEmbeddings == b.tieWordEmbeddings && a.hiddenAct == b.hiddenAct
            && a.bosTokenId == b.bosTokenId && a.eosTokenIds == b.eosTokenIds && a.padTokenId == b.padTokenId
            && a.torchDtype == b.torchDtype && a.attentionBias == b.attentionBias && a.mlpBias == b.mlpBias
            && a.slidingWindow == b.slidingWindow && a.numExpertsRaw == b.numExpertsRaw
            && a.numExpertsPerTokRaw == b.numExpertsPerTokRaw && a.moeLayers == b.moeLayers
            && a.routerNoise == b.routerNoise && a.qkvBias == b.qkvBias
            && a.moeIntermediateSize == b.moeIntermediateSize
            && a.sharedExpertIntermediateSize == b.sharedExpertIntermediateSize
            && a.normTopKProb == b.normTopKProb && a.decoderSparseStep == b.decoderSparseStep
            && a.mlpOnlyLayers == b.mlpOnlyLayers
    }

    // MARK: Normalised view

    /// Number of experts per MoE layer; 0 for a dense model.
    public var experts: Int { numExpertsRaw ?? 0 }

    /// Inner size of each routed expert: `moe_intermediate_size` (qwen2_moe) or `intermediate_size`.
    public var expertIntermediateSize: Int { moeIntermediateSize ?? intermediateSize }

    /// Whether every sparse layer also has a gated shared expert (qwen2_moe).
    public var hasSharedExpert: Bool { sharedExpertIntermediateSize != nil }

    /// Experts chosen per token (top-k); 0 for a dense model.
    public var expertsPerToken: Int { experts > 0 ? (numExpertsPerTokRaw ?? 2) : 0 }

    /// Whether any layer is MoE.
    public var hasMoE: Bool { experts > 0 && (moeLayers.map { !$0.isEmpty } ?? true) }

    /// Whether decoder layer `layer`'s MLP is a mixture of experts.
    public func isMoE(layer: Int) -> Bool {
        guard experts > 0 else { return false }
        guard let moeLayers else { return true }
        return moeLayers.contains(layer)
    }

    /// Query heads per key/value head.
    public var groupSize: Int { numKeyValueHeads > 0 ? numAttentionHeads / numKeyValueHeads : 0 }
}
