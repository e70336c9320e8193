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

    func backward(_ dy: Tensor, needInput: Bool = true) -> Tensor? {
        guard let dh = down.backward(dy) else { return nil }
        let (dg, du) = act.backward(dh)
        let dxg = gate.backward(dg, needInput: needInput)
        let dxu = up.backward(du, needInput: needInput)
        if let dxg, let dxu { Vec.add(dxg, dxu); return dxg }
        return nil
    }

    func release() { gate.release(); up.release(); down.release(); act.release() }
}
