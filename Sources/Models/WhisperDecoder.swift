import Foundation
import Tensor
import Checkpoint

/// Uni-MoE's speech connector core: transformers' `WhisperDecoder` run with `inputs_embeds` = the
/// learnable query tokens — its own positional embedding added, causal self-attention, cross-attention
/// to the encoder output, final layer norm. Token embeddings (`embed_tokens`) are never used.
public final class WhisperDecoder: @unchecked Sendable {
    public let config: WhisperConfig
    let positions: Tensor   // [maxTarget, D] f32
    let layers: [Layer]
    let finalNorm: LayerNormLayer

    struct Layer {
        let selfNorm, crossNorm, ffnNorm: LayerNormLayer
        let selfAttention, crossAttention: AttentionLayer
        let fc1, fc2: LinearLayer
    }

    /// Loads from a checkpoint under `prefix` (e.g. `model.mm_audio_aligner.decoder.audio_decoder.`);
    /// `encoderWidth` is the width of the states it cross-attends to.
    init(config c: WhisperConfig, loader l: PrefixLoader, encoderWidth: Int) throws {
        config = c
        let d = c.dModel, eps = c.layerNormEps
        if l.has("embed_tokens.weight") { l.skip("embed_tokens.weight") }
        positions = try l.take("embed_positions.weight", [c.maxTargetPositions, d]).converted(to: .f32)
        layers = try (0..<c.decoderLayers).map { i in
            let p = "layers.\(i)."
            return Layer(selfNorm: try LayerNormLayer.load(l, p + "self_attn_layer_norm", dim: d, eps: eps),
                         crossNorm: try LayerNormLayer.load(l, p + "encoder_attn_layer_norm", dim: d, eps: eps),
                         ffnNorm: try LayerNormLayer.load(l, p + "final_layer_norm", dim: d, eps: eps),
                         selfAttention: try AttentionLayer.whisper(l, p + "self_attn", d: d, heads: c.decoderHeads),
                         crossAttention: try AttentionLayer.whisper(l, p + "encoder_attn", d: d, heads: c.decoderHeads, kvIn: encoderWidth),
                         fc1: try LinearLayer.load(l, p + "fc1", out: c.decoderFFN, in: d),
                         fc2: try LinearLayer.load(l, p + "fc2", out: d, in: c.decoderFFN))
        }
        finalNorm = try LayerNormLayer.load(l, "layer_norm", dim: d, eps: eps)
    }

    /// queries `[Q, D]` (shared by every window) and encoder states `[n, P, De]` → `[n, Q, D]`.
    public func forward(queries: Tensor, encoderStates: Tensor) throws -> Tensor {
        let d = config.dModel
        let q = queries.converted(to: .f32)
        let rows = q.count / max(d, 1)
        guard q.lastDim == d, rows > 0, rows <= config.maxTargetPositions else {
            throw MultimodalError.dimensionMismatch("query tokens \(queries.shape) for a Whisper decoder of width \(d) and \(config.maxTargetPositions) positions")
        }
        let kvIn = layers.first?.crossAttention.k.inFeatures ?? d
        guard encoderStates.rank == 3, encoderStates.shape[2] == kvIn else {
            throw MultimodalError.dimensionMismatch("encoder states \(encoderStates.shape) for cross-attention expecting width \(kvIn)")
        }
        let n = encoderStates.shape[0]
        let enc = try encoderStates.converted(to: .f32).reshaped([n * encoderStates.shape[1], encoderStates.shape[2]])
        let x = Tensor(zeros: [n * rows, d])
        for w in 0..<n {
            let dst = x.floats + w * rows * d
            for i in 0..<(rows * d) { dst[i] = q.floats[i] + positions.floats[i] }
        }
        for layer in layers {
            Elementwise.add(x, layer.selfAttention(layer.selfNorm(x), batch: n, causal: true))
            Elementwise.add(x, layer.crossAttention(layer.crossNorm(x), context: enc, batch: n))
            let f = layer.fc1(layer.ffnNorm(x))
            try FastMath.activate(config.activation, f.floats, count: f.count)
            Elementwise.add(x, layer.fc2(f))
        }
        return try finalNorm(x).reshaped([n, rows, d])
    }
}
