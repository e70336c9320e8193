import Foundation
import Checkpoint
import Tensor

/// One decoder layer's self-attention (LLaMA: q/k/v/o projections, RoPE, grouped-query attention,
/// causal). Projections run over the concatenated rows of every sequence in the step; RoPE, the
/// KV-cache append and the attention itself run per sequence.
struct SelfAttention {
    let q: Tensor, k: Tensor, v: Tensor, o: Tensor
    let qBias: Tensor?, kBias: Tensor?, vBias: Tensor?, oBias: Tensor?
    let heads: Int, kvHeads: Int, headDim: Int
    let rope: Rope

    static func load(_ ckpt: Checkpoint, prefix: String, config: ModelConfig, rope: Rope) throws -> SelfAttention {
        let h = config.hiddenSize, hd = config.headDim
        let qd = config.numAttentionHeads * hd, kd = config.numKeyValueHeads * hd
        // q/k/v carry a bias with `attention_bias` (LLaMA) or `qkv_bias` (qwen2_moe); o only with the former.
        func bias(_ name: String, _ n: Int, _ present: Bool) throws -> Tensor? {
            present ? try ckpt.take("\(prefix).\(name).bias", shape: [n]) : nil
        }
        return SelfAttention(
            q: try ckpt.take("\(prefix).q_proj.weight", shape: [qd, h]),
            k: try ckpt.take("\(prefix).k_proj.weight", shape: [kd, h]),
            v: try ckpt.take("\(prefix).v_proj.weight", shape: [kd, h]),
            o: try ckpt.take("\(prefix).o_proj.weight", shape: [h, qd]),
            qBias: try bias("q_proj", qd, config.qkvBias), kBias: try bias("k_proj", kd, config.qkvBias),
            vBias: try bias("v_proj", kd, config.qkvBias), oBias: try bias("o_proj", h, config.attentionBias),
            heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim: hd, rope: rope)
    }

    /// One sequence's rows inside the step: rows `start ..< start + count`, cache of that sequence.
    struct Span {
        let start: Int
        let count: Int
        let cache: KVCache
    }

    /// `out[rows, hidden] = Attention(h)`, appending this layer's keys/values to each span's cache
    /// at positions `cache.count ..< cache.count + span.count` (the caller advances the caches).
    func forward(_ h: UnsafePointer<Float>, rows: Int, spans: [Span], layer: Int, ws: Workspace,
                 into out: UnsafeMutablePointer<Float>) {
        let qd = heads * headDim, kd = kvHeads * headDim
        let qb = ws.q.ensure(rows * qd), kb = ws.k.ensure(rows * kd), vb = ws.v.ensure(rows * kd)
        let ab = ws.attn.ensure(rows * qd)
        Linear.forwardAll(count: 3) { i in
            switch i {
            case 0: Linear.Product(h, rows: rows, weight: q, bias: qBias, into: qb)
            case 1: Linear.Product(h, rows: rows, weight: k, bias: kBias, into: kb)
            default: Linear.Product(h, rows: rows, weight: v, bias: vBias, into: vb)
            }
        }
        let scale = 1 / Float(headDim).squareRoot()
        ws.positions.withUnsafeBufferPointer { posB in
            let pos = posB.baseAddress!
            for s in spans {
                let past = s.cache.count, total = past + s.count
                let qs = qb + s.start * qd, ks = kb + s.start * kd, vs = vb + s.start * kd
                rope.apply(qs, rows: s.count, heads: heads, positions: pos + s.start)
                rope.apply(ks, rows: s.count, heads: kvHeads, positions: pos + s.start)
                (s.cache.keys(layer: layer) + past * kd).update(from: ks, count: s.count * kd)
                (s.cache.values(layer: layer) + past * kd).update(from: vs, count: s.count * kd)
                let scores = ws.scores.ensure(s.count * total)
                Attention.forward(q: qs, queries: s.count, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                  keys: s.cache.keys(layer: layer), values: s.cache.values(layer: layer),
                                  keyCount: total, causalOffset: past, scale: scale,
                                  scratch: scores, out: ab + s.start * qd)
            }
        }
        Linear.forward(ab, rows: rows, weight: o, bias: oBias, into: out)
    }
}
