import Foundation
import Tensor

/// Experts trained outside the trunk's parameter set (expert worker processes, or `ShardedExperts`
/// in process): besides forward and backward, the trunk drives their part of each optimizer step —
/// zeroing gradients, their share of the global gradient norm, the clipped AdamW update — and asks
/// for their state when it writes a checkpoint or the final model.
public protocol DistributedExperts: ExpertBackend {
    func zeroGrads() throws
    /// Σ g² over every trainable expert tensor.
    func gradientSquares() throws -> Double
    /// Gradients scaled by `clip`, then one AdamW update at `lr`.
    func step(lr: Double, clip: Float) throws
    /// Trainable tensors by full name plus `exp_avg.` / `exp_avg_sq.` moments.
    func state() throws -> [(String, Tensor)]
    func restore(step: Int, tensors: [String: Tensor]) throws
    /// Every expert tensor for the final model (LoRA merged, or kept as `*.lora_{A,B}.weight`).
    func export(mergeLoRA: Bool) throws -> [(String, Tensor)]
}

/// Several `ExpertShard`s in this process behind `DistributedExperts` (what the workers do, without
/// the wire): the reference the process-parallel run is compared with, and the worker's core.
public final class ShardedExperts: DistributedExperts {
    public let shards: [ExpertShard]
    private var owner: [String: ExpertShard] = [:]

    public init(shards: [ExpertShard]) throws {
        self.shards = shards
        for s in shards {
            for h in s.held {
                let key = "\(h.layer)/\(h.expert)"
                guard owner[key] == nil else { throw TrainingError.invalidSetting("expert \(h.expert) of layer \(h.layer) is held twice; training needs exactly one copy") }
                owner[key] = s
            }
        }
    }

    private func shard(_ layer: Int, _ expert: Int) throws -> ExpertShard {
        guard let s = owner["\(layer)/\(expert)"] else { throw TrainingError.remote("no shard holds expert \(expert) of layer \(layer)") }
        return s
    }

    public func forward(layer: Int, batches: [ExpertRows]) throws -> [Tensor] {
        try batches.map { try shard(layer, $0.expert).forward(layer: layer, expert: $0.expert, rows: $0.rows) }
    }

    public func backward(layer: Int, outputGrads: [ExpertRows]) throws -> [Tensor] {
        try outputGrads.map { try shard(layer, $0.expert).backward(layer: layer, expert: $0.expert, outputGrad: $0.rows) }
    }

    public func zeroGrads() { for s in shards { s.zeroGrads() } }
    public func gradientSquares() -> Double { shards.reduce(0) { $0 + $1.gradientSquares() } }
    public func step(lr: Double, clip: Float) { for s in shards { s.step(lr: lr, clip: clip) } }
    public func state() -> [(String, Tensor)] { shards.flatMap { $0.state() } }
    public func restore(step: Int, tensors: [String: Tensor]) throws { for s in shards { try s.restore(step: step, tensors: tensors) } }
    public func export(mergeLoRA: Bool) -> [(String, Tensor)] { shards.flatMap { $0.export(mergeLoRA: mergeLoRA) } }
}
