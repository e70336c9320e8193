import Foundation
import Tensor

/// LLaMA's RMSNorm, `y = w ⊙ x / sqrt(mean(x²) + eps)`, with its backward.
final class RMSNormOp {
    let weight: Parameter
    let eps: Float
    private var input: Tensor?
    private var rstd: [Float] = []

    init(weight: Parameter, eps: Float) { self.weight = weight; self.eps = eps }

    func forward(_ x: Tensor) -> Tensor {
        let rows = x.rowCount, d = x.lastDim
        input = x
        rstd = [Float](repeating: 0, count: rows)
        let y = Tensor(zeros: [rows, d])
        let xp = x.floats, yp = y.floats, w = weight.floats
        for r in 0..<rows {
            let row = xp + r * d
            var ss: Float = 0
            for c in 0..<d { ss += row[c] * row[c] }
            let s = 1 / (ss / Float(d) + eps).squareRoot()
            rstd[r] = s
            for c in 0..<d { yp[r * d + c] = w[c] * (row[c] * s) }
        }
        return y
    }

    func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("rmsnorm backward before forward") }
        let rows = x.rowCount, d = x.lastDim
        let dx = Tensor(zeros: [rows, d])
        let xp = x.floats, dyp = dy.floats, dxp = dx.floats, w = weight.floats
        let dw: UnsafeMutablePointer<Float>? = weight.trainable ? weight.grad.floats : nil
        for r in 0..<rows {
            let row = xp + r * d, g = dyp + r * d, s = rstd[r]
            var dot: Float = 0
            for c in 0..<d {
                let xh = row[c] * s
                dot += g[c] * w[c] * xh
                dw?[c] += g[c] * xh
            }
            let mean = dot / Float(d)
            for c in 0..<d { dxp[r * d + c] = s * (g[c] * w[c] - row[c] * s * mean) }
        }
        return dx
    }

    func release() { input = nil }
}

/// LayerNorm with weight and bias (Whisper's connector), `y = w ⊙ (x − μ)/σ + b`, with its backward.
final class LayerNormOp {
    let weight: Parameter
    let bias: Parameter
    let eps: Float
    private var input: Tensor?
    private var mean: [Float] = []
    private var rstd: [Float] = []

    init(weight: Parameter, bias: Parameter, eps: Float) { self.weight = weight; self.bias = bias; self.eps = eps }

    func forward(_ x: Tensor) -> Tensor {
        let rows = x.rowCount, d = x.lastDim
        input = x
        mean = [Float](repeating: 0, count: rows)
        rstd = [Float](repeating: 0, count: rows)
        let y = Tensor(zeros: [rows, d])
        let xp = x.floats, yp = y.floats, w = weight.floats, b = bias.floats
        for r in 0..<rows {
            let row = xp + r * d
            var m: Float = 0
            for c in 0..<d { m += row[c] }
            m /= Float(d)
            var v: Float = 0
            for c in 0..<d { let t = row[c] - m; v += t * t }
            let s = 1 / (v / Float(d) + eps).squareRoot()
            mean[r] = m; rstd[r] = s
            for c in 0..<d { yp[r * d + c] = (row[c] - m) * s * w[c] + b[c] }
        }
        return y
    }

    func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("layernorm backward before forward") }
        let rows = x.rowCount, d = x.lastDim
        let dx = Tensor(zeros: [rows, d])
        let xp = x.floats, dyp = dy.floats, dxp = dx.floats, w = weight.floats
        let dw: UnsafeMutablePointer<Float>? = weight.trainable ? weight.grad.floats : nil
        let db: UnsafeMutablePointer<Float>? = bias.trainable ? bias.grad.floats : nil
        for r in 0..<rows {
            let row = xp + r * d, g = dyp + r * d, m = mean[r], s = rstd[r]
            var sumG: Float = 0, sumGX: Float = 0
            for c in 0..<d {
                let xh = (row[c] - m) * s
                let gh = g[c] * w[c]
                sumG += gh; sumGX += gh * xh
                dw?[c] += g[c] * xh
                db?[c] += g[c]
            }
            let mg = sumG / Float(d), mgx = sumGX / Float(d)
            for c in 0..<d {
                let xh = (row[c] - m) * s
                dxp[r * d + c] = s * (g[c] * w[c] - mg - xh * mgx)
            }
        }
        return dx
    }

    func release() { input = nil }
}
