import Tensor

/// A pre-LN transformer encoder block, as CLIP's and Whisper's encoders have it:
/// `x + o(attn(norm1(x)))`, then `+ fc2(act(fc1(norm2(·))))`, non-causal attention within each span.
/// One forward and backward for both towers.
final class EncoderBlockOp {
    let norm1, norm2: LayerNormOp
    let q, k, v, o, fc1, fc2: LinearOp
    let attention: AttentionOp
    let act: GELUOp

    init(norm1: LayerNormOp, norm2: LayerNormOp, q: LinearOp, k: LinearOp, v: LinearOp, o: LinearOp, fc1: LinearOp, fc2: LinearOp,
         heads: Int, quickGELU: Bool) {
        self.norm1 = norm1; self.norm2 = norm2; self.q = q; self.k = k; self.v = v; self.o = o; self.fc1 = fc1; self.fc2 = fc2
        let d = q.outFeatures
        attention = AttentionOp(heads: heads, kvHeads: heads, headDim: d / heads, causal: false)
        act = GELUOp(quick: quickGELU)
    }

    /// Loads `PREFIX{self_attn.{q,k,v,out}_proj, fc1, fc2}` and the two norms (names differ per tower).
    static func load(_ lin: (String, Int, Int, Bool) throws -> LinearOp, _ ln: (String) throws -> LayerNormOp, prefix b: String,
                     norms: (String, String), mlp: (String, String), d: Int, ffn: Int, heads: Int, keyBias: Bool,
                     quickGELU: Bool) throws -> EncoderBlockOp {
        EncoderBlockOp(norm1: try ln(b + norms.0), norm2: try ln(b + norms.1),
                       q: try lin(b + "self_attn.q_proj", d, d, true), k: try lin(b + "self_attn.k_proj", d, d, keyBias),
                       v: try lin(b + "self_attn.v_proj", d, d, true), o: try lin(b + "self_attn.out_proj", d, d, true),
                       fc1: try lin(b + mlp.0, ffn, d, true), fc2: try lin(b + mlp.1, d, ffn, true), heads: heads, quickGELU: quickGELU)
    }

    func forward(_ x: Tensor, spans: [AttentionSpan]) -> Tensor {
        let h = norm1.forward(x)
        let x1 = Vec.sum(x, o.forward(attention.forward(q: q.forward(h), k: k.forward(h), v: v.forward(h), spans: spans)))
        return Vec.sum(x1, fc2.forward(act.forward(fc1.forward(norm2.forward(x1)))))
    }

    func backward(_ dy: Tensor) -> Tensor {
        let dMLP = norm2.backward(fc1.backward(act.backward(fc2.backward(dy))))
        Vec.add(dMLP, dy)                                   // d x1
        let (dq, dk, dv) = attention.backward(o.backward(dMLP))
        let dh = q.backward(dq)
        Vec.add(dh, k.backward(dk))
        Vec.add(dh, v.backward(dv))
        let dx = norm1.backward(dh)
        Vec.add(dx, dMLP)
        return dx
    }

    func release() {
        for l in [q, k, v, o, fc1, fc2] { l.release() }
        norm1.release(); norm2.release(); attention.release(); act.release()
    }
}
