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
    let blocks: [EncoderBlockOp]
    /// Blocks run: up to the selected hidden state.
    let depth: Int
    private var images = 0

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
        func lin(_ name: String, out: Int, in inF: Int, bias: Bool) throws -> LinearOp {
            LinearOp(weight: try p(name + ".weight", [out, inF]), bias: bias ? try p(name + ".bias", [out]) : nil)
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
            try EncoderBlockOp.load(lin, ln, prefix: "encoder.layers.\(i).", norms: ("layer_norm1", "layer_norm2"), mlp: ("mlp.fc1", "mlp.fc2"),
                                    d: d, ffn: c.intermediateSize, heads: c.heads, keyBias: true, quickGELU: c.hiddenAct == "quick_gelu")
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
        for b in blocks { x = b.forward(x, spans: spans) }
        let out = Tensor(zeros: [n * c.patches, d])
        for img in 0..<n { for tok in 1..<t { Vec.copyRow(out, img * c.patches + tok - 1, from: x, img * t + tok, width: d) } }
        return out
    }

    /// d features `[n · patches, D]` → gradients of every trainable tensor.
    public func backward(_ dFeatures: Tensor) {
        let c = config, n = images, d = c.hiddenSize, t = c.patches + 1
        var dx = Tensor(zeros: [n * t, d])
        for img in 0..<n { for tok in 1..<t { Vec.copyRow(dx, img * t + tok, from: dFeatures, img * c.patches + tok - 1, width: d) } }
        for b in blocks.reversed() { dx = b.backward(dx) }
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
        for b in blocks { b.release() }
    }
}
