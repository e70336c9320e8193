import Foundation
import Tensor

/// Rows routed to one expert of one MoE layer in a training step (in row order).
public struct ExpertRows: Sendable {
    public let expert: Int
    public let rows: Tensor
}

/// Where the experts of a model under training live: in this process (`LocalExpertBackend`) or in
/// expert worker processes. A step calls `forward` once per MoE layer on the way up and `backward`
/// once per layer on the way down, each with every expert's rows of that layer; the owner of an
/// expert keeps what its backward needs and accumulates its gradients.
public protocol ExpertBackend: AnyObject {
    func forward(layer: Int, batches: [ExpertRows]) throws -> [Tensor]
    /// Output gradients per batch (same order as the forward) → input gradients.
    func backward(layer: Int, outputGrads: [ExpertRows]) throws -> [Tensor]
}

/// The experts held in this process (the trunk and the experts in one place).
final class LocalExpertBackend: ExpertBackend {
    /// experts[layer] = that layer's experts (empty for dense layers).
    let experts: [Int: [FeedForwardOp]]

    init(experts: [Int: [FeedForwardOp]]) { self.experts = experts }

    func forward(layer: Int, batches: [ExpertRows]) throws -> [Tensor] {
        guard let ffns = experts[layer] else { throw TrainingError.remote("layer \(layer) has no local experts") }
        return batches.map { ffns[$0.expert].forward($0.rows) }
    }

    func backward(layer: Int, outputGrads: [ExpertRows]) throws -> [Tensor] {
        guard let ffns = experts[layer] else { throw TrainingError.remote("layer \(layer) has no local experts") }
        return outputGrads.map { ffns[$0.expert].backward($0.rows) }
    }

    func release() { for (_, l) in experts { for f in l { f.release() } } }
}

/// A sparse MoE layer under training: router `Linear(hidden → E)`, top-k of the raw logits, softmax
/// over the k chosen, weighted sum of the experts. The router's gradient flows through the chosen
/// logits (d l_j = w_j (g_j − Σ_k w_k g_k), g_j = dOut · y_j) plus, from the auxiliary
/// load-balancing loss, through the softmax over all logits (`addAuxiliaryGradient`).
/// `forcedExpert` sends every row to one expert with weight 1 (stage 2: modality experts).
final class MoEOp {
    let layer: Int
    let router: LinearOp
    let experts: Int
    let k: Int
    var forcedExpert: Int?
    private(set) var logits: Tensor?        // [rows, E]
    private(set) var chosen: [Int] = []     // [rows, k]
    private var weights: [Float] = []       // [rows, k]
    private var batches: [ExpertRows] = []
    private var slotRow: [[Int]] = []       // per batch: row of each slot
    private var slotChoice: [[Int]] = []    // per batch: j (0..<k) of each slot
    private var outputs: [Tensor] = []
    private var auxGrad: Tensor?            // dLoss/dlogits from the auxiliary loss
    private var hidden = 0

    init(layer: Int, router: LinearOp, experts: Int, k: Int) {
        self.layer = layer; self.router = router; self.experts = experts; self.k = k
    }

    func forward(_ h: Tensor, backend: ExpertBackend) throws -> Tensor {
        let rows = h.rowCount
        hidden = h.lastDim
        auxGrad = nil
        let kk: Int
        if let e = forcedExpert {
            kk = 1
            chosen = [Int](repeating: e, count: rows)
            weights = [Float](repeating: 1, count: rows)
            logits = nil
        } else {
            kk = k
            let l = router.forward(h)
            logits = l
            chosen = [Int](repeating: 0, count: rows * k)
            weights = [Float](repeating: 0, count: rows * k)
            for r in 0..<rows {
                let row = l.floats + r * experts
                let top = Gather.topK(row, count: experts, k: k)
                var m = -Float.infinity
                for e in top { m = max(m, row[e]) }
                var s: Float = 0
                var w = [Float](repeating: 0, count: k)
                for (j, e) in top.enumerated() { w[j] = expf(row[e] - m); s += w[j] }
                for j in 0..<k { chosen[r * k + j] = top[j]; weights[r * k + j] = w[j] / s }
            }
        }
        // Group rows by expert (ascending), each group in row order.
        batches = []; slotRow = []; slotChoice = []
        for e in 0..<experts {
            var rowsOf: [Int] = [], choiceOf: [Int] = []
            for r in 0..<rows { for j in 0..<kk where chosen[r * kk + j] == e { rowsOf.append(r); choiceOf.append(j) } }
            if rowsOf.isEmpty { continue }
            let x = Tensor(zeros: [rowsOf.count, hidden])
            for (s, r) in rowsOf.enumerated() { Vec.copyRow(x, s, from: h, r, width: hidden) }
            batches.append(ExpertRows(expert: e, rows: x))
            slotRow.append(rowsOf); slotChoice.append(choiceOf)
        }
        outputs = try backend.forward(layer: layer, batches: batches)
        guard outputs.count == batches.count else { throw TrainingError.remote("layer \(layer): \(batches.count) expert batches sent, \(outputs.count) returned") }
        let out = Tensor(zeros: [rows, hidden])
        for (b, y) in outputs.enumerated() {
            guard y.shape == [slotRow[b].count, hidden] else { throw TrainingError.remote("layer \(layer): expert output shape \(y.shape)") }
            for (s, r) in slotRow[b].enumerated() {
                Vec.addRow(out, r, y, s, width: hidden, scale: weights[r * kk + slotChoice[b][s]])
            }
        }
        return out
    }

    /// Adds the auxiliary loss's gradient with respect to this layer's router logits.
    func addAuxiliaryGradient(_ g: Tensor) {
        if let a = auxGrad { Vec.add(a, g) } else { auxGrad = g }
    }

    func backward(_ dOut: Tensor, backend: ExpertBackend) throws -> Tensor {
        let rows = dOut.rowCount
        let kk = forcedExpert == nil ? k : 1
        var dw = [Float](repeating: 0, count: rows * kk)
        var grads: [ExpertRows] = []
        for (b, batch) in batches.enumerated() {
            let y = outputs[b]
            let g = Tensor(zeros: [slotRow[b].count, hidden])
            for (s, r) in slotRow[b].enumerated() {
                let j = slotChoice[b][s], w = weights[r * kk + j]
                let src = dOut.floats + r * hidden, dst = g.floats + s * hidden, ys = y.floats + s * hidden
                var dot: Float = 0
                for c in 0..<hidden { dst[c] = w * src[c]; dot += src[c] * ys[c] }
                dw[r * kk + j] = dot
            }
            grads.append(ExpertRows(expert: batch.expert, rows: g))
        }
        let inputGrads = try backend.backward(layer: layer, outputGrads: grads)
        guard inputGrads.count == grads.count else { throw TrainingError.remote("layer \(layer): \(grads.count) gradient batches sent, \(inputGrads.count) returned") }
        let dh = Tensor(zeros: [rows, hidden])
        for (b, dx) in inputGrads.enumerated() {
            guard dx.shape == [slotRow[b].count, hidden] else { throw TrainingError.remote("layer \(layer): expert input-gradient shape \(dx.shape)") }
            for (s, r) in slotRow[b].enumerated() { Vec.addRow(dh, r, dx, s, width: hidden) }
        }
        guard forcedExpert == nil else { return dh }
        // Router: gradient of the chosen logits through the top-k softmax, plus the auxiliary part.
        let dl = auxGrad ?? Tensor(zeros: [rows, experts])
        for r in 0..<rows {
            var mean: Float = 0
            for j in 0..<k { mean += weights[r * k + j] * dw[r * k + j] }
            for j in 0..<k {
                let w = weights[r * k + j]
                dl.floats[r * experts + chosen[r * k + j]] += w * (dw[r * k + j] - mean)
            }
        }
        Vec.add(dh, router.backward(dl))
        return dh
    }

    /// The chosen experts of every row, `[rows, k]` (for the auxiliary loss and routing statistics).
    var choices: [Int] { chosen }

    func release() { router.release(); batches = []; outputs = []; auxGrad = nil; logits = nil }
}
