import Foundation
import Checkpoint
import Models
import Tensor

/// A Whisper encoder under training (groundwork of a stage 0 for the audio tower): conv1 (k3 p1) +
/// GELU, conv2 (k3 s2 p1) + GELU, the (frozen, as transformers keeps it) positional embedding,
/// pre-LN blocks (k_proj without bias) and the final layer norm. Log-mel input is never trained.
public final class TrainableWhisperEncoder {
    public let config: WhisperConfig
    public let params = ParameterSet()
    public let prefix: String
    let conv1, conv2: Conv1dOp
    let act1 = GELUOp(), act2 = GELUOp()
    let positions: Parameter
    let blocks: [EncoderBlockOp]
    let finalNorm: LayerNormOp
    private var windows = 0

    /// Loads the encoder of a transformers Whisper directory (the decoder's tensors stay frozen, unused).
    public init(directory: String) throws {
        let c = try WhisperConfig.load(directory: directory)
        config = c
        guard c.activation == "gelu" else { throw TrainingError.unsupportedModel("Whisper activation '\(c.activation)' (gelu)") }
        let ckpt = try Checkpoint(directory: directory, mergeAdapters: false)
        prefix = ckpt.contains("model.encoder.conv1.weight") ? "model.encoder." : "encoder."
        let d = c.dModel, eps = Float(c.layerNormEps), params = self.params, prefix = self.prefix
        func p(_ name: String, _ shape: [Int]) throws -> Parameter {
            let t = try ckpt.take(prefix + name)
            guard t.shape == shape else { throw TrainingError.badCheckpoint(path: prefix + name, reason: "shape \(t.shape), expected \(shape)") }
            return params.add(Parameter(name: prefix + name, value: t))
        }
        func lin(_ name: String, out: Int, in inF: Int, bias: Bool = true) throws -> LinearOp {
            LinearOp(weight: try p(name + ".weight", [out, inF]), bias: bias ? try p(name + ".bias", [out]) : nil)
        }
        func ln(_ name: String) throws -> LayerNormOp {
            LayerNormOp(weight: try p(name + ".weight", [d]), bias: try p(name + ".bias", [d]), eps: eps)
        }
        conv1 = Conv1dOp(weight: try p("conv1.weight", [d, c.melBins, 3]), bias: try p("conv1.bias", [d]), stride: 1, padding: 1)
        conv2 = Conv1dOp(weight: try p("conv2.weight", [d, d, 3]), bias: try p("conv2.bias", [d]), stride: 2, padding: 1)
        positions = try p("embed_positions.weight", [c.maxSourcePositions, d])
        blocks = try (0..<c.encoderLayers).map { i in
            try EncoderBlockOp.load({ try lin($0, out: $1, in: $2, bias: $3) }, ln, prefix: "layers.\(i).",
                                    norms: ("self_attn_layer_norm", "final_layer_norm"), mlp: ("fc1", "fc2"),
                                    d: d, ffn: c.encoderFFN, heads: c.encoderHeads, keyBias: false, quickGELU: false)
        }
        finalNorm = try ln("layer_norm")
        for n in ckpt.names where params[n] == nil { params.add(Parameter(name: n, value: try ckpt.take(n))) }
        // The encoder trains; the sinusoidal positions stay fixed (transformers freezes them), the decoder is not used.
        params.setTrainable { $0.hasPrefix(prefix) && !$0.hasSuffix("embed_positions.weight") }
    }

    /// Every tensor of the tower directory under its checkpoint name (decoder included, unchanged).
    public func exportTensors() -> [(String, Tensor)] { params.ordered.map { ($0.name, $0.value) } }

    /// Log-mel windows `[n, mel, frames]` → last hidden state `[n · positions, D]`.
    public func forward(mel: Tensor) throws -> Tensor {
        let c = config
        guard mel.rank == 3, mel.shape[1] == c.melBins, mel.shape[2] == c.melFrames else {
            throw TrainingError.invalidSetting("Whisper encoder takes log-mel [n, \(c.melBins), \(c.melFrames)], got \(mel.shape)")
        }
        let n = mel.shape[0], d = c.dModel, p = c.maxSourcePositions
        windows = n
        let mf = mel.converted(to: .f32)
        let channelsLast = Tensor(zeros: [n * c.melFrames, c.melBins])
        withExtendedLifetime(mf) {
            for w in 0..<n {
                Conv.transpose(mf.floats + w * c.melBins * c.melFrames, rows: c.melBins, cols: c.melFrames,
                               into: channelsLast.floats + w * c.melFrames * c.melBins)
            }
        }
        let a = act1.forward(conv1.forward(channelsLast, windows: n))
        let b = act2.forward(conv2.forward(a, windows: n))
        guard b.rowCount == n * p else { throw TrainingError.invalidSetting("conv2 gave \(b.rowCount / max(n, 1)) positions, expected \(p)") }
        var x = b.copy()
        for w in 0..<n { for t in 0..<p { Vec.addRow(x, w * p + t, positions.value, t, width: d) } }
        let spans = (0..<n).map { AttentionSpan(queryStart: $0 * p, queryCount: p, keyStart: $0 * p, keyCount: p) }
        for blk in blocks { x = blk.forward(x, spans: spans) }
        return finalNorm.forward(x)
    }

    /// d states `[n · positions, D]` → gradients of every trainable tensor.
    public func backward(_ dStates: Tensor) {
        let c = config, d = c.dModel, p = c.maxSourcePositions
        var dx = finalNorm.backward(dStates)
        for blk in blocks.reversed() { dx = blk.backward(dx) }
        if positions.trainable { for w in 0..<windows { for t in 0..<p { Vec.addRow(positions.grad, t, dx, w * p + t, width: d) } } }
        if let da = conv2.backward(act2.backward(dx), needInput: true) {
            _ = conv1.backward(act1.backward(da), needInput: false)
        }
        release()
    }

    func release() {
        conv1.release(); conv2.release(); act1.release(); act2.release(); finalNorm.release()
        for b in blocks { b.release() }
    }
}
