import Foundation
import Checkpoint
import Models
import Tensor

/// A CLIP vision tower under training (the groundwork of a stage 0 for the encoders): patch
/// embedding as a Linear over unfolded patches, class and position embeddings, pre-layernorm,
/// pre-LN encoder blocks (QuickGELU or GELU MLP), and the hidden states of `selectLayer` without
/// CLS — the features Uni-MoE's projector reads. Pixels are an input, never trained.
public final class TrainableVisionTower {
    public let config: CLIPVisionConfig
    public let params = ParameterSet()
    /// Checkpoint names carry this prefix (`vision_model.` in CLIP checkpoints).
    public let prefix: String
    let patch: LinearOp
    let classEmbedding: Parameter
    let positions: Parameter
    let preNorm: LayerNormOp
    let blocks: [Block]
    /// Blocks run: up to the selected hidden state.
    let depth: Int
    private var images = 0

    final class Block {
        let norm1, norm2: LayerNormOp
        let q, k, v, o, fc1, fc2: LinearOp
        let attention: AttentionOp
        let quick: QuickGELUOp?
        let gelu: GELUOp?
        init(norm1: LayerNormOp, norm2: LayerNormOp, q: LinearOp, k: LinearOp, v: LinearOp, o: LinearOp, fc1: LinearOp, fc2: LinearOp,
             attention: AttentionOp, quickGELU: Bool) {
            self.norm1 = norm1; self.norm2 = norm2; self.q = q; self.k = k; self.v = v; self.o = o; self.fc1 = fc1; self.fc2 = fc2
            self.attention = attention
            quick = quickGELU ? QuickGELUOp() : nil
            gelu = quickGELU ? nil : GELUOp()
        }
        func act(_ x: Tensor) -> Tensor {
            if let quick { return quick.forward(x) }
            return gelu?.forward(x) ?? x
        }
        func actBackward(_ d: Tensor) -> Tensor {
            if let quick { return quick.backward(d) }
            return gelu?.backward(d) ?? d
        }
    }

    /// Loads a transformers CLIP vision directory; every tensor becomes a (trainable) parameter.
    public init(directory: String, selectLayer: Int = -2) throws {
        let tower = try VisionTower(directory: directory)
        let c = tower.config
        config = c
        depth = try tower.hiddenStateIndex(selectLayer: selectLayer)
        guard c.hiddenAct == "quick_gelu" || c.hiddenAct == "gelu" else {
            throw TrainingError.unsupportedModel("vision tower activation '\(c.hiddenAct)' (quick_gelu or gelu)")
        }
        let ckpt = try Checkpoint(directory: directory, mergeAdapters: false)
        prefix = ckpt.contains("vision_model.embeddings.class_embedding") ? "vision_model." : ""
        let d = c.hiddenSize, pp = c.channels * c.patchSize * c.patchSize
        let params = self.params
        let prefix = self.prefix
        func p(_ name: String, _ shape: [Int]) throws -> Parameter {
            let t = try ckpt.take(prefix + name)
            guard t.count == shape.reduce(1, *) else { throw TrainingError.badCheckpoint(path: prefix + name, reason: "shape \(t.shape), expected \(shape)") }
            return params.add(Parameter(name: prefix + name, value: try t.reshaped(shape)))
        }
        func lin(_ name: String, out: Int, in inF: Int) throws -> LinearOp {
            LinearOp(weight: try p(name + ".weight", [out, inF]), bias: try p(name + ".bias", [out]))
        }
        func ln(_ name: String) throws -> LayerNormOp {
            LayerNormOp(weight: try p(name + ".weight", [d]), bias: try p(name + ".bias", [d]), eps: Float(c.layerNormEps))
        }
        // The patch weight [D, C, p, p] is trained as the Linear [D, C·p·p] it is.
        patch = LinearOp(weight: try p("embeddings.patch_embedding.weight", [d, pp]))
        classEmbedding = try p("embeddings.class_embedding", [d])
        positions = try p("embeddings.position_embedding.weight", [c.patches + 1, d])
        preNorm = try ln("pre_layrnorm")
        blocks = try (0..<depth).map { i in
            let b = "encoder.layers.\(i)."
            return Block(norm1: try ln(b + "layer_norm1"), norm2: try ln(b + "layer_norm2"),
                         q: try lin(b + "self_attn.q_proj", out: d, in: d), k: try lin(b + "self_attn.k_proj", out: d, in: d),
                         v: try lin(b + "self_attn.v_proj", out: d, in: d), o: try lin(b + "self_attn.out_proj", out: d, in: d),
                         fc1: try lin(b + "mlp.fc1", out: c.intermediateSize, in: d), fc2: try lin(b + "mlp.fc2", out: d, in: c.intermediateSize),
                         attention: AttentionOp(heads: c.heads, kvHeads: c.heads, headDim: d / c.heads, causal: false),
                         quickGELU: c.hiddenAct == "quick_gelu")
        }
        // Layers past the selected one and the post-layernorm never reach the features: kept as they are.
        for n in ckpt.names where params[n] == nil { params.add(Parameter(name: n, value: try ckpt.take(n))) }
        params.setTrainable { _ in true }
        for n in ckpt.names where !Self.reachesFeatures(n, prefix: prefix, depth: depth) { params[n]?.trainable = false }
    }

    /// Every tensor under its checkpoint name and shape (the patch weight back to `[D, C, p, p]`).
    public func exportTensors() throws -> [(String, Tensor)] {
        let c = config
        return try params.ordered.map { p in
            p.name == prefix + "embeddings.patch_embedding.weight"
                ? (p.name, try p.value.reshaped([c.hiddenSize, c.channels, c.patchSize, c.patchSize])) : (p.name, p.value)
        }
    }

    static func reachesFeatures(_ name: String, prefix: String, depth: Int) -> Bool {
        let n = String(name.dropFirst(prefix.count))
        if n.hasPrefix("post_layernorm") { return false }
        if n.hasPrefix("encoder.layers."), let i = Int(n.split(separator: ".")[2]) { return i < depth }
        return true
    }

    /// Pixels `[n, C, S, S]` → features `[n · patches, D]` (CLS dropped).
    public func forward(pixels: Tensor) throws -> Tensor {
        let c = config
        guard pixels.rank == 4, pixels.shape[1] == c.channels, pixels.shape[2] == c.imageSize, pixels.shape[3] == c.imageSize else {
            throw TrainingError.invalidSetting("vision tower takes pixels [n, \(c.channels), \(c.imageSize), \(c.imageSize)], got \(pixels.shape)")
        }
        let n = pixels.shape[0], d = c.hiddenSize, t = c.patches + 1
        images = n
        let px = pixels.converted(to: .f32)
        let unfolded = Tensor(zeros: [n * c.patches, c.channels * c.patchSize * c.patchSize])
        withExtendedLifetime(px) {
            Conv.patches(px.floats, images: n, channels: c.channels, height: c.imageSize, width: c.imageSize,
                         patch: c.patchSize, into: unfolded.floats)
        }
        let patches = patch.forward(unfolded)
        let emb = Tensor(zeros: [n * t, d])
        for img in 0..<n {
            Vec.copyRow(emb, img * t, from: classEmbedding.value, 0, width: d)
            for tok in 1..<t { Vec.copyRow(emb, img * t + tok, from: patches, img * c.patches + tok - 1, width: d) }
            for tok in 0..<t { Vec.addRow(emb, img * t + tok, positions.value, tok, width: d) }
        }
        var x = preNorm.forward(emb)
        let spans = (0..<n).map { AttentionSpan(queryStart: $0 * t, queryCount: t, keyStart: $0 * t, keyCount: t) }
        for b in blocks {
            let a = b.norm1.forward(x)
            let x1 = Vec.sum(x, b.o.forward(b.attention.forward(q: b.q.forward(a), k: b.k.forward(a), v: b.v.forward(a), spans: spans)))
            x = Vec.sum(x1, b.fc2.forward(b.act(b.fc1.forward(b.norm2.forward(x1)))))
        }
        let out = Tensor(zeros: [n * c.patches, d])
        for img in 0..<n { for tok in 1..<t { Vec.copyRow(out, img * c.patches + tok - 1, from: x, img * t + tok, width: d) } }
        return out
    }

    /// d features `[n · patches, D]` → gradients of every trainable tensor.
    public func backward(_ dFeatures: Tensor) {
        let c = config, n = images, d = c.hiddenSize, t = c.patches + 1
        var dx = Tensor(zeros: [n * t, d])
        for img in 0..<n { for tok in 1..<t { Vec.copyRow(dx, img * t + tok, from: dFeatures, img * c.patches + tok - 1, width: d) } }
        for b in blocks.reversed() {
            let dMLP = b.norm2.backward(b.fc1.backward(b.actBackward(b.fc2.backward(dx))))
            Vec.add(dMLP, dx)                                       // d x1
            let (dq, dk, dv) = b.attention.backward(b.o.backward(dMLP))
            let da = b.q.backward(dq)
            Vec.add(da, b.k.backward(dk))
            Vec.add(da, b.v.backward(dv))
            let dIn = b.norm1.backward(da)
            Vec.add(dIn, dMLP)
            dx = dIn
        }
        let dEmb = preNorm.backward(dx)
        let dPatches = Tensor(zeros: [n * c.patches, d])
        for img in 0..<n {
            if classEmbedding.trainable { Vec.addRow(classEmbedding.grad, 0, dEmb, img * t, width: d) }
            for tok in 0..<t {
                if positions.trainable { Vec.addRow(positions.grad, tok, dEmb, img * t + tok, width: d) }
                if tok > 0 { Vec.copyRow(dPatches, img * c.patches + tok - 1, from: dEmb, img * t + tok, width: d) }
            }
        }
        patch.accumulateGradients(dPatches)
        release()
    }

    func release() {
        patch.release(); preNorm.release()
        for b in blocks {
            for l in [b.q, b.k, b.v, b.o, b.fc1, b.fc2] { l.release() }
            b.norm1.release(); b.norm2.release(); b.attention.release(); b.quick?.release(); b.gelu?.release()
        }
    }
}
