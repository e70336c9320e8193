import Foundation
import Tensor

/// SwiGLU's gate: `h = silu(g) ⊙ u` over `[rows, inner]`, keeping g and u for the backward.
final class SwiGLUOp {
    private var gate: Tensor?
    private var up: Tensor?

    func forward(gate g: Tensor, up u: Tensor) -> Tensor {
        gate = g; up = u
        let n = g.count
        let h = Tensor(zeros: g.shape)
        let gp = g.floats, up = u.floats, hp = h.floats
        for i in 0..<n {
            let x = gp[i]
            hp[i] = x / (1 + expf(-x)) * up[i]
        }
        return h
    }

    /// → (dGate, dUp).
    func backward(_ dh: Tensor) -> (Tensor, Tensor) {
        guard let g = gate, let u = up else { preconditionFailure("swiglu backward before forward") }
        let n = g.count
        let dg = Tensor(zeros: g.shape), du = Tensor(zeros: g.shape)
        let gp = g.floats, upp = u.floats, d = dh.floats, dgp = dg.floats, dup = du.floats
        for i in 0..<n {
            let x = gp[i]
            let sig = 1 / (1 + expf(-x))
            let silu = x * sig
            dup[i] = d[i] * silu
            dgp[i] = d[i] * upp[i] * sig * (1 + x * (1 - sig))
        }
        return (dg, du)
    }

    func release() { gate = nil; up = nil }
}

/// GELU with its backward: exact (erf), as `nn.GELU()` and Whisper's `gelu`, or CLIP's QuickGELU
/// `x · σ(1.702 x)`.
final class GELUOp {
    let quick: Bool
    private var input: Tensor?

    init(quick: Bool = false) { self.quick = quick }

    func forward(_ x: Tensor) -> Tensor {
        input = x
        let y = Tensor(zeros: x.shape)
        let xp = x.floats, yp = y.floats
        for i in 0..<x.count {
            if quick { let v = xp[i]; yp[i] = v / (1 + expf(-1.702 * v)); continue }
            let v = Double(xp[i])
            yp[i] = Float(0.5 * v * (1 + erf(v / 2.0.squareRoot())))
        }
        return y
    }

    func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("gelu backward before forward") }
        let dx = Tensor(zeros: x.shape)
        let xp = x.floats, g = dy.floats, dxp = dx.floats
        let invSqrt2Pi = 1 / (2 * Double.pi).squareRoot()
        for i in 0..<x.count {
            if quick {
                let v = xp[i], s = 1 / (1 + expf(-1.702 * v))
                dxp[i] = g[i] * (s + 1.702 * v * s * (1 - s))
                continue
            }
            let v = Double(xp[i])
            let cdf = 0.5 * (1 + erf(v / 2.0.squareRoot()))
            let pdf = exp(-0.5 * v * v) * invSqrt2Pi
            dxp[i] = g[i] * Float(cdf + v * pdf)
        }
        return dx
    }

    func release() { input = nil }
}
