import Foundation
import Tensor

/// How a sparse layer's router picks experts. Default: the k largest router logits, weights the
/// softmax over those k only (Uni-MoE v1; identical to Mixtral's softmax → top-k → renormalise).
/// `noisySecondChoice` is the 8-expert v2 rule (top-2 only): softmax over all experts in f32, first
/// expert by argmax, second by argmax of logits + Gumbel noise (first excluded), the two
/// probabilities renormalised to sum 1. The noise comes from a `Xoshiro256` seeded with `seed`.
public struct RoutingOptions: Sendable, Equatable {
    public var noisySecondChoice: Bool
    public var seed: UInt64

    public init(noisySecondChoice: Bool = false, seed: UInt64 = 0) {
        self.noisySecondChoice = noisySecondChoice
        self.seed = seed
    }
}

/// How an architecture turns router logits into choices and weights (without noise).
public enum RoutingRule: Sendable, Equatable {
    /// The k largest logits, weights the softmax over those k only (Uni-MoE, Mixtral).
    case softmaxOverChosen
    /// Qwen2-MoE: softmax over all experts in f32, the k largest probabilities (ties: lower index
    /// first), weights those probabilities, renormalised to sum 1 only when `renormalize`
    /// (`norm_topk_prob`).
    case softmaxOverAll(renormalize: Bool)
}

/// The routing rule on raw router logits, separated from the layer so it can be tested alone.
public enum Router {
    /// For each of `rows` rows of `logits` `[rows, experts]`, writes k expert indices (ties like
    /// torch.topk: lower index first) and their weights into `indices`/`weights` `[rows, k]`.
    /// `noise` non-nil selects the noisy second choice (k must be 2).
    public static func route(_ logits: UnsafePointer<Float>, rows: Int, experts: Int, k: Int,
                             rule: RoutingRule = .softmaxOverChosen,
                             noise: UnsafeMutablePointer<Xoshiro256>?,
                             indices: UnsafeMutablePointer<Int>, weights: UnsafeMutablePointer<Float>) {
        if case .softmaxOverAll(let renormalize) = rule, noise == nil {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: experts) { pB in
                let p = pB.baseAddress!
                for r in 0..<rows {
                    let l = logits + r * experts, idx = indices + r * k, w = weights + r * k
                    var m = -Float.infinity
                    for e in 0..<experts { m = max(m, l[e]) }
                    var s: Float = 0
                    for e in 0..<experts { let v = expf(l[e] - m); p[e] = v; s += v }
                    for e in 0..<experts { p[e] /= s }
                    let chosen = Gather.topK(p, count: experts, k: k, into: idx)
                    var t: Float = 0
                    for j in 0..<chosen { w[j] = p[idx[j]]; t += w[j] }
                    if renormalize { for j in 0..<chosen { w[j] /= t } }
                }
            }
            return
        }
        for r in 0..<rows {
            let l = logits + r * experts, idx = indices + r * k, w = weights + r * k
            if let noise, k == 2 {
                // Softmax over all experts (f32, as the reference), argmax, then noisy argmax.
                var m = -Float.infinity
                for e in 0..<experts { m = max(m, l[e]) }
                var s: Float = 0
                for e in 0..<experts { s += expf(l[e] - m) }
                let first = Sampler.argmax(l, count: experts)
                var second = -1
                var best = -Double.infinity
                for e in 0..<experts {
                    let u = noise.pointee.nextOpenUnit()
                    let g = Double(l[e]) - log(-log(u))
                    if e != first && g > best { best = g; second = e }
                }
                if second < 0 { second = first == 0 ? 1 : 0 }
                let p1 = expf(l[first] - m) / s, p2 = expf(l[second] - m) / s
                let denom = max(p1 + p2, Float.ulpOfOne)
                idx[0] = first; idx[1] = second
                w[0] = p1 / denom; w[1] = p2 / denom
                continue
            }
            let chosen = Gather.topK(l, count: experts, k: k, into: idx)
            var m = -Float.infinity
            for j in 0..<chosen { m = max(m, l[idx[j]]) }
            var s: Float = 0
            for j in 0..<chosen { let v = expf(l[idx[j]] - m); w[j] = v; s += v }
            for j in 0..<chosen { w[j] /= s }
        }
    }
}

/// A sparse MoE layer of the trunk: the router, plus the bookkeeping that groups the step's rows by
/// expert, hands them to an `ExpertRunner` in one call, and combines the outputs with the weights.
struct SparseLayer {
    let layer: Int
    let router: Tensor      // [experts, hidden], stored dtype
    let experts: Int
    let k: Int
    var rule: RoutingRule = .softmaxOverChosen
    /// Qwen2-MoE's shared expert and its gate `[1, hidden]`: computed here, with the trunk, for
    /// every row; never sent to the runner.
    var shared: FeedForward? = nil
    var sharedGate: Tensor? = nil

    /// `out[rows, hidden] = Σ_j w_j · expert_j(h)` for the rows of `h`.
    func forward(_ h: UnsafePointer<Float>, rows: Int, hidden: Int, runner: ExpertRunner, ws: Workspace,
                 noise: UnsafeMutablePointer<Xoshiro256>?, stats: (RoutingStats, [String])? = nil,
                 into out: UnsafeMutablePointer<Float>) throws {
        let logits = ws.router.ensure(rows * experts)
        Linear.forward(h, rows: rows, weight: router, into: logits)
        ws.ensureRouting(rows * k)
        try ws.choice.withUnsafeMutableBufferPointer { idxB in
            try ws.weight.withUnsafeMutableBufferPointer { wB in
                let idx = idxB.baseAddress!, w = wB.baseAddress!
                Router.route(logits, rows: rows, experts: experts, k: k, rule: rule, noise: noise, indices: idx, weights: w)
                if let (s, kinds) = stats, kinds.count == rows { s.record(layer: layer, experts: experts, k: k, kinds: kinds, indices: idx) }
                // Group rows by expert (ascending), each group in row order: slot s ↔ (row, weight).
                let gathered = ws.gathered.ensure(rows * k * hidden)
                ws.batches.removeAll(keepingCapacity: true)
                var slots = 0
                ws.slotRow.removeAll(keepingCapacity: true)
                ws.slotWeight.removeAll(keepingCapacity: true)
                for e in 0..<experts {
                    let start = slots
                    for r in 0..<rows {
                        for j in 0..<k where idx[r * k + j] == e {
                            (gathered + slots * hidden).update(from: h + r * hidden, count: hidden)
                            ws.slotRow.append(r)
                            ws.slotWeight.append(w[r * k + j])
                            slots += 1
                        }
                    }
                    if slots > start { ws.batches.append(ExpertBatch(expert: e, rows: ws.gathered.rows(start..<slots, cols: hidden))) }
                }
                // Outputs land in slot order (batch after batch), in the workspace.
                let expertOut = ws.expertOut.ensure(slots * hidden)
                try runner.run(layer: layer, batches: ws.batches, into: expertOut)
                for i in 0..<(rows * hidden) { out[i] = 0 }
                for s in 0..<slots {
                    let dst = out + ws.slotRow[s] * hidden, src = expertOut + s * hidden, wj = ws.slotWeight[s]
                    for c in 0..<hidden { dst[c] += src[c] * wj }
                }
            }
        }
        if let shared, let sharedGate {
            // out += sigmoid(shared_expert_gate(h)) · shared_expert(h), as transformers adds it.
            let inner = shared.inner
            let so = ws.shared.ensure(rows * hidden), g = ws.sharedGate.ensure(rows)
            try shared.forward(h, rows: rows, gateBuf: ws.gate.ensure(rows * inner), upBuf: ws.up.ensure(rows * inner), into: so)
            Linear.forward(h, rows: rows, weight: sharedGate, into: g)
            for r in 0..<rows {
                let sig = 1 / (1 + expf(-g[r]))
                let dst = out + r * hidden, src = so + r * hidden
                for c in 0..<hidden { dst[c] += sig * src[c] }
            }
        }
    }
}
