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
        Linear.forward(x, rows: rows, weight: gate, into: gateBuf)
        Linear.forward(x, rows: rows, weight: up, into: upBuf)
        if activation == "silu" || activation == "swish" {
            Activations.siluMul(gateBuf, upBuf, count: n)
        } else {
            try Activations.apply(activation, gateBuf, count: n)
            for i in 0..<n { gateBuf[i] *= upBuf[i] }
        }
        Linear.forward(gateBuf, rows: rows, weight: down, into: out)
    }
}
