import Foundation
import Checkpoint
import Tensor

/// Where a model's experts are computed: in this process from the same checkpoint, or elsewhere
/// (the expert tensors are then deliberately left unread and an `ExpertRunner` is passed to `forward`).
public enum ExpertPlacement: Sendable, Equatable {
    case local
    case remote
}

/// One sequence's part of a batched step: its cache and the input embeddings of its new positions
/// (`[n, hidden]`, any dtype; from `embed(ids:)` or stitched with multimodal embeddings).
public struct SequenceStep: Sendable {
    public let cache: KVCache
    public let embeddings: Tensor
    /// What each new row is (`text`, `image`, `audio`, `video`), for routing telemetry; nil: text.
    public var rowKinds: [String]?

    public init(cache: KVCache, embeddings: Tensor, rowKinds: [String]? = nil) {
        self.cache = cache
        self.embeddings = embeddings
        self.rowKinds = rowKinds
    }
}

/// Routing telemetry: per kind of input row (`text`, `image`, …) and MoE layer, how many
/// (row, choice) slots went to each expert. Attach one to `LanguageModel.routingStats`.
///
/// `@unchecked Sendable`: `counts` is only touched under `lock`.
public final class RoutingStats: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: [Int: [Int]]] = [:]

    public init() {}

    /// Adds the choices `indices` `[rows, k]` of `layer` for rows of the given kinds.
    func record(layer: Int, experts: Int, k: Int, kinds: [String], indices: UnsafePointer<Int>) {
        lock.lock(); defer { lock.unlock() }
        for (r, kind) in kinds.enumerated() {
            var c = counts[kind]?[layer] ?? [Int](repeating: 0, count: experts)
            for j in 0..<k where (0..<experts).contains(indices[r * k + j]) { c[indices[r * k + j]] += 1 }
            counts[kind, default: [:]][layer] = c
        }
    }

    /// `{kind: {layer: [slots per expert]}}`.
    public var snapshot: [String: [Int: [Int]]] {
        lock.lock(); defer { lock.unlock() }
        return counts
    }

    /// The snapshot with layers as string keys, as `--routing-stats` prints it (JSON objects).
    public var jsonObject: [String: [String: [Int]]] {
        snapshot.mapValues { layers in Dictionary(uniqueKeysWithValues: layers.map { ("\($0.key)", $0.value) }) }
    }
}

/// The LLaMA-family trunk (`llama`, `mixtral`, `qwen2_moe`, `unimoe`; see `Architecture`): token embeddings,
/// decoder layers (attention + dense or sparse MLP), final norm, LM head (tied or not). Weights are
/// views into the memory-mapped checkpoint in their stored dtype; only norm vectors are widened.
///
/// `@unchecked Sendable`: weights are read-only; the step workspace and the routing-noise state
/// are guarded by `lock`, so concurrent `forward` calls run one after another.
public final class LanguageModel: @unchecked Sendable {
    public let config: ModelConfig
    public let architecture: Architecture
    /// `[vocab, hidden]`.
    public let embedTokens: Tensor
    /// `[vocab, hidden]`; the embedding table itself when `tie_word_embeddings`.
    public let lmHead: Tensor
    /// The experts, when loaded with `.local` and the model has sparse layers.
    public let localExperts: LocalExperts?
    public let routing: RoutingOptions
    /// When set, every MoE layer's choices are counted per kind of row.
    public var routingStats: RoutingStats?

    struct Layer {
        let inputNorm: Tensor       // f32 [hidden]
        let postNorm: Tensor        // f32 [hidden]
        let attention: SelfAttention
        let dense: FeedForward?
        let sparse: SparseLayer?
    }

    let layers: [Layer]
    let finalNorm: Tensor
    private let eps: Float
    private let lock = NSLock()
    private let ws = Workspace()
    private var noise: Xoshiro256

    public var hidden: Int { config.hiddenSize }
    public var vocab: Int { config.vocabSize }

    /// Loads `directory` (config.json + safetensors) strictly: every tensor the model needs must be
    /// present with the right shape and every tensor in the files must be used (with `.remote`, the
    /// expert tensors are skipped on purpose). `routing` defaults to the config's `router_noise`.
    public static func load(directory: String, experts: ExpertPlacement = .local,
                            routing: RoutingOptions? = nil) throws -> LanguageModel {
        let config = try ModelConfig.load(directory: directory)
        let ckpt = try Checkpoint(directory: directory)
        let model = try LanguageModel(config: config, checkpoint: ckpt, experts: experts, routing: routing)
        // A whole Uni-MoE directory also holds the connectors (their own loaders take them strictly);
        // only a config that declares a tower lets the trunk loader pass over them.
        if config.raw["mm_vision_tower"] != nil || config.raw["mm_audio_tower"] != nil {
            ckpt.ignore(where: MultimodalConfig.isConnectorTensor)
        }
        try ckpt.finishLoading()
        return model
    }

    /// Builds the model from an open checkpoint, taking (marking used) every tensor it needs. The
    /// caller decides when to call `checkpoint.finishLoading()` (e.g. after loading a projector
    /// from the same files).
    public init(config: ModelConfig, checkpoint ckpt: Checkpoint, experts placement: ExpertPlacement = .local,
                routing: RoutingOptions? = nil) throws {
        self.config = config
        architecture = try Architecture.forConfig(config)
        if config.mlpBias { throw ModelError.unsupported("mlp_bias true (LLaMA-family MLPs without bias only)") }
        let routing = routing ?? RoutingOptions(noisySecondChoice: config.routerNoise)
        if routing.noisySecondChoice && config.expertsPerToken != 2 {
            throw ModelError.unsupported("router noise needs num_experts_per_tok 2, the config has \(config.expertsPerToken)")
        }
        self.routing = routing
        noise = Xoshiro256(seed: routing.seed)
        eps = Float(config.rmsNormEps)
        let h = config.hiddenSize, v = config.vocabSize
        // Exporters of older transformers saved the rotary tables; they are recomputed here.
        ckpt.ignore { $0.hasSuffix(".rotary_emb.inv_freq") }
        embedTokens = try ckpt.take("model.embed_tokens.weight", shape: [v, h])
        let rope = Rope(headDim: config.headDim, theta: Float(config.ropeTheta))
        var layers: [Layer] = []
        for l in 0..<config.numHiddenLayers {
            let p = architecture.layerPrefix(l)
            let attention = try SelfAttention.load(ckpt, prefix: "\(p).self_attn", config: config, rope: rope)
            let inNorm = try ckpt.take("\(p).input_layernorm.weight", shape: [h]).converted(to: .f32)
            let postNorm = try ckpt.take("\(p).post_attention_layernorm.weight", shape: [h]).converted(to: .f32)
            var dense: FeedForward?, sparse: SparseLayer?
            if config.isMoE(layer: l) {
                let router = try ckpt.take(architecture.routerName(layer: l), shape: [config.experts, h])
                var s = SparseLayer(layer: l, router: router, experts: config.experts, k: config.expertsPerToken,
                                    rule: architecture.routingRule)
                if architecture.sharedExpert {
                    // The shared expert stays with the trunk (also with remote routed experts).
                    guard let inner = config.sharedExpertIntermediateSize else {
                        throw ModelError.unsupported("model_type \(config.modelType) needs shared_expert_intermediate_size")
                    }
                    let a = architecture
                    s.shared = try FeedForward.load(ckpt, gate: a.sharedExpertName(layer: l, .gate),
                                                    up: a.sharedExpertName(layer: l, .up),
                                                    down: a.sharedExpertName(layer: l, .down),
                                                    hidden: h, inner: inner, activation: config.hiddenAct)
                    s.sharedGate = try ckpt.take(a.sharedExpertGateName(layer: l), shape: [1, h])
                }
                sparse = s
            } else {
                dense = try FeedForward.load(ckpt, gate: architecture.denseName(layer: l, .gate),
                                             up: architecture.denseName(layer: l, .up),
                                             down: architecture.denseName(layer: l, .down),
                                             hidden: h, inner: config.intermediateSize, activation: config.hiddenAct)
            }
            layers.append(Layer(inputNorm: inNorm, postNorm: postNorm, attention: attention, dense: dense, sparse: sparse))
        }
        self.layers = layers
        finalNorm = try ckpt.take("model.norm.weight", shape: [h]).converted(to: .f32)
        if config.tieWordEmbeddings {
            // transformers ties the head to the embeddings and ignores a saved copy; so do we.
            _ = try ckpt.takeIfPresent("lm_head.weight", shape: [v, h])
            lmHead = embedTokens
        } else {
            lmHead = try ckpt.take("lm_head.weight", shape: [v, h])
        }
        let arch = architecture
        switch placement {
        case .local:
            localExperts = config.hasMoE ? try LocalExperts(checkpoint: ckpt, config: config) : nil
        case .remote:
            ckpt.ignore { arch.isExpertTensor($0) }
            localExperts = nil
        }
    }

    /// A fresh cache for one sequence (reserve the positions you expect to avoid regrowth).
    public func makeCache(capacity: Int = 0) -> KVCache {
        KVCache(layers: config.numHiddenLayers, width: config.numKeyValueHeads * config.headDim, capacity: capacity)
    }

    /// Input embeddings `[ids.count, hidden]` f32 for token ids.
    public func embed(ids: [Int]) throws -> Tensor {
        let out = Tensor(zeros: [ids.count, hidden])
        try embed(ids: ids, into: out.floats)
        return out
    }

    /// Writes the embeddings of `ids` into `out` (`ids.count · hidden` floats).
    public func embed(ids: [Int], into out: UnsafeMutablePointer<Float>) throws {
        for id in ids where !(0..<vocab).contains(id) {
            throw ModelError.invalidInput("token id \(id) is outside the vocabulary (0..<\(vocab))")
        }
        try Gather.embedding(embedTokens, ids: ids, into: out)
    }

    /// One batched step over several sequences. Every linear layer runs once over the concatenated
    /// rows of all items; attention runs per item against its own cache, which is advanced by the
    /// item's row count. MoE layers send all routed rows of the step to `experts` in one call per
    /// layer (default: the local experts).
    /// - Returns: per item, logits `[n, vocab]` of every new position (`allPositions`) or `[1, vocab]`
    ///   of its last one. Fresh tensors, owned by the caller.
    public func forward(_ items: [SequenceStep], experts: ExpertRunner? = nil, allPositions: Bool) throws -> [Tensor] {
        guard !items.isEmpty else { return [] }
        var counts: [Int] = []
        for it in items { counts.append(it.embeddings.rank == 2 ? it.embeddings.shape[0] : 0) }
        let logits = Tensor(zeros: [allPositions ? counts.reduce(0, +) : items.count, vocab])
        try forward(items, experts: experts, allPositions: allPositions, into: logits)
        var start = 0
        return allPositions ? counts.map { n in defer { start += n }; return logits.rows(start..<(start + n)) }
                            : (0..<items.count).map { logits.rows($0..<($0 + 1)) }
    }

    /// `forward` writing the logits into `logits` (f32 `[r, vocab]`, r ≥ the rows `forward` would
    /// return, in the same order: every new position of every item, or each item's last), so a
    /// decode loop that keeps its step array, input and logits tensors allocates nothing per step.
    public func forward(_ items: [SequenceStep], experts: ExpertRunner? = nil, allPositions: Bool, into logits: Tensor) throws {
        guard let runner: ExpertRunner = experts ?? localExperts ?? (config.hasMoE ? nil : NoExperts.shared) else {
            throw ModelError.invalidInput("this model was loaded with remote experts; pass an ExpertRunner to forward")
        }
        guard !items.isEmpty else { return }
        lock.lock(); defer { lock.unlock() }
        // The spans array lives in the workspace between steps (its storage reused).
        var spans = ws.spans
        ws.spans = []
        defer { spans.removeAll(keepingCapacity: true); ws.spans = spans }
        var rows = 0
        for (i, it) in items.enumerated() {
            let e = it.embeddings
            guard e.rank == 2, e.shape[1] == hidden, e.shape[0] > 0 else {
                throw ModelError.invalidInput("item \(i): embeddings have shape \(e.shape), expected [n ≥ 1, \(hidden)]")
            }
            guard it.cache.layers == layers.count, it.cache.width == config.numKeyValueHeads * config.headDim else {
                throw ModelError.invalidInput("item \(i): the KV cache was made for another model")
            }
            if spans.contains(where: { $0.cache === it.cache }) {
                throw ModelError.invalidInput("item \(i): the same KV cache appears twice in one step")
            }
            if let w = config.slidingWindow, it.cache.count + e.shape[0] > w {
                throw ModelError.unsupported("sequence longer than sliding_window \(w)")
            }
            spans.append(.init(start: rows, count: e.shape[0], cache: it.cache))
            rows += e.shape[0]
        }
        let selected = allPositions ? rows : spans.count
        guard logits.dtype == .f32, logits.rank == 2, logits.shape[0] >= selected, logits.shape[1] == vocab else {
            throw ModelError.invalidInput("logits tensor is \(logits.dtype.rawValue) \(logits.shape), expected f32 [≥ \(selected), \(vocab)]")
        }
        // Row kinds for routing telemetry (only when someone listens).
        let rowKinds: [String] = routingStats == nil ? [] : items.flatMap { it in
            it.rowKinds ?? [String](repeating: "text", count: it.embeddings.shape[0])
        }
        let x = ws.x.ensure(rows * hidden), hb = ws.h.ensure(rows * hidden), pb = ws.proj.ensure(rows * hidden)
        ws.ensurePositions(rows)
        for (it, s) in zip(items, spans) {
            Convert.toF32(UnsafeRawPointer(it.embeddings.raw), it.embeddings.dtype, count: s.count * hidden,
                          into: x + s.start * hidden)
            s.cache.ensure(s.cache.count + s.count)
            for j in 0..<s.count { ws.positions[s.start + j] = s.cache.count + j }
        }
        try withUnsafeMutablePointer(to: &noise) { noisePtr in
            for (l, layer) in layers.enumerated() {
                Norm.rms(x, rows: rows, dim: hidden, weight: layer.inputNorm, eps: eps, into: hb)
                layer.attention.forward(hb, rows: rows, spans: spans, layer: l, ws: ws, into: pb)
                addInPlace(x, pb, count: rows * hidden)
                Norm.rms(x, rows: rows, dim: hidden, weight: layer.postNorm, eps: eps, into: hb)
                if let sparse = layer.sparse {
                    try sparse.forward(hb, rows: rows, hidden: hidden, runner: runner, ws: ws,
                                       noise: routing.noisySecondChoice ? noisePtr : nil,
                                       stats: routingStats.map { ($0, rowKinds) }, into: pb)
                } else if let dense = layer.dense {
                    let inner = dense.inner
                    try dense.forward(hb, rows: rows, gateBuf: ws.gate.ensure(rows * inner),
                                      upBuf: ws.up.ensure(rows * inner), into: pb)
                }
                addInPlace(x, pb, count: rows * hidden)
            }
        }
        for s in spans { s.cache.advance(by: s.count) }
        // Final norm and LM head over the rows whose logits are wanted.
        if allPositions {
            Norm.rms(x, rows: rows, dim: hidden, weight: finalNorm, eps: eps, into: hb)
        } else {
            for (i, s) in spans.enumerated() {
                Norm.rms(x + (s.start + s.count - 1) * hidden, rows: 1, dim: hidden, weight: finalNorm, eps: eps,
                         into: hb + i * hidden)
            }
        }
        Linear.forward(hb, rows: selected, weight: lmHead, into: logits.floats)
    }

    /// Bytes of weights one decode step reads (attention, routers, `k` experts or the dense MLP per
    /// layer, norms, LM head, one embedding row): the divisor of the memory-bandwidth ceiling.
    public var weightBytesPerToken: Int {
        var total = lmHead.storedBytes + finalNorm.storedBytes + embedTokens.storedBytes / max(vocab, 1)
        let expertBytes = config.hasMoE ? 3 * config.hiddenSize * config.expertIntermediateSize * lmHead.dtype.size : 0
        for l in layers {
            let a = l.attention
            total += a.q.storedBytes + a.k.storedBytes + a.v.storedBytes + a.o.storedBytes
            total += l.inputNorm.storedBytes + l.postNorm.storedBytes
            if let d = l.dense { total += d.gate.storedBytes + d.up.storedBytes + d.down.storedBytes }
            if let s = l.sparse {
                let stored = localExperts?.expert(layer: s.layer, expert: 0)
                let one = stored.map { $0.gate.storedBytes + $0.up.storedBytes + $0.down.storedBytes } ?? expertBytes
                total += s.router.storedBytes + s.k * one
                if let f = s.shared { total += f.gate.storedBytes + f.up.storedBytes + f.down.storedBytes }
                if let g = s.sharedGate { total += g.storedBytes }
            }
        }
        return total
    }

    /// Logits `[ids.count, vocab]` of every position of one fresh sequence (no template, no added
    /// tokens): what `unimoe logits` prints.
    public func logits(ids: [Int], experts: ExpertRunner? = nil) throws -> Tensor {
        guard !ids.isEmpty else { throw ModelError.invalidInput("no token ids") }
        let cache = makeCache(capacity: ids.count)
        return try forward([SequenceStep(cache: cache, embeddings: embed(ids: ids))], experts: experts, allPositions: true)[0]
    }
}

/// The runner a dense model passes around: it is never asked for anything.
final class NoExperts: ExpertRunner, @unchecked Sendable {
    static let shared = NoExperts()
    func run(layer: Int, batches: [ExpertBatch]) throws -> [Tensor] {
        throw ModelError.invalidInput("layer \(layer) routed rows to experts, but the model has none")
    }
}
