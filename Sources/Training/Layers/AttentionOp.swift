import Foundation
import Tensor

/// One attention problem inside a batch: `queries` rows of the query buffer attend to `keys` rows of
/// the key/value buffers (a sequence of the trunk, a chunk of the speech connector).
struct AttentionSpan: Sendable, Equatable {
    var queryStart: Int
    var queryCount: Int
    var keyStart: Int
    var keyCount: Int
}

/// Scaled dot-product attention with grouped-query heads over already projected q `[Rq, H·d]`,
/// k, v `[Rk, KV·d]`: per span and head, `P = softmax(q kᵀ · scale)` (causal: query i sees keys
/// ≤ i, counted from the span's end), `o = P v`. Keeps P for the backward:
/// dP = dO vᵀ, dV += Pᵀ dO, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale · dS k, dK += scale · dSᵀ q.
final class AttentionOp {
    let heads: Int
    let kvHeads: Int
    let headDim: Int
    let causal: Bool
    let scale: Float
    private var q: Tensor?, k: Tensor?, v: Tensor?
    private var spans: [AttentionSpan] = []
    private var probs: [Tensor] = []   // per span: [H, qn, kn]

    init(heads: Int, kvHeads: Int, headDim: Int, causal: Bool) {
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.causal = causal
        scale = 1 / Float(headDim).squareRoot()
    }

    func forward(q: Tensor, k: Tensor, v: Tensor, spans: [AttentionSpan]) -> Tensor {
        self.q = q; self.k = k; self.v = v; self.spans = spans
        let d = headDim, qw = heads * d, kw = kvHeads * d, group = heads / kvHeads
        let out = Tensor(zeros: [q.rowCount, qw])
        probs = spans.map { s in
            let p = Tensor(zeros: [heads, s.queryCount, s.keyCount])
            for h in 0..<heads {
                let g = h / group
                let ph = h * s.queryCount * s.keyCount
                Matmul.gemm(m: s.queryCount, n: s.keyCount, k: d, a: q, s.queryStart * qw + h * d, lda: qw,
                            b: k, s.keyStart * kw + g * d, ldb: kw, transB: true, c: p, ph, ldc: s.keyCount,
                            alpha: scale)
                softmaxRows(p, ph, rows: s.queryCount, cols: s.keyCount)
                Matmul.gemm(m: s.queryCount, n: d, k: s.keyCount, a: p, ph, lda: s.keyCount,
                            b: v, s.keyStart * kw + g * d, ldb: kw,
                            c: out, s.queryStart * qw + h * d, ldc: qw)
            }
            return p
        }
        return out
    }

    /// Masked row softmax in place (masked entries become 0).
    private func softmaxRows(_ t: Tensor, _ offset: Int, rows: Int, cols: Int) {
        let p = t.floats + offset
        for i in 0..<rows {
            let row = p + i * cols
            let visible = causal ? min(cols, cols - rows + i + 1) : cols
            var m = -Float.infinity
            for j in 0..<visible { m = max(m, row[j]) }
            var s: Float = 0
            for j in 0..<visible { let e = expf(row[j] - m); row[j] = e; s += e }
            let inv = 1 / s
            for j in 0..<visible { row[j] *= inv }
            for j in visible..<cols { row[j] = 0 }
        }
    }

    /// dO `[Rq, H·d]` → (dq, dk, dv).
    func backward(_ dOut: Tensor) -> (Tensor, Tensor, Tensor) {
        guard let q, let k, let v else { preconditionFailure("attention backward before forward") }
        let d = headDim, qw = heads * d, kw = kvHeads * d, group = heads / kvHeads
        let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        for (s, p) in zip(spans, probs) {
            let qn = s.queryCount, kn = s.keyCount
            let dp = Tensor(zeros: [qn, kn])
            for h in 0..<heads {
                let g = h / group
                let ph = h * qn * kn
                let dO = s.queryStart * qw + h * d
                let kvOff = s.keyStart * kw + g * d
                let qOff = s.queryStart * qw + h * d
                // dP = dO · vᵀ; dV += Pᵀ · dO.
                Matmul.gemm(m: qn, n: kn, k: d, a: dOut, dO, lda: qw, b: v, kvOff, ldb: kw, transB: true, c: dp, ldc: kn)
                Matmul.gemm(m: kn, n: d, k: qn, a: p, ph, lda: kn, transA: true, b: dOut, dO, ldb: qw,
                            c: dv, kvOff, ldc: kw, beta: 1)
                // dS = P ⊙ (dP − Σ_j dP ⊙ P), into dp.
                let pp = p.floats + ph, dpp = dp.floats
                for i in 0..<qn {
                    let pr = pp + i * kn, dr = dpp + i * kn
                    var dot: Float = 0
                    for j in 0..<kn { dot += pr[j] * dr[j] }
                    for j in 0..<kn { dr[j] = pr[j] * (dr[j] - dot) }
                }
                // dQ = scale · dS · k; dK += scale · dSᵀ · q.
                Matmul.gemm(m: qn, n: d, k: kn, a: dp, lda: kn, b: k, kvOff, ldb: kw, c: dq, qOff, ldc: qw, alpha: scale)
                Matmul.gemm(m: kn, n: d, k: qn, a: dp, lda: kn, transA: true, b: q, qOff, ldb: qw,
                            c: dk, kvOff, ldc: kw, alpha: scale, beta: 1)
            }
        }
        return (dq, dk, dv)
    }

    func release() { q = nil; k = nil; v = nil; probs = [] }
}

/// Rotary embedding on `[rows, heads, headDim]` in place, rotate-half layout as Hugging Face LLaMA
/// (inverse frequencies and angles in f32, as `Rope`); `inverse` rotates by −angle, which is the
/// backward (a rotation's transpose).
struct RopeOp {
    let rope: Rope

    init(headDim: Int, theta: Float) { rope = Rope(headDim: headDim, theta: theta) }

    func apply(_ x: Tensor, heads: Int, positions: [Int], inverse: Bool = false) {
        let d = rope.headDim, half = d / 2
        let xp = x.floats
        var cs = [Float](repeating: 0, count: 2 * half)
        for (r, pos) in positions.enumerated() {
            let p = Float(pos)
            for i in 0..<half {
                let a = p * rope.invFreq[i]
                cs[i] = cosf(a); cs[half + i] = inverse ? -sinf(a) : sinf(a)
            }
            for h in 0..<heads {
                let vp = xp + (r * heads + h) * d
                for i in 0..<half {
                    let a = vp[i], b = vp[i + half], c = cs[i], s = cs[half + i]
                    vp[i] = a * c - b * s
                    vp[i + half] = b * c + a * s
                }
            }
        }
    }
}
