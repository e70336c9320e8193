import Tensor

/// A low-rank adapter on a linear layer: `y += scale · (x Aᵀ) Bᵀ`, A `[r, in]`, B `[out, r]`,
/// scale = alpha / r (PEFT's LoRA; dropout 0).
public struct LoRA: Sendable {
    public let a: Parameter
    public let b: Parameter
    public let scale: Float
    public var rank: Int { a.shape[0] }
}

/// A trainable `Linear` (`y = x Wᵀ + b`, W `[out, in]` as Hugging Face stores it), optionally with a
/// LoRA adapter. The forward keeps its input for the backward; the backward accumulates the
/// gradients of the trainable tensors and returns the input gradient.
final class LinearOp {
    let weight: Parameter
    let bias: Parameter?
    var lora: LoRA?
    private var input: Tensor?
    private var loraHidden: Tensor?   // x Aᵀ, [rows, r]

    var outFeatures: Int { weight.shape[0] }
    var inFeatures: Int { weight.shape[1] }

    init(weight: Parameter, bias: Parameter? = nil, lora: LoRA? = nil) {
        self.weight = weight
        self.bias = bias
        self.lora = lora
    }

    /// `x [rows, in]` → `[rows, out]`.
    func forward(_ x: Tensor) -> Tensor {
        let rows = x.rowCount, o = outFeatures
        precondition(x.lastDim == inFeatures, "linear \(weight.name): input width \(x.lastDim), expected \(inFeatures)")
        input = x
        let y = Tensor(zeros: [rows, o])
        Matmul.xWt(x, weight.value, into: y)
        if let bias {
            let b = bias.value
            for r in 0..<rows { Vec.addRow(y, r, b, 0, width: o) }
        }
        if let lora {
            let t = Tensor(zeros: [rows, lora.rank])
            Matmul.xWt(x, lora.a.value, into: t)
            Matmul.xWt(t, lora.b.value, into: y, alpha: lora.scale, beta: 1)
            loraHidden = t
        }
        return y
    }

    /// `dy [rows, out]` → `dx [rows, in]`, accumulating the trainable tensors' gradients.
    func backward(_ dy: Tensor) -> Tensor {
        guard let dx = gradients(dy, needInput: true) else { preconditionFailure("linear \(weight.name): no input gradient") }
        return dx
    }

    /// Only the parameter gradients (the input was a frozen encoder's output, say).
    func accumulateGradients(_ dy: Tensor) { _ = gradients(dy, needInput: false) }

    private func gradients(_ dy: Tensor, needInput: Bool) -> Tensor? {
        guard let x = input else { preconditionFailure("linear \(weight.name): backward before forward") }
        let rows = x.rowCount
        if weight.trainable { Matmul.accumulateDyTx(dy, x, into: weight.grad) }
        if let bias, bias.trainable { Vec.accumulateColumnSums(dy, into: bias.grad) }
        let dx: Tensor? = needInput ? Tensor(zeros: [rows, inFeatures]) : nil
        if let dx { Matmul.dyW(dy, weight.value, into: dx) }
        if let lora, let t = loraHidden {
            // u = dy · B  [rows, r]; dB += s · dyᵀ t; dA += s · uᵀ x; dx += s · u · A.
            let u = Tensor(zeros: [rows, lora.rank])
            Matmul.dyW(dy, lora.b.value, into: u)
            if lora.b.trainable { Matmul.accumulateDyTx(dy, t, into: lora.b.grad, alpha: lora.scale) }
            if lora.a.trainable { Matmul.accumulateDyTx(u, x, into: lora.a.grad, alpha: lora.scale) }
            if let dx { Matmul.dyW(u, lora.a.value, into: dx, alpha: lora.scale, beta: 1) }
        }
        return dx
    }

    /// Drops the saved activations (after the backward, so a long run does not keep them).
    func release() { input = nil; loraHidden = nil }
}
