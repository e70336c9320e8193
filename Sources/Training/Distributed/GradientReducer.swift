import Foundation
import Tensor

/// Sums gradients across data-parallel trunk replicas (modality data parallelism): every replica
/// hands in its flattened gradients and a few statistics and gets back the sums, identical bytes on
/// every replica (one fixed summation order), so their parameters stay equal after each step.
public protocol GradientReducer: AnyObject {
    var rank: Int { get }
    var world: Int { get }
    func allReduce(_ gradients: Tensor, stats: [Double]) throws -> (Tensor, [Double])
}

extension ParameterSet {
    /// The gradients of `params` end to end in one `[count]` tensor.
    static func flatGradients(_ params: [Parameter]) -> Tensor {
        let flat = Tensor(zeros: [params.reduce(0) { $0 + $1.count }])
        var at = 0
        for p in params { Vec.copy(flat, at: at, from: p.grad); at += p.count }
        return flat
    }

    /// Writes a flat `[count]` tensor back into the gradients of `params`.
    static func setGradients(_ params: [Parameter], from flat: Tensor) throws {
        guard flat.count == params.reduce(0, { $0 + $1.count }) else {
            throw TrainingError.remote("reduced gradients hold \(flat.count) values, this replica trains \(params.reduce(0) { $0 + $1.count })")
        }
        var at = 0
        for p in params {
            (p.grad.floats).update(from: flat.floats + at, count: p.count)
            at += p.count
        }
    }
}
