import Foundation
import JSON
import Tensor
import Checkpoint

/// The Blip2QFormerConfig fields the Q-Former needs, with transformers' defaults.
public struct QFormerConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var hiddenAct: String
    public var layerNormEps: Double
    public var crossAttentionFrequency: Int
    public var encoderHiddenSize: Int

    init(_ r: ConfigReader) throws {
        hiddenSize = try r.int("hidden_size", 768)
        layers = try r.int("num_hidden_layers", 12)
        heads = try r.int("num_attention_heads", 12)
        intermediateSize = try r.int("intermediate_size", 3072)
        hiddenAct = try r.string("hidden_act", "gelu")
        layerNormEps = try r.double("layer_norm_eps", 1e-12)
        crossAttentionFrequency = try r.int("cross_attention_frequency", 2)
        encoderHiddenSize = try r.int("encoder_hidden_size", 1408)
        guard hiddenSize > 0, heads > 0, hiddenSize % heads == 0, crossAttentionFrequency > 0 else {
            throw MultimodalError.config(path: r.path, reason: "Q-Former config needs hidden_size divisible by num_attention_heads and cross_attention_frequency > 0")
        }
        if r.json["use_qformer_text_input"]?.boolValue == true {
            throw MultimodalError.config(path: r.path, reason: "use_qformer_text_input is not supported (queries only)")
        }
        try Activations.check(hiddenAct)
    }

    init(json: [String: JSONValue], path: String) throws { try self.init(ConfigReader(json: json, path: path)) }
}

/// transformers' `Blip2QFormerModel` run on query embeddings only (no text): LayerNorm on the
/// queries, then BERT-style post-LN layers — self-attention, cross-attention to the encoder states
/// every `cross_attention_frequency` layers, and the query feed-forward. The audio-connector variant.
public final class QFormer: @unchecked Sendable {
    public let config: QFormerConfig
    let inputNorm: LayerNormLayer
    let layers: [Layer]

    struct Block {
        let attention: AttentionLayer
        let norm: LayerNormLayer
    }

    struct Layer {
        let selfBlock: Block
        let crossBlock: Block?
        let up: LinearLayer
        let down: LinearLayer
        let norm: LayerNormLayer
    }

    /// Loads a transformers Blip2QFormerModel directory (config.json + safetensors).
    public convenience init(directory: String) throws {
        let cfg = try QFormerConfig(ConfigReader.load((directory as NSString).appendingPathComponent("config.json"), modality: "audio"))
        let ckpt = try Checkpoint(directory: directory)
        let l = PrefixLoader(ckpt, prefix: "")
        try self.init(config: cfg, loader: l)
        try l.finish()
    }

    init(config c: QFormerConfig, loader l: PrefixLoader) throws {
        config = c
        let d = c.hiddenSize, eps = c.layerNormEps
        func block(_ p: String, kvIn: Int) throws -> Block {
            Block(attention: AttentionLayer(q: try LinearLayer.load(l, p + ".attention.query", out: d, in: d),
                                            k: try LinearLayer.load(l, p + ".attention.key", out: d, in: kvIn),
                                            v: try LinearLayer.load(l, p + ".attention.value", out: d, in: kvIn),
                                            o: try LinearLayer.load(l, p + ".output.dense", out: d, in: d),
                                            heads: c.heads),
                  norm: try LayerNormLayer.load(l, p + ".output.LayerNorm", dim: d, eps: eps))
        }
        inputNorm = try LayerNormLayer.load(l, "layernorm", dim: d, eps: eps)
        layers = try (0..<c.layers).map { i in
            let p = "encoder.layer.\(i)."
            return Layer(selfBlock: try block(p + "attention", kvIn: d),
                         crossBlock: i % c.crossAttentionFrequency == 0 ? try block(p + "crossattention", kvIn: c.encoderHiddenSize) : nil,
                         up: try LinearLayer.load(l, p + "intermediate_query.dense", out: c.intermediateSize, in: d),
                         down: try LinearLayer.load(l, p + "output_query.dense", out: d, in: c.intermediateSize),
                         norm: try LayerNormLayer.load(l, p + "output_query.LayerNorm", dim: d, eps: eps))
        }
    }

    /// queries `[Q, D]` (shared) and encoder states `[n, P, De]` → last hidden state `[n, Q, D]`.
    public func forward(queries: Tensor, encoderStates: Tensor) throws -> Tensor {
        let d = config.hiddenSize
        let q = queries.converted(to: .f32)
        let rows = q.count / max(d, 1)
        guard q.lastDim == d, rows > 0 else {
            throw MultimodalError.dimensionMismatch("query tokens \(queries.shape) for a Q-Former of width \(d)")
        }
        guard encoderStates.rank == 3, encoderStates.shape[2] == config.encoderHiddenSize else {
            throw MultimodalError.dimensionMismatch("encoder states \(encoderStates.shape) for a Q-Former with encoder_hidden_size \(config.encoderHiddenSize)")
        }
        let n = encoderStates.shape[0]
        let enc = try encoderStates.converted(to: .f32).reshaped([n * encoderStates.shape[1], encoderStates.shape[2]])
        let tiled = Tensor(zeros: [n * rows, d])
        for w in 0..<n { tiled.floats.advanced(by: w * rows * d).update(from: q.floats, count: rows * d) }
        var x = inputNorm(tiled)
        func post(_ b: Block, _ x: Tensor, context: Tensor?) -> Tensor {
            let a = b.attention(x, context: context, batch: n)
            Elementwise.add(a, x)
            return b.norm(a)
        }
        for layer in layers {
            x = post(layer.selfBlock, x, context: nil)
            if let cross = layer.crossBlock { x = post(cross, x, context: enc) }
            let f = layer.up(x)
            try FastMath.activate(config.hiddenAct, f.floats, count: f.count)
            let y = layer.down(f)
            Elementwise.add(y, x)
            x = layer.norm(y)
        }
        return try x.reshaped([n, rows, d])
    }
}
