import Foundation
import Checkpoint
import Models
import Tensor

/// One micro-batch for the trunk: sequences laid end to end (no padding). A row is a token
/// (`tokens[r] ≥ 0`, its embedding is looked up) or a media row (`tokens[r] == mediaRow`, the next
/// row of `media`). `targets[r]` is the id row r must predict (the label of row r + 1, shifted as
/// transformers does), or `ignoreIndex`.
public struct TrunkBatch: Sendable {
    public static let mediaRow = -1
    public static let ignoreIndex = -100
    public var tokens: [Int]
    public var targets: [Int]
    /// Row count of each sequence, in order.
    public var lengths: [Int]
    /// `[media rows, hidden]` in the order the media rows appear (nil when there are none).
    public var media: Tensor?

    public init(tokens: [Int], targets: [Int], lengths: [Int], media: Tensor?) {
        self.tokens = tokens; self.targets = targets; self.lengths = lengths; self.media = media
    }

    public var rows: Int { tokens.count }
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 == Self.ignoreIndex ? 0 : 1) } }
}

/// What one forward + backward of the trunk gives back.
public struct TrunkResult: Sendable {
    /// Sum of the token cross-entropies of the batch (divide by the token count for the mean).
    public var crossEntropySum: Double
    public var targetTokens: Int
    /// The auxiliary load-balancing loss of this micro-batch (0 without MoE layers).
    public var auxLoss: Double
    /// d loss / d media rows `[media rows, hidden]`, when asked for.
    public var mediaGrad: Tensor?
    /// Per MoE layer, per expert: rows routed (first choices and all choices).
    public var routing: [Int: [Int]]
}

/// The LLaMA-family trunk (`llama`, `mixtral`, `unimoe`) under training, written from its forward
/// with a hand-made backward for every layer (llm.c style, no autograd): embeddings, RMSNorm, RoPE,
/// causal GQA attention, SwiGLU MLPs or MoE layers, final norm and LM head, with optional LoRA on
/// every linear. Rows of all sequences of a micro-batch go through each linear as one GEMM.
public final class TrainableTrunk {
    public let config: ModelConfig
    let architecture: Architecture
    let embed: Parameter
    let head: LinearOp
    let finalNorm: RMSNormOp
    let layers: [Layer]
    let rope: RopeOp
    /// Where the experts run (default: in this process).
    public var backend: ExpertBackend
    let localExperts: LocalExpertBackend?
    public var auxLossCoefficient: Float

    final class Layer {
        let inputNorm, postNorm: RMSNormOp
        let q, k, v, o: LinearOp
        let attention: AttentionOp
        let dense: FeedForwardOp?
        let moe: MoEOp?
        init(inputNorm: RMSNormOp, postNorm: RMSNormOp, q: LinearOp, k: LinearOp, v: LinearOp, o: LinearOp,
             attention: AttentionOp, dense: FeedForwardOp?, moe: MoEOp?) {
            self.inputNorm = inputNorm; self.postNorm = postNorm; self.q = q; self.k = k; self.v = v; self.o = o
            self.attention = attention; self.dense = dense; self.moe = moe
        }
        /// The dense MLP or the MoE layer (exactly one is set).
        func mlpForward(_ x: Tensor, backend: ExpertBackend) throws -> Tensor {
            if let moe { return try moe.forward(x, backend: backend) }
            guard let dense else { throw TrainingError.unsupportedModel("layer without an MLP") }
            return dense.forward(x)
        }

        func mlpBackward(_ dy: Tensor, backend: ExpertBackend) throws -> Tensor {
            if let moe { return try moe.backward(dy, backend: backend) }
            guard let dense else { throw TrainingError.unsupportedModel("layer without an MLP") }
            return dense.backward(dy)
        }
    }

    // Saved by the forward for the backward.
    private var batch: TrunkBatch?
    private var positions: [Int] = []
    private var spans: [AttentionSpan] = []
    private var targetRows: [Int] = []
    private var logits: Tensor?

    /// Builds the trunk over `params` (which must hold every trunk tensor by its checkpoint name, and
    /// LoRA tensors `<linear>.lora_A.weight` / `.lora_B.weight` where adapters are on). `expertsLocal`
    /// false leaves the experts to a remote backend (their tensors need not be in `params`).
    public init(config: ModelConfig, params: ParameterSet, loraScale: Float = 1, expertsLocal: Bool = true,
                auxLossCoefficient: Float = 0.01) throws {
        self.config = config
        let architecture = try Architecture.forConfig(config)
        self.architecture = architecture
        if architecture.sharedExpert || architecture.routingRule != .softmaxOverChosen {
            // qwen2_moe (shared expert, softmax-over-all routing) is inference only.
            throw TrainingError.unsupportedModel("model_type \(config.modelType) can be run but not trained")
        }
        self.auxLossCoefficient = auxLossCoefficient
        let h = config.hiddenSize, hd = config.headDim
        func p(_ name: String, _ shape: [Int]) throws -> Parameter { try Self.parameter(params, name, shape) }
        func linear(_ weightName: String, out: Int, in inF: Int) throws -> LinearOp {
            try Self.linear(params, weightName, out: out, in: inF, loraScale: loraScale)
        }
        embed = try p("model.embed_tokens.weight", [config.vocabSize, h])
        finalNorm = RMSNormOp(weight: try p("model.norm.weight", [h]), eps: Float(config.rmsNormEps))
        head = config.tieWordEmbeddings ? LinearOp(weight: embed) : try linear("lm_head.weight", out: config.vocabSize, in: h)
        rope = RopeOp(headDim: hd, theta: Float(config.ropeTheta))
        let heads = config.numAttentionHeads, kv = config.numKeyValueHeads, inner = config.intermediateSize
        var built: [Layer] = []
        var experts: [Int: [FeedForwardOp]] = [:]
        for l in 0..<config.numHiddenLayers {
            let pre = architecture.layerPrefix(l)
            let eps = Float(config.rmsNormEps)
            var dense: FeedForwardOp?, moe: MoEOp?
            if config.isMoE(layer: l) {
                moe = MoEOp(layer: l, router: LinearOp(weight: try p(architecture.routerName(layer: l), [config.experts, h])),
                            experts: config.experts, k: config.expertsPerToken)
                if expertsLocal {
                    experts[l] = try (0..<config.experts).map { e in
                        try Self.expert(params, config: config, architecture: architecture, layer: l, expert: e, loraScale: loraScale)
                    }
                }
            } else {
                dense = FeedForwardOp(gate: try linear(architecture.denseName(layer: l, .gate), out: inner, in: h),
                                      up: try linear(architecture.denseName(layer: l, .up), out: inner, in: h),
                                      down: try linear(architecture.denseName(layer: l, .down), out: h, in: inner))
            }
            built.append(Layer(inputNorm: RMSNormOp(weight: try p("\(pre).input_layernorm.weight", [h]), eps: eps),
                               postNorm: RMSNormOp(weight: try p("\(pre).post_attention_layernorm.weight", [h]), eps: eps),
                               q: try linear("\(pre).self_attn.q_proj.weight", out: heads * hd, in: h),
                               k: try linear("\(pre).self_attn.k_proj.weight", out: kv * hd, in: h),
                               v: try linear("\(pre).self_attn.v_proj.weight", out: kv * hd, in: h),
                               o: try linear("\(pre).self_attn.o_proj.weight", out: h, in: heads * hd),
                               attention: AttentionOp(heads: heads, kvHeads: kv, headDim: hd, causal: true),
                               dense: dense, moe: moe))
        }
        layers = built
        let local = expertsLocal && !experts.isEmpty ? LocalExpertBackend(experts: experts) : nil
        localExperts = local
        backend = local ?? LocalExpertBackend(experts: [:])
    }

    /// A parameter by name, checking its shape.
    static func parameter(_ params: ParameterSet, _ name: String, _ shape: [Int]) throws -> Parameter {
        guard let t = params[name] else { throw TrainingError.badCheckpoint(path: name, reason: "tensor missing from the model") }
        guard t.shape == shape else { throw TrainingError.badCheckpoint(path: name, reason: "shape \(t.shape), expected \(shape)") }
        return t
    }

    /// The linear whose weight is `weightName`, with its LoRA adapter when `params` holds one.
    static func linear(_ params: ParameterSet, _ weightName: String, out: Int, in inF: Int, loraScale: Float) throws -> LinearOp {
        let base = String(weightName.dropLast(".weight".count))
        var lora: LoRA?
        if let a = params[base + ".lora_A.weight"], let b = params[base + ".lora_B.weight"] {
            guard a.shape.count == 2, a.shape[1] == inF, b.shape == [out, a.shape[0]] else {
                throw TrainingError.badCheckpoint(path: base, reason: "LoRA shapes A \(a.shape), B \(b.shape) for a [\(out), \(inF)] linear")
            }
            lora = LoRA(a: a, b: b, scale: loraScale)
        }
        return LinearOp(weight: try parameter(params, weightName, [out, inF]), lora: lora)
    }

    /// One expert's SwiGLU block (shared by the trunk and expert workers).
    static func expert(_ params: ParameterSet, config: ModelConfig, architecture: Architecture, layer l: Int, expert e: Int,
                       loraScale: Float) throws -> FeedForwardOp {
        let h = config.hiddenSize, inner = config.intermediateSize
        return FeedForwardOp(gate: try linear(params, architecture.expertName(layer: l, expert: e, .gate), out: inner, in: h, loraScale: loraScale),
                             up: try linear(params, architecture.expertName(layer: l, expert: e, .up), out: inner, in: h, loraScale: loraScale),
                             down: try linear(params, architecture.expertName(layer: l, expert: e, .down), out: h, in: inner, loraScale: loraScale))
    }

    /// The local experts' feed-forward ops of one layer (empty when remote or dense).
    func localExpertOps(layer: Int) -> [FeedForwardOp] { localExperts?.experts[layer] ?? [] }

    /// Stage 2: every row of every MoE layer goes to `expert` (weight 1); nil restores routing.
    public func forceExpert(_ expert: Int?) { for l in layers { l.moe?.forcedExpert = expert } }

    /// Forward of one micro-batch; keeps what the backward needs. `allLogits` computes the LM head on
    /// every row (tests), otherwise only on rows with a target. Returns the logits computed.
    @discardableResult
    public func forward(_ b: TrunkBatch, allLogits: Bool = false) throws -> Tensor {
        let h = config.hiddenSize, rows = b.rows
        guard rows > 0, b.targets.count == rows, b.lengths.reduce(0, +) == rows, b.lengths.allSatisfy({ $0 > 0 }) else {
            throw TrainingError.invalidSetting("trunk batch: \(rows) rows, \(b.targets.count) targets, lengths \(b.lengths)")
        }
        let mediaCount = b.tokens.filter { $0 == TrunkBatch.mediaRow }.count
        guard mediaCount == (b.media?.rowCount ?? 0), b.media == nil || b.media!.lastDim == h else {
            throw TrainingError.invalidSetting("trunk batch: \(mediaCount) media rows, media tensor \(b.media?.shape ?? [])")
        }
        batch = b
        positions = []; spans = []
        var start = 0
        for n in b.lengths {
            spans.append(AttentionSpan(queryStart: start, queryCount: n, keyStart: start, keyCount: n))
            positions += Array(0..<n)
            start += n
        }
        var x = Tensor(zeros: [rows, h])
        var m = 0
        for (r, id) in b.tokens.enumerated() {
            if id == TrunkBatch.mediaRow, let media = b.media {
                Vec.copyRow(x, r, from: media, m, width: h); m += 1
            } else {
                guard (0..<config.vocabSize).contains(id) else { throw TrainingError.invalidSetting("token id \(id) outside the vocabulary") }
                Vec.copyRow(x, r, from: embed.value, id, width: h)
            }
        }
        for layer in layers {
            let a = layer.inputNorm.forward(x)
            let q = layer.q.forward(a), k = layer.k.forward(a), v = layer.v.forward(a)
            rope.apply(q, heads: config.numAttentionHeads, positions: positions)
            rope.apply(k, heads: config.numKeyValueHeads, positions: positions)
            let o = layer.o.forward(layer.attention.forward(q: q, k: k, v: v, spans: spans))
            let x1 = Vec.sum(x, o)
            let bn = layer.postNorm.forward(x1)
            let mlp = try layer.mlpForward(bn, backend: backend)
            x = Vec.sum(x1, mlp)
        }
        targetRows = allLogits ? Array(0..<rows) : (0..<rows).filter { b.targets[$0] != TrunkBatch.ignoreIndex }
        let xf = Tensor(zeros: [targetRows.count, h])
        for (i, r) in targetRows.enumerated() { Vec.copyRow(xf, i, from: x, r, width: h) }
        let l = head.forward(finalNorm.forward(xf))
        logits = l
        return l
    }

    /// Backward of the last forward. `ceScale` multiplies d(sum of cross-entropies) (1 / target tokens
    /// of the whole step), `auxScale` d(aux) (the coefficient, divided by the micro-batches of a step).
    public func backward(ceScale: Float, auxScale: Float, wantMediaGrad: Bool) throws -> TrunkResult {
        guard let b = batch, let logits else { throw TrainingError.invalidSetting("backward without a forward") }
        let h = config.hiddenSize, rows = b.rows
        // Loss over the rows that have a target (logits may cover more rows when allLogits was set).
        var lossRows: [Int] = [], lossTargets: [Int] = []
        for (i, r) in targetRows.enumerated() where b.targets[r] != TrunkBatch.ignoreIndex { lossRows.append(i); lossTargets.append(b.targets[r]) }
        let v = config.vocabSize
        let selected = Tensor(zeros: [lossRows.count, v])
        for (j, i) in lossRows.enumerated() { Vec.copyRow(selected, j, from: logits, i, width: v) }
        let (ce, dSel) = CrossEntropy.lossAndGradient(logits: selected, targets: lossTargets, gradScale: ceScale)
        let dLogits = Tensor(zeros: logits.shape)
        for (j, i) in lossRows.enumerated() { Vec.copyRow(dLogits, i, from: dSel, j, width: v) }

        // Auxiliary loss over the routed MoE layers.
        var aux = 0.0
        var routing: [Int: [Int]] = [:]
        let moes = layers.compactMap(\.moe).filter { $0.forcedExpert == nil && $0.logits != nil }
        if !moes.isEmpty {
            let (a, grads) = LoadBalancingLoss.lossAndGradient(logits: moes.map { $0.logits! }, choices: moes.map(\.choices),
                                                               experts: config.experts, k: config.expertsPerToken, gradScale: auxScale)
            aux = a
            for (m, g) in zip(moes, grads) { m.addAuxiliaryGradient(g) }
        }
        for layer in layers {
            guard let moe = layer.moe else { continue }
            var counts = [Int](repeating: 0, count: config.experts)
            for e in moe.choices { counts[e] += 1 }
            routing[moe.layer] = counts
        }

        var dx = Tensor(zeros: [rows, h])
        let dxf = finalNorm.backward(head.backward(dLogits))
        for (i, r) in targetRows.enumerated() { Vec.addRow(dx, r, dxf, i, width: h) }
        for layer in layers.reversed() {
            let dmlp = try layer.mlpBackward(dx, backend: backend)
            let dx1 = layer.postNorm.backward(dmlp)
            Vec.add(dx1, dx)
            let dAttn = layer.o.backward(dx1)
            let (dq, dk, dv) = layer.attention.backward(dAttn)
            rope.apply(dq, heads: config.numAttentionHeads, positions: positions, inverse: true)
            rope.apply(dk, heads: config.numKeyValueHeads, positions: positions, inverse: true)
            let da = layer.q.backward(dq)
            Vec.add(da, layer.k.backward(dk))
            Vec.add(da, layer.v.backward(dv))
            let dIn = layer.inputNorm.backward(da)
            Vec.add(dIn, dx1)
            dx = dIn
        }
        var mediaGrad: Tensor?
        if wantMediaGrad, let media = b.media { mediaGrad = Tensor(zeros: media.shape) }
        var m = 0
        for (r, id) in b.tokens.enumerated() {
            if id == TrunkBatch.mediaRow {
                if let mg = mediaGrad { Vec.copyRow(mg, m, from: dx, r, width: h) }
                m += 1
            } else if embed.trainable {
                Vec.addRow(embed.grad, id, dx, r, width: h)
            }
        }
        release()
        return TrunkResult(crossEntropySum: ce, targetTokens: lossRows.count, auxLoss: aux, mediaGrad: mediaGrad, routing: routing)
    }

    private func release() {
        batch = nil; logits = nil
        head.release(); finalNorm.release()
        for l in layers {
            l.inputNorm.release(); l.postNorm.release(); l.attention.release()
            for lin in [l.q, l.k, l.v, l.o] { lin.release() }
            l.dense?.release(); l.moe?.release()
        }
        localExperts?.release()
    }
}
