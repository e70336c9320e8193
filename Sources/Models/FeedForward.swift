import Checkpoint
import Tensor

/// One SwiGLU feed-forward block, `down(act(gate(x)) · up(x))`: a dense LLaMA MLP or one expert.
/// The weights stay in their stored dtype (views into the mapped checkpoint).
public struct FeedForward: Sendable {
    public let gate: Tensor
    public let up: Tensor
    public let down: Tensor
    /// `hidden_act` of the config (`silu` for LLaMA-family models).
    public let activation: String

    public var hidden: Int { gate.shape[1] }
    public var inner: Int { gate.shape[0] }

    public init(gate: Tensor, up: Tensor, down: Tensor, activation: String) {
        self.gate = gate; self.up = up; self.down = down; self.activation = activation
    }

    /// Takes the three projections from a checkpoint, checking `[inner, hidden]` / `[hidden, inner]`.
    static func load(_ ckpt: Checkpoint, gate: String, up: String, down: String,
                     hidden: Int, inner: Int, activation: String) throws -> FeedForward {
        FeedForward(gate: try ckpt.take(gate, shape: [inner, hidden]),
                    up: try ckpt.take(up, shape: [inner, hidden]),
                    down: try ckpt.take(down, shape: [hidden, inner]),
                    activation: activation)
    }

    /// `out[rows, hidden] = FFN(x[rows, hidden])`; `gateBuf`/`upBuf` hold at least rows · inner floats.
    func forward(_ x: UnsafePointer<Float>, rows: Int, gateBuf: UnsafeMutablePointer<Float>,
                 upBuf: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) throws {
        try Self.forwardAll(count: 1, { _ in (self, x, rows) }, gateBuf: gateBuf, upBuf: upBuf, into: out)
    }

    /// `gate = act(gate) · up`, element-wise over `count` values.
    private func gated(_ gateBuf: UnsafeMutablePointer<Float>, _ upBuf: UnsafeMutablePointer<Float>, count n: Int) throws {
        if activation == "silu" || activation == "swish" {
            Activations.siluMul(gateBuf, upBuf, count: n)
        } else {
            try Activations.apply(activation, gateBuf, count: n)
            for i in 0..<n { gateBuf[i] *= upBuf[i] }
        }
    }

    /// Several feed-forward blocks (of one inner width), each on its own rows — the experts of one
    /// MoE layer in a step: `block(i)` gives block i, its input and row count; its output rows
    /// follow block i − 1's in `out`, as its gate/up rows do in `gateBuf`/`upBuf` (each at least
    /// Σ rows · inner floats). At decode sizes every gate and up product runs as one pool job and
    /// every down product as another (`Linear.forwardAll`); larger products one after another.
    static func forwardAll(count: Int, _ block: (Int) -> (FeedForward, UnsafePointer<Float>, Int),
                           gateBuf: UnsafeMutablePointer<Float>, upBuf: UnsafeMutablePointer<Float>,
                           into out: UnsafeMutablePointer<Float>) throws {
        if count == 0 { return }
        let inner = block(0).0.inner, hidden = block(0).0.hidden
        // First row of block i in the gate/up buffers and in `out`.
        func firstRow(_ i: Int) -> Int { var r = 0; for j in 0..<i { r += block(j).2 }; return r }
        Linear.forwardAll(count: 2 * count) { k in
            let (f, x, rows) = block(k / 2), at = firstRow(k / 2) * inner
            return k % 2 == 0 ? Linear.Product(x, rows: rows, weight: f.gate, into: gateBuf + at)
                              : Linear.Product(x, rows: rows, weight: f.up, into: upBuf + at)
        }
        for i in 0..<count {
            let (f, _, rows) = block(i), at = firstRow(i) * inner
            try f.gated(gateBuf + at, upBuf + at, count: rows * inner)
        }
        Linear.forwardAll(count: count) { i in
            let (f, _, rows) = block(i), r = firstRow(i)
            return Linear.Product(gateBuf + r * inner, rows: rows, weight: f.down, into: out + r * hidden)
        }
    }
}
