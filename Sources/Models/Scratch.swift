import Tensor

/// A growable f32 buffer the trunk reuses from step to step: it grows (allocates) only when a step
/// needs more than any step before, so steady-state decoding allocates nothing here. Backed by a
/// `Tensor` so row ranges can be handed out as tensor views (the rows routed to one expert).
final class ScratchBuffer {
    private(set) var tensor = Tensor(zeros: [16])
    /// Views handed out by `rows`, kept while the storage lasts: a view's shape is a heap array,
    /// and decode asks for the same few ranges (the rows of each expert) every step.
    private var views: [ViewKey: Tensor] = [:]

    private struct ViewKey: Hashable { let start: Int, count: Int, cols: Int }

    /// At least `count` floats; contents are not preserved across growth.
    @discardableResult
    func ensure(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > tensor.count {
            tensor = Tensor(zeros: [max(count, tensor.count + tensor.count / 2)])
            views.removeAll()
        }
        return tensor.floats
    }

    var pointer: UnsafeMutablePointer<Float> { tensor.floats }

    /// Rows `range` of the buffer seen as `[*, cols]`, as a tensor view sharing the storage.
    func rows(_ range: Range<Int>, cols: Int) -> Tensor {
        let key = ViewKey(start: range.lowerBound, count: range.count, cols: cols)
        if let v = views[key] { return v }
        let v = Tensor(storage: tensor.storage, shape: [range.count, cols], dtype: .f32,
                       byteOffset: tensor.byteOffset + range.lowerBound * cols * 4)
        if views.count >= 256 { views.removeAll(keepingCapacity: true) }  // many batch shapes: start over
        views[key] = v
        return v
    }
}

/// Adds `src` into `dst` element-wise (the residual connections).
@inline(__always)
func addInPlace(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { dst[i] += src[i] }
}

/// Every buffer one trunk step needs, grown to the largest step seen and reused afterwards.
final class Workspace {
    let x = ScratchBuffer()          // residual stream [rows, hidden]
    let h = ScratchBuffer()          // normalised input of a sub-layer [rows, hidden]
    let proj = ScratchBuffer()       // sub-layer output [rows, hidden]
    let q = ScratchBuffer(), k = ScratchBuffer(), v = ScratchBuffer()
    let attn = ScratchBuffer()       // attention output before o_proj [rows, heads · headDim]
    let scores = ScratchBuffer()     // one item's attention scores [queries, keys]
    let gate = ScratchBuffer(), up = ScratchBuffer()   // dense MLP [rows, inner]
    let router = ScratchBuffer()     // router logits [rows, experts]
    let gathered = ScratchBuffer()   // rows grouped by expert [rows · k, hidden]
    let expertOut = ScratchBuffer()  // the experts' outputs, same layout as `gathered`
    var batches: [ExpertBatch] = []  // one MoE layer's batches, storage reused step to step
    let shared = ScratchBuffer()     // shared expert output [rows, hidden] (qwen2_moe)
    let sharedGate = ScratchBuffer() // shared expert gate logits [rows]
    var positions: [Int] = []
    var spans: [SelfAttention.Span] = []   // one step's sequences, storage reused step to step
    var choice: [Int] = []
    var weight: [Float] = []
    var slotRow: [Int] = []
    var slotWeight: [Float] = []

    func ensureRouting(_ n: Int) {
        if choice.count < n {
            choice = [Int](repeating: 0, count: n)
            weight = [Float](repeating: 0, count: n)
            slotRow.reserveCapacity(n)
            slotWeight.reserveCapacity(n)
        }
    }

    func ensurePositions(_ n: Int) {
        if positions.count < n { positions = [Int](repeating: 0, count: max(n, positions.count + positions.count / 2)) }
    }
}
