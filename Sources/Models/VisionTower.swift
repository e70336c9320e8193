import Foundation
import Tensor
import Checkpoint

/// The CLIP vision config fields the tower needs (`clip_vision_model`, or a full `clip` config's
/// `vision_config`), with transformers' defaults.
public struct CLIPVisionConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layers: Int
    public var heads: Int
    public var imageSize: Int
    public var patchSize: Int
    public var channels: Int
    public var hiddenAct: String
    public var layerNormEps: Double

    public var grid: Int { imageSize / patchSize }
    public var patches: Int { grid * grid }

    init(_ c: ConfigReader) throws {
        let r = (try c.string("model_type", "clip_vision_model") == "clip") ? (c.sub("vision_config") ?? c) : c
        hiddenSize = try r.int("hidden_size", 768)
        intermediateSize = try r.int("intermediate_size", 3072)
        layers = try r.int("num_hidden_layers", 12)
        heads = try r.int("num_attention_heads", 12)
        imageSize = try r.int("image_size", 224)
        patchSize = try r.int("patch_size", 32)
        channels = try r.int("num_channels", 3)
        hiddenAct = try r.string("hidden_act", "quick_gelu")
        layerNormEps = try r.double("layer_norm_eps", 1e-5)
        guard hiddenSize > 0, heads > 0, hiddenSize % heads == 0, patchSize > 0, imageSize % patchSize == 0, layers > 0 else {
            throw MultimodalError.config(path: c.path, reason: "CLIP vision config needs hidden_size divisible by num_attention_heads and image_size divisible by patch_size")
        }
    }
}

/// A Hugging Face `CLIPVisionModel`: patch embedding as one GEMM over unfolded patches, class and
/// position embeddings, pre-layernorm, pre-LN encoder layers. Returns the hidden states of one
/// chosen layer (Uni-MoE: the penultimate), so it runs only the layers up to that one.
public final class VisionTower: @unchecked Sendable {
    public let config: CLIPVisionConfig
    let patchWeight: Tensor            // [D, C·p·p]
    let classEmbedding: Tensor         // [D] f32
    let positions: Tensor              // [patches + 1, D] f32
    let preNorm: LayerNormLayer
    let postNorm: LayerNormLayer
    let layers: [EncoderBlock]

    /// Loads a transformers CLIP vision directory (`config.json` + safetensors; names with or
    /// without the `vision_model.` prefix; a full CLIP checkpoint's text half is left alone).
    public convenience init(directory: String) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw MultimodalError.missingTower(modality: "vision", path: directory)
        }
        let cfg = try CLIPVisionConfig(ConfigReader.load((directory as NSString).appendingPathComponent("config.json"), modality: "vision"))
        let ckpt: Checkpoint
        do { ckpt = try Checkpoint(directory: directory) } catch CheckpointError.io(let path, let reason) {
            throw MultimodalError.config(path: path, reason: "vision tower weights: \(reason)")
        }
        let prefix = ckpt.contains("vision_model.embeddings.class_embedding") ? "vision_model." : ""
        try self.init(config: cfg, loader: PrefixLoader(ckpt, prefix: prefix))
    }

    init(config c: CLIPVisionConfig, loader l: PrefixLoader) throws {
        config = c
        let d = c.hiddenSize, pp = c.channels * c.patchSize * c.patchSize
        patchWeight = try l.take("embeddings.patch_embedding.weight", [d, c.channels, c.patchSize, c.patchSize]).reshaped([d, pp])
        classEmbedding = try l.take("embeddings.class_embedding", [d]).converted(to: .f32)
        positions = try l.take("embeddings.position_embedding.weight", [c.patches + 1, d]).converted(to: .f32)
        preNorm = try LayerNormLayer.load(l, "pre_layrnorm", dim: d, eps: c.layerNormEps)
        postNorm = try LayerNormLayer.load(l, "post_layernorm", dim: d, eps: c.layerNormEps)
        try Activations.check(c.hiddenAct)
        layers = try (0..<c.layers).map { i in
            let p = "encoder.layers.\(i)."
            return EncoderBlock(norm1: try LayerNormLayer.load(l, p + "layer_norm1", dim: d, eps: c.layerNormEps),
                         norm2: try LayerNormLayer.load(l, p + "layer_norm2", dim: d, eps: c.layerNormEps),
                         attention: AttentionLayer(q: try LinearLayer.load(l, p + "self_attn.q_proj", out: d, in: d),
                                                   k: try LinearLayer.load(l, p + "self_attn.k_proj", out: d, in: d),
                                                   v: try LinearLayer.load(l, p + "self_attn.v_proj", out: d, in: d),
                                                   o: try LinearLayer.load(l, p + "self_attn.out_proj", out: d, in: d),
                                                   heads: c.heads),
                         fc1: try LinearLayer.load(l, p + "mlp.fc1", out: c.intermediateSize, in: d),
                                fc2: try LinearLayer.load(l, p + "mlp.fc2", out: d, in: c.intermediateSize),
                                activation: c.hiddenAct)
        }
        try l.finish()
    }

    /// Tokens per image at the output: patches, plus one when CLS is kept.
    public func tokens(keepCLS: Bool) -> Int { config.patches + (keepCLS ? 1 : 0) }

    /// Resolves a `select_layer` (negative counts from the end, as Python indexing of hidden_states,
    /// whose entry 0 is the embeddings after pre-layernorm) to a hidden-state index.
    public func hiddenStateIndex(selectLayer: Int) throws -> Int {
        let n = config.layers + 1
        let i = selectLayer < 0 ? n + selectLayer : selectLayer
        guard i >= 0 && i < n else {
            throw MultimodalError.badInput("mm_vision_select_layer \(selectLayer) outside the tower's \(n) hidden states")
        }
        return i
    }

    /// Pixels `[n, C, S, S]` (or `[C, S, S]`) → hidden states `[n, tokens, D]` of `selectLayer`,
    /// CLS dropped unless `keepCLS`. The n images go through every layer as one batch.
    public func forward(pixels: Tensor, selectLayer: Int = -2, keepCLS: Bool = false) throws -> Tensor {
        let c = config
        let x4 = pixels.rank == 3 ? try pixels.reshaped([1] + pixels.shape) : pixels
        guard x4.rank == 4, x4.shape[1] == c.channels, x4.shape[2] == c.imageSize, x4.shape[3] == c.imageSize else {
            throw MultimodalError.badInput("vision tower takes pixels [n, \(c.channels), \(c.imageSize), \(c.imageSize)], got \(pixels.shape)")
        }
        let index = try hiddenStateIndex(selectLayer: selectLayer)
        let n = x4.shape[0], d = c.hiddenSize, t = c.patches + 1
        let px = x4.converted(to: .f32)
        let unfolded = Tensor(zeros: [n * c.patches, c.channels * c.patchSize * c.patchSize])
        Conv.patches(px.floats, images: n, channels: c.channels, height: c.imageSize, width: c.imageSize,
                     patch: c.patchSize, into: unfolded.floats)
        let patchEmb = Tensor(zeros: [n * c.patches, d])
        Linear.forward(unfolded.floats, rows: n * c.patches, weight: patchWeight, into: patchEmb.floats)
        let emb = Tensor(zeros: [n * t, d])
        FastMath.parallel(n * t, minChunk: 64) { rows in
            for row in rows {
                let img = row / t, tok = row % t
                let dst = emb.floats + row * d, pos = positions.floats + tok * d
                let src = tok == 0 ? classEmbedding.floats : patchEmb.floats + (img * c.patches + tok - 1) * d
                for j in 0..<d { dst[j] = src[j] + pos[j] }
            }
        }
        var h = preNorm(emb)
        let buffers = EncoderBlock.Buffers(rows: n * t, dim: d, ffn: c.intermediateSize)
        var pending: Tensor?
        for layer in layers.prefix(index) { pending = try layer(h, batch: n, pending: pending, buffers: buffers) }
        EncoderBlock.finish(h, pending: pending)
        h = try h.reshaped([n, t, d])
        if keepCLS { return h }
        let out = Tensor(zeros: [n, c.patches, d])
        for img in 0..<n {
            out.floats.advanced(by: img * c.patches * d).update(from: h.floats + (img * t + 1) * d, count: c.patches * d)
        }
        return out
    }

    /// The pooled output transformers reports (post-layernorm of the last layer's CLS), for checks.
    public func pooled(pixels: Tensor) throws -> Tensor {
        let h = try forward(pixels: pixels, selectLayer: config.layers, keepCLS: true)
        let n = h.shape[0], t = h.shape[1], d = h.shape[2]
        let cls = Tensor(zeros: [n, d])
        for i in 0..<n { cls.floats.advanced(by: i * d).update(from: h.floats + i * t * d, count: d) }
        return postNorm(cls)
    }
}
