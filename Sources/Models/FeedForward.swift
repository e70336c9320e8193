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
        if rows == 0 { return }
        let n = rows * inner
        Linear.forwardAll(count: 2) { i in
            i == 0 ? Linear.Product(x, rows: rows, weight: gate, into: gateBuf) : Linear.Product(x, rows: rows, weight: up, into: upBuf)
        }
        try gated(gateBuf, upBuf, count: n)
        Linear.forward(gateBuf, rows: rows, weight: down, into: out)
    }

    /// `gate = act(gate) · up`, element-wise over `count` values.
    func gated(_ gateBuf: UnsafeMutablePointer<Float>, _ upBuf: UnsafeMutablePointer<Float>, count n: Int) throws {
        if activation == "silu" || activation == "swish" {
            Activations.siluMul(gateBuf, upBuf, count: n)
        } else {
            try Activations.apply(activation, gateBuf, count: n)
            for i in 0..<n { gateBuf[i] *= upBuf[i] }
        }
    }

    /// Several feed-forward blocks on their own rows at decode sizes (≤ `MatVec.maxRows` rows
    /// each), as one job for all gate and up products and one for all down products: the experts
    /// of one MoE layer in a step. `ffn(i)` gives block i, its input, row count and output;
    /// `gateBuf`/`upBuf` hold at least (Σ rows) · inner floats.
    static func forwardAll(count: Int, inner: Int, _ ffn: (Int) -> (FeedForward, UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>),
                           gateBuf: UnsafeMutablePointer<Float>, upBuf: UnsafeMutablePointer<Float>) throws {
        // Row offset of block i into the gate/up buffers.
        func offset(_ i: Int) -> Int { var o = 0; for j in 0..<i { o += ffn(j).2 }; return o * inner }
        Linear.forwardAll(count: 2 * count) { k in
            let (f, x, rows, _) = ffn(k / 2), at = offset(k / 2)
            return k % 2 == 0 ? Linear.Product(x, rows: rows, weight: f.gate, into: gateBuf + at)
                              : Linear.Product(x, rows: rows, weight: f.up, into: upBuf + at)
        }
        for i in 0..<count {
            let (f, _, rows, _) = ffn(i), at = offset(i)
            try f.gated(gateBuf + at, upBuf + at, count: rows * inner)
        }
        Linear.forwardAll(count: count) { i in
            let (f, _, rows, out) = ffn(i)
            return Linear.Product(gateBuf + offset(i), rows: rows, weight: f.down, into: out)
        }
    }
}
