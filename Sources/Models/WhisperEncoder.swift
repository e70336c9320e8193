import Foundation
import Tensor
import Checkpoint

/// The Whisper config fields the encoder and the decoder-as-connector need, with transformers'
/// defaults (Whisper's LayerNorms use torch's eps 1e-5).
public struct WhisperConfig: Sendable, Equatable {
    public var dModel: Int
    public var melBins: Int
    public var maxSourcePositions: Int
    public var maxTargetPositions: Int
    public var encoderLayers: Int
    public var encoderHeads: Int
    public var encoderFFN: Int
    public var decoderLayers: Int
    public var decoderHeads: Int
    public var decoderFFN: Int
    public var activation: String
    public let layerNormEps = 1e-5

    /// Mel frames one window must have: the convolutions halve the length to max_source_positions.
    public var melFrames: Int { 2 * maxSourcePositions }

    init(_ r: ConfigReader) throws {
        dModel = try r.int("d_model", 1280)
        melBins = try r.int("num_mel_bins", 80)
        maxSourcePositions = try r.int("max_source_positions", 1500)
        maxTargetPositions = try r.int("max_target_positions", 448)
        encoderLayers = try r.int("encoder_layers", 32)
        encoderHeads = try r.int("encoder_attention_heads", 20)
        encoderFFN = try r.int("encoder_ffn_dim", 5120)
        decoderLayers = try r.int("decoder_layers", 32)
        decoderHeads = try r.int("decoder_attention_heads", 20)
        decoderFFN = try r.int("decoder_ffn_dim", 5120)
        activation = try r.string("activation_function", "gelu")
        guard dModel > 0, encoderHeads > 0, dModel % encoderHeads == 0, decoderHeads > 0, dModel % decoderHeads == 0,
              maxSourcePositions > 0, melBins > 0 else {
            throw MultimodalError.config(path: r.path, reason: "Whisper config needs d_model divisible by the attention heads and positive sizes")
        }
        try Activations.check(activation)
    }

    /// Reads `config.json` of a transformers Whisper directory.
    public static func load(directory: String) throws -> WhisperConfig {
        try WhisperConfig(ConfigReader.load((directory as NSString).appendingPathComponent("config.json"), modality: "audio"))
    }
}

extension EncoderBlock {
    /// A Whisper encoder layer (`self_attn_layer_norm`, `self_attn`, `final_layer_norm`, `fc1`, `fc2`).
    static func whisper(_ l: PrefixLoader, _ p: String, d: Int, heads: Int, ffn: Int, eps: Double,
                        activation: String) throws -> EncoderBlock {
        EncoderBlock(norm1: try LayerNormLayer.load(l, p + "self_attn_layer_norm", dim: d, eps: eps),
                     norm2: try LayerNormLayer.load(l, p + "final_layer_norm", dim: d, eps: eps),
                     attention: try AttentionLayer.whisper(l, p + "self_attn", d: d, heads: heads),
                     fc1: try LinearLayer.load(l, p + "fc1", out: ffn, in: d),
                     fc2: try LinearLayer.load(l, p + "fc2", out: d, in: ffn),
                     activation: activation)
    }
}

extension AttentionLayer {
    /// Whisper's attention names (`{q,k,v,out}_proj`, k without bias); `kvIn` is the context width.
    static func whisper(_ l: PrefixLoader, _ p: String, d: Int, heads: Int, kvIn: Int? = nil) throws -> AttentionLayer {
        AttentionLayer(q: try LinearLayer.load(l, p + ".q_proj", out: d, in: d),
                       k: try LinearLayer.load(l, p + ".k_proj", out: d, in: kvIn ?? d, bias: false),
                       v: try LinearLayer.load(l, p + ".v_proj", out: d, in: kvIn ?? d),
                       o: try LinearLayer.load(l, p + ".out_proj", out: d, in: d),
                       heads: heads)
    }
}

/// `WhisperModel.encoder`: conv1 (k3 p1) + GELU, conv2 (k3 s2 p1) + GELU as GEMMs over im2col,
/// + positional embedding, pre-LN layers, final layer norm. One window is `[mel, 2·max_source_positions]`.
public final class WhisperEncoder: @unchecked Sendable {
    public let config: WhisperConfig
    let conv1W, conv2W: Tensor
    let conv1B, conv2B: Tensor
    let positions: Tensor      // [P, D] f32
    let layers: [EncoderBlock]
    let finalNorm: LayerNormLayer

    /// Loads the encoder of a transformers Whisper directory (`encoder.*` or `model.encoder.*` names;
    /// the decoder's tensors are left alone).
    public convenience init(directory: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw MultimodalError.missingTower(modality: "audio", path: directory)
        }
        let cfg = try WhisperConfig.load(directory: directory)
        let ckpt: Checkpoint
        do { ckpt = try Checkpoint(directory: directory) } catch CheckpointError.io(let path, let reason) {
            throw MultimodalError.config(path: path, reason: "audio tower weights: \(reason)")
        }
        let prefix = ckpt.contains("model.encoder.conv1.weight") ? "model.encoder." : "encoder."
        try self.init(config: cfg, loader: PrefixLoader(ckpt, prefix: prefix))
    }

    init(config c: WhisperConfig, loader l: PrefixLoader) throws {
        config = c
        let d = c.dModel
        conv1W = try l.take("conv1.weight", [d, c.melBins, 3])
        conv1B = try l.take("conv1.bias", [d]).converted(to: .f32)
        conv2W = try l.take("conv2.weight", [d, d, 3])
        conv2B = try l.take("conv2.bias", [d]).converted(to: .f32)
        positions = try l.take("embed_positions.weight", [c.maxSourcePositions, d]).converted(to: .f32)
        layers = try (0..<c.encoderLayers).map {
            try EncoderBlock.whisper(l, "layers.\($0).", d: d, heads: c.encoderHeads, ffn: c.encoderFFN, eps: c.layerNormEps,
                                     activation: c.activation)
        }
        finalNorm = try LayerNormLayer.load(l, "layer_norm", dim: d, eps: c.layerNormEps)
        try l.finish()
    }

    /// Log-mel windows `[n, mel, frames]` (or one `[mel, frames]`) → last hidden state `[n, P, D]`.
    /// The convolutions run per window; the transformer layers take all windows as one batch.
    public func forward(mel: Tensor) throws -> Tensor {
        let c = config
        let m3 = mel.rank == 2 ? try mel.reshaped([1] + mel.shape) : mel
        guard m3.rank == 3, m3.shape[1] == c.melBins, m3.shape[2] == c.melFrames else {
            throw MultimodalError.badInput("Whisper encoder takes log-mel [n, \(c.melBins), \(c.melFrames)] (2 × max_source_positions frames), got \(mel.shape)")
        }
        let n = m3.shape[0], d = c.dModel, p = c.maxSourcePositions
        let mf = m3.converted(to: .f32)
        let h = Tensor(zeros: [n * p, d])
        let channelsLast = Tensor(zeros: [c.melFrames, c.melBins])
        for w in 0..<n {
            Conv.transpose(mf.floats + w * c.melBins * c.melFrames, rows: c.melBins, cols: c.melFrames, into: channelsLast.floats)
            let a = try Conv.conv1d(channelsLast.floats, length: c.melFrames, channels: c.melBins, weight: conv1W, bias: conv1B, stride: 1, padding: 1)
            FastMath.gelu(a.floats, count: a.count)
            let b = try Conv.conv1d(a.floats, length: c.melFrames, channels: d, weight: conv2W, bias: conv2B, stride: 2, padding: 1)
            FastMath.gelu(b.floats, count: b.count)
            guard b.shape[0] == p else { throw MultimodalError.badInput("conv2 gave \(b.shape[0]) positions, expected \(p)") }
            let dst = h.floats + w * p * d, src = b.floats, pos = positions.floats
            FastMath.parallel(p * d, minChunk: 1 << 15) { r in for i in r { dst[i] = src[i] + pos[i] } }
        }
        let buffers = EncoderBlock.Buffers(rows: n * p, dim: d, ffn: c.encoderFFN)
        var pending: Tensor?
        for layer in layers { pending = try layer(h, batch: n, pending: pending, buffers: buffers) }
        let x = Tensor(zeros: h.shape)
        EncoderKernels.addLayerNorm(h.floats, rows: n * p, dim: d, pending: pending.map { UnsafePointer($0.floats) },
                                    weight: finalNorm.weight, bias: finalNorm.bias, eps: finalNorm.eps, into: x.floats)
        return try x.reshaped([n, p, d])
    }
}
