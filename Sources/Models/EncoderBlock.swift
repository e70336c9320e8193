import Foundation
import Tensor

/// One pre-LN transformer encoder layer (CLIP vision, Whisper encoder):
/// `h += out_proj(attn(LN1(h))); h += fc2(act(fc1(LN2(h))))`, run with the fused kernels of
/// `EncoderKernels`: q, k and v as one GEMM over a concatenated `[3D, D]` weight, residual adds
/// done by the output GEMMs themselves (β = 1), each projection's bias folded into the next
/// element-wise pass, and every pass split over the worker pool.
struct EncoderBlock {
    let norm1, norm2: LayerNormLayer
    let qkvWeight: Tensor       // [3D, D], q then k then v rows, the stored dtype
    let qkvBias: Tensor         // [3D] f32 (zeros where a projection has no bias)
    let o, fc1, fc2: LinearLayer
    let heads: Int
    let activation: String

    init(norm1: LayerNormLayer, norm2: LayerNormLayer, attention a: AttentionLayer, fc1: LinearLayer, fc2: LinearLayer,
         activation: String) {
        self.norm1 = norm1
        self.norm2 = norm2
        let d = a.q.outFeatures, inF = a.q.inFeatures
        let parts = [a.q, a.k, a.v]
        // One fused q·k·v matrix in the parts' common dtype (f32 when they differ or are q8_0).
        let common = parts.allSatisfy({ $0.weight.dtype == a.q.weight.dtype }) ? a.q.weight.dtype : .f32
        let dtype = common == .q8_0 ? .f32 : common
        let w = Tensor(zeros: [3 * d, inF], dtype: dtype)
        let b = Tensor(zeros: [3 * d])
        for (i, p) in parts.enumerated() {
            let src = p.weight.dtype == dtype ? p.weight : p.weight.converted(to: dtype)
            (w.raw + i * src.byteCount).copyMemory(from: src.raw, byteCount: src.byteCount)
            if let pb = p.bias { (b.floats + i * d).update(from: pb.floats, count: d) }
        }
        qkvWeight = w
        qkvBias = b
        o = a.o
        self.fc1 = fc1
        self.fc2 = fc2
        heads = a.heads
        self.activation = activation
    }

    /// Work buffers for a forward pass over `rows` tokens, reused by every layer.
    final class Buffers {
        let normed, qkv, attended, hidden: Tensor
        init(rows: Int, dim: Int, ffn: Int) {
            normed = Tensor(zeros: [rows, dim])
            qkv = Tensor(zeros: [rows, 3 * dim])
            attended = Tensor(zeros: [rows, dim])
            hidden = Tensor(zeros: [rows, ffn])
        }
    }

    /// Updates `h [batch·tokens, D]` in place. `pending` is the bias of the previous layer's last
    /// projection, not yet added to `h`; returns this layer's (add it with `finish` after the last).
    func callAsFunction(_ h: Tensor, batch: Int, pending: Tensor?, buffers bf: Buffers) throws -> Tensor? {
        let rows = h.rowCount, d = h.lastDim, f = fc1.outFeatures
        let tokens = rows / batch, headDim = d / heads
        EncoderKernels.addLayerNorm(h.floats, rows: rows, dim: d, pending: pending.map { UnsafePointer($0.floats) },
                                    weight: norm1.weight, bias: norm1.bias, eps: norm1.eps, into: bf.normed.floats)
        EncoderKernels.project(bf.normed.floats, rows: rows, weight: qkvWeight, into: bf.qkv.floats)
        EncoderKernels.addBias(bf.qkv.floats, rows: rows, cols: 3 * d, bias: qkvBias.floats)
        let qkv = bf.qkv.floats
        EncoderAttention.forward(q: qkv, ldq: 3 * d, k: qkv + d, ldk: 3 * d, v: qkv + 2 * d, ldv: 3 * d,
                                 batch: batch, queries: tokens, keys: tokens, heads: heads, headDim: headDim,
                                 scale: 1 / Float(headDim).squareRoot(), causal: false, out: bf.attended.floats, ldo: d)
        EncoderKernels.project(bf.attended.floats, rows: rows, weight: o.weight, into: h.floats, accumulate: true)
        EncoderKernels.addLayerNorm(h.floats, rows: rows, dim: d, pending: o.bias.map { UnsafePointer($0.floats) },
                                    weight: norm2.weight, bias: norm2.bias, eps: norm2.eps, into: bf.normed.floats)
        EncoderKernels.project(bf.normed.floats, rows: rows, weight: fc1.weight, into: bf.hidden.floats)
        try EncoderKernels.biasActivate(bf.hidden.floats, rows: rows, cols: f, bias: fc1.bias.map { UnsafePointer($0.floats) },
                                        activation: activation)
        EncoderKernels.project(bf.hidden.floats, rows: rows, weight: fc2.weight, into: h.floats, accumulate: true)
        return fc2.bias
    }

    /// Adds the bias the last layer left pending.
    static func finish(_ h: Tensor, pending: Tensor?) {
        if let pending { EncoderKernels.addBias(h.floats, rows: h.rowCount, cols: h.lastDim, bias: pending.floats) }
    }
}
