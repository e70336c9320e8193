import Foundation
import Tensor

/// AdamW exactly as `torch.optim.AdamW` (decoupled weight decay `p ← p·(1 − lr·wd)`, then
/// `p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + ε)`), with the moment buffers it keeps per
/// parameter, plus global-norm gradient clipping as `clip_grad_norm_`. Weight decay skips the
/// parameters whose `decays` is false (biases and norm weights, as the HF Trainer groups them).
public final class AdamW {
    public struct Settings: Sendable, Equatable {
        public var beta1: Double = 0.9
        public var beta2: Double = 0.999
        public var eps: Double = 1e-8
        public var weightDecay: Double = 0
        public init(beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 0) {
            self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        }
    }

    public let settings: Settings
    /// Optimizer steps taken so far.
    public internal(set) var step = 0
    /// Moments by parameter name: (m, v).
    var moments: [String: (Tensor, Tensor)] = [:]

    public init(settings: Settings) { self.settings = settings }

    /// Global L2 norm of the gradients of `params`; when above `maxNorm` (> 0) they are scaled by
    /// `maxNorm / (norm + 1e-6)` as torch does. Returns the norm before clipping.
    @discardableResult
    public static func clipGradients(_ params: [Parameter], maxNorm: Double) -> Double {
        let norm = gradientSquares(params).squareRoot()
        scaleGradients(params, by: clipCoefficient(norm: norm, maxNorm: maxNorm))
        return norm
    }

    /// Σ g² over the gradients of `params` (per tensor in f32, summed in f64): the part of the global
    /// norm one process holds (expert workers report theirs to the trunk).
    public static func gradientSquares(_ params: [Parameter]) -> Double {
        var sq = 0.0
        for p in params {
            let g = p.grad.floats
            var s: Float = 0
            for i in 0..<p.count { s += g[i] * g[i] }
            sq += Double(s)
        }
        return sq
    }

    /// torch's `clip_grad_norm_` factor: min(1, maxNorm / (norm + 1e-6)); 1 when clipping is off.
    public static func clipCoefficient(norm: Double, maxNorm: Double) -> Float {
        maxNorm > 0 ? Float(min(maxNorm / (norm + 1e-6), 1)) : 1
    }

    public static func scaleGradients(_ params: [Parameter], by coef: Float) {
        guard coef < 1 else { return }
        for p in params { let g = p.grad.floats; for i in 0..<p.count { g[i] *= coef } }
    }

    /// One update of every parameter in `params` with learning rate `lr`.
    public func update(_ params: [Parameter], lr: Double) {
        step += 1
        let s = settings
        let bc1 = 1 - pow(s.beta1, Double(step)), bc2 = 1 - pow(s.beta2, Double(step))
        let stepSize = Float(lr / bc1), bc2Sqrt = Float(bc2.squareRoot())
        let b1 = Float(s.beta1), b2 = Float(s.beta2), eps = Float(s.eps)
        for p in params {
            let (m, v) = moments[p.name] ?? { let pair = (Tensor(zeros: p.shape), Tensor(zeros: p.shape)); moments[p.name] = pair; return pair }()
            let x = p.floats, g = p.grad.floats, mp = m.floats, vp = v.floats
            let decay = p.decays ? Float(1 - lr * s.weightDecay) : 1
            for i in 0..<p.count {
                if decay != 1 { x[i] *= decay }
                mp[i] += (g[i] - mp[i]) * (1 - b1)
                vp[i] = vp[i] * b2 + (1 - b2) * g[i] * g[i]
                let denom = vp[i].squareRoot() / bc2Sqrt + eps
                x[i] -= stepSize * (mp[i] / denom)
            }
        }
    }

    /// The moment buffers as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    public func stateTensors() -> [(String, Tensor)] {
        moments.sorted { $0.key < $1.key }.flatMap { n, mv in [("exp_avg." + n, mv.0), ("exp_avg_sq." + n, mv.1)] }
    }

    /// Restores moments saved by `stateTensors` (copies) and the step count. With `merge`, moments
    /// not in `tensors` are kept (state restored page by page).
    public func restore(step: Int, tensors: [String: Tensor], merge: Bool = false) {
        self.step = step
        if !merge { moments = [:] }
        for (name, t) in tensors where name.hasPrefix("exp_avg.") {
            let n = String(name.dropFirst("exp_avg.".count))
            if let v = tensors["exp_avg_sq." + n] { moments[n] = (t.converted(to: .f32).copy(), v.converted(to: .f32).copy()) }
        }
    }
}

/// Learning rate at an optimizer step: linear warm-up then cosine decay to 0, as transformers'
/// `get_cosine_schedule_with_warmup` (step counts updates already made, so the first update of a
/// run with warm-up uses 0).
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Double, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    /// Warm-up as a fraction of the total (the reference's `warmup_ratio` 0.03), rounded up.
    public init(peak: Double, warmupRatio: Double, totalSteps: Int) {
        self.init(peak: peak, warmupSteps: Int((warmupRatio * Double(totalSteps)).rounded(.up)), totalSteps: totalSteps)
    }

    public func rate(step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step) / Double(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        return peak * max(0, 0.5 * (1 + cos(Double.pi * progress)))
    }
}
