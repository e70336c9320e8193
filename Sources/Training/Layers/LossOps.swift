import Foundation
import Tensor

/// Token-level cross-entropy over the rows that have a target (labels ≠ -100 after the shift),
/// summed; the caller divides by the number of target tokens of the whole (accumulated) batch, so
/// gradient accumulation equals one large batch.
enum CrossEntropy {
    /// logits `[n, V]`, targets `[n]` → (summed loss, dLogits = (softmax − onehot) · gradScale).
    static func lossAndGradient(logits: Tensor, targets: [Int], gradScale: Float) -> (Double, Tensor) {
        let n = logits.rowCount, v = logits.lastDim
        let grad = Tensor(zeros: [n, v])
        var total = 0.0
        for r in 0..<n {
            let row = logits.floats + r * v, g = grad.floats + r * v
            var m = -Float.infinity
            for c in 0..<v { m = max(m, row[c]) }
            var s: Double = 0
            for c in 0..<v { let e = exp(Double(row[c] - m)); g[c] = Float(e); s += e }
            total += log(s) - Double(row[targets[r]] - m)
            let inv = Float(1 / s)
            for c in 0..<v { g[c] *= inv * gradScale }
            g[targets[r]] -= gradScale
        }
        return (total, grad)
    }
}

/// The auxiliary load-balancing loss as transformers' Mixtral `load_balancing_loss_func`: router
/// logits of every MoE layer concatenated (`[N, E]`, N = layers × tokens), p = softmax over all E,
/// f[k][e] = fraction of rows whose k-th choice is e, P[e] = mean of p[:, e];
/// `aux = E · Σ_k Σ_e f[k][e] · P[e]`. Only P carries gradient: ∂aux/∂p[n, e] = E · Σ_k f[k][e] / N.
enum LoadBalancingLoss {
    /// logits per layer `[rows, E]` with their top-k choices `[rows, k]` → (aux, dAux/dlogits per layer).
    static func lossAndGradient(logits: [Tensor], choices: [[Int]], experts: Int, k: Int, gradScale: Float) -> (Double, [Tensor]) {
        let total = logits.reduce(0) { $0 + $1.rowCount }
        guard total > 0 else { return (0, logits.map { Tensor(zeros: $0.shape) }) }
        var fraction = [Double](repeating: 0, count: k * experts)
        var meanProb = [Double](repeating: 0, count: experts)
        var probs: [[Float]] = []
        for (l, c) in zip(logits, choices) {
            let rows = l.rowCount
            var p = [Float](repeating: 0, count: rows * experts)
            for r in 0..<rows {
                let row = l.floats + r * experts
                var m = -Float.infinity
                for e in 0..<experts { m = max(m, row[e]) }
                var s: Float = 0
                for e in 0..<experts { p[r * experts + e] = expf(row[e] - m); s += p[r * experts + e] }
                for e in 0..<experts { p[r * experts + e] /= s; meanProb[e] += Double(p[r * experts + e]) }
                for j in 0..<k { fraction[j * experts + c[r * k + j]] += 1 }
            }
            probs.append(p)
        }
        let n = Double(total)
        for i in 0..<fraction.count { fraction[i] /= n }
        for e in 0..<experts { meanProb[e] /= n }
        var aux = 0.0
        var dP = [Float](repeating: 0, count: experts)
        for e in 0..<experts {
            var f = 0.0
            for j in 0..<k { f += fraction[j * experts + e] }
            aux += f * meanProb[e]
            dP[e] = Float(Double(experts) * f / n) * gradScale
        }
        aux *= Double(experts)
        let grads = zip(logits, probs).map { (l, p) -> Tensor in
            let rows = l.rowCount
            let g = Tensor(zeros: [rows, experts])
            for r in 0..<rows {
                var dot: Float = 0
                for e in 0..<experts { dot += p[r * experts + e] * dP[e] }
                for e in 0..<experts { g.floats[r * experts + e] = p[r * experts + e] * (dP[e] - dot) }
            }
            return g
        }
        return (aux, grads)
    }
}
