import Tensor

/// A trainable SwiGLU MLP, `down(silu(gate(x)) ⊙ up(x))`: a dense LLaMA MLP or one expert.
final class FeedForwardOp {
    let gate: LinearOp
    let up: LinearOp
    let down: LinearOp
    private let act = SwiGLUOp()

    init(gate: LinearOp, up: LinearOp, down: LinearOp) {
        self.gate = gate; self.up = up; self.down = down
    }

    var linears: [LinearOp] { [gate, up, down] }

    func forward(_ x: Tensor) -> Tensor {
        down.forward(act.forward(gate: gate.forward(x), up: up.forward(x)))
    }

    func backward(_ dy: Tensor) -> Tensor {
        let (dg, du) = act.backward(down.backward(dy))
        let dx = gate.backward(dg)
        Vec.add(dx, up.backward(du))
        return dx
    }

    func release() { gate.release(); up.release(); down.release(); act.release() }
}
