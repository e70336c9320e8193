import Foundation
import Checkpoint
import Tensor

/// The token rows one MoE layer routed to one expert in one step (all sequences of the step
/// together). `rows` is `[n, hidden]` f32; the trunk may hand out views into its scratch memory,
/// so a runner must not keep `rows` after `run` returns (copy it if it must).
public struct ExpertBatch: Sendable {
    public let expert: Int
    public let rows: Tensor

    public init(expert: Int, rows: Tensor) {
        self.expert = expert
        self.rows = rows
    }
}

/// Computes experts for the trunk, in this process (`LocalExperts`) or elsewhere (the pipeline's
/// remote runner): the trunk calls `run` once per MoE layer per step with one batch per expert that
/// received rows, and combines the outputs with the routing weights itself.
public protocol ExpertRunner: AnyObject, Sendable {
    /// `outputs[i]` is expert `batches[i].expert`'s output for `batches[i].rows`, `[n, hidden]` f32.
    func run(layer: Int, batches: [ExpertBatch]) throws -> [Tensor]

    /// The same outputs written into caller-owned memory, batch after batch: batch i's `n_i` rows
    /// go to rows `n_0 + … + n_(i-1)` onwards of `out` (`[Σ n_i, hidden]` f32). The trunk calls
    /// this one, so a runner in this process (`LocalExperts`) allocates nothing per decode step.
    func run(layer: Int, batches: [ExpertBatch], into out: UnsafeMutablePointer<Float>) throws
}

extension ExpertRunner {
    /// For runners whose outputs arrive as tensors anyway (remote workers): checks and copies them.
    public func run(layer: Int, batches: [ExpertBatch], into out: UnsafeMutablePointer<Float>) throws {
        let outputs = try run(layer: layer, batches: batches)
        guard outputs.count == batches.count else {
            throw ModelError.expertOutput("layer \(layer): \(batches.count) batches sent, \(outputs.count) outputs returned")
        }
        var row = 0
        for (b, o) in zip(batches, outputs) {
            let n = b.rows.shape[0], hidden = b.rows.shape[1]
            guard o.shape == [n, hidden] else {
                throw ModelError.expertOutput("layer \(layer) expert \(b.expert): output shape \(o.shape), expected [\(n), \(hidden)]")
            }
            (out + row * hidden).update(from: o.converted(to: .f32).floats, count: n * hidden)
            row += n
        }
    }
}

/// Experts computed in this process from checkpoint weights. Loads only the (layer, expert) pairs it
/// is asked for, so an expert worker maps just the weights it serves.
///
/// `@unchecked Sendable`: the weights are read-only after init; the scratch buffers are guarded by
/// `lock`, so concurrent `run` calls are serialised.
public final class LocalExperts: ExpertRunner, @unchecked Sendable {
    public let architecture: Architecture
    public let hidden: Int
    public let inner: Int
    private var weights: [Int: [Int: FeedForward]] = [:]
    private let lock = NSLock()
    private let gateBuf = ScratchBuffer(), upBuf = ScratchBuffer()
    /// Per pool worker (gate, up) buffers for the expert-parallel prefill path.
    private var workerBuffers: [(ScratchBuffer, ScratchBuffer)] = []

    /// - layers: MoE layers to load (nil: every MoE layer of the config).
    /// - experts: expert indices to load in each of those layers (nil: all).
    /// Takes the tensors from `checkpoint` (marking them used); shapes are checked against the config.
    public init(checkpoint: Checkpoint, config: ModelConfig, layers: [Int]? = nil, experts: [Int]? = nil) throws {
        architecture = try Architecture.forConfig(config)
        hidden = config.hiddenSize
        inner = config.expertIntermediateSize
        let moeLayers = (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
        let chosenLayers = layers ?? moeLayers
        for l in chosenLayers where !moeLayers.contains(l) {
            throw ModelError.invalidInput("layer \(l) is not a mixture-of-experts layer of this model (MoE layers: \(moeLayers))")
        }
        let chosenExperts = experts ?? Array(0..<config.experts)
        for e in chosenExperts where !(0..<config.experts).contains(e) {
            throw ModelError.invalidInput("expert \(e) does not exist; the model has \(config.experts) experts per layer")
        }
        for l in chosenLayers {
            var perLayer: [Int: FeedForward] = [:]
            for e in chosenExperts {
                let a = architecture
                perLayer[e] = try FeedForward.load(
                    checkpoint,
                    gate: a.expertName(layer: l, expert: e, .gate),
                    up: a.expertName(layer: l, expert: e, .up),
                    down: a.expertName(layer: l, expert: e, .down),
                    hidden: hidden, inner: inner, activation: config.hiddenAct)
            }
            weights[l] = perLayer
        }
    }

    /// Opens `directory` (config.json + safetensors) and loads the chosen experts. The other
    /// tensors belong to the trunk and stay unmapped; every requested expert tensor must exist.
    public static func load(directory: String, layers: [Int]? = nil, experts: [Int]? = nil) throws -> LocalExperts {
        let config = try ModelConfig.load(directory: directory)
        let ckpt = try Checkpoint(directory: directory)
        return try LocalExperts(checkpoint: ckpt, config: config, layers: layers, experts: experts)
    }

    /// The (layer → experts) this runner holds.
    public var loaded: [Int: [Int]] { weights.mapValues { $0.keys.sorted() } }

    public func holds(layer: Int, expert: Int) -> Bool { weights[layer]?[expert] != nil }

    /// One expert's weights (nil when not loaded).
    public func expert(layer: Int, expert: Int) -> FeedForward? { weights[layer]?[expert] }

    public func run(layer: Int, batches: [ExpertBatch]) throws -> [Tensor] {
        let out = Tensor(zeros: [batches.reduce(0) { $0 + $1.rows.shape[0] }, hidden])
        try run(layer: layer, batches: batches, into: out.floats)
        var row = 0
        return batches.map { b in
            defer { row += b.rows.shape[0] }
            return out.rows(row..<row + b.rows.shape[0])
        }
    }

    public func run(layer: Int, batches: [ExpertBatch], into out: UnsafeMutablePointer<Float>) throws {
        for b in batches {
            guard weights[layer]?[b.expert] != nil else { throw ModelError.expertUnavailable(layer: layer, expert: b.expert) }
            guard b.rows.rank == 2, b.rows.shape[1] == hidden else {
                throw ModelError.invalidInput("expert rows have shape \(b.rows.shape), expected [n, \(hidden)]")
            }
        }
        lock.lock(); defer { lock.unlock() }
        let threads = Parallel.threads
        if threads > 1 && batches.count > 1 && batches.contains(where: { $0.rows.shape[0] > Self.matVecRows }) {
            // Prefill: one expert per thread, largest first, each product on its thread (a pool job
            // inside this one runs serially). Skinny products (~32 rows) split over threads gain
            // little; whole experts do.
            let ffns = batches.map { weights[layer]![$0.expert]! }
            var starts: [Int] = [], row = 0
            for b in batches { starts.append(row); row += b.rows.shape[0] }
            let order = batches.indices.sorted { batches[$0].rows.shape[0] > batches[$1].rows.shape[0] }
            while workerBuffers.count < threads { workerBuffers.append((ScratchBuffer(), ScratchBuffer())) }
            let buffers = workerBuffers
            try Parallel.forEach(tasks: order.count, throwing: { task, worker in
                let i = order[task]
                try self.compute(ffns[i], batches[i].rows, buffers[worker], into: out + starts[i] * self.hidden)
            })
        } else if batches.allSatisfy({ $0.rows.shape[0] <= Self.matVecRows && $0.rows.dtype == .f32 }) {
            // Decode: every expert's gate and up in one pool job, then every down in another.
            let total = batches.reduce(0) { $0 + $1.rows.shape[0] }
            let perLayer = weights[layer]!
            try FeedForward.forwardAll(count: batches.count, { i in
                (perLayer[batches[i].expert]!, UnsafePointer(batches[i].rows.floats), batches[i].rows.shape[0])
            }, gateBuf: gateBuf.ensure(total * inner), upBuf: upBuf.ensure(total * inner), into: out)
        } else {
            // One large batch: its kernels split over the pool (sgemm).
            var row = 0
            for b in batches {
                try compute(weights[layer]![b.expert]!, b.rows, (gateBuf, upBuf), into: out + row * hidden)
                row += b.rows.shape[0]
            }
        }
    }

    /// Row counts up to this go to the mat-vec kernel (bandwidth-bound, split over the pool itself).
    static let matVecRows = 8

    private func compute(_ f: FeedForward, _ rows: Tensor, _ bufs: (ScratchBuffer, ScratchBuffer),
                         into out: UnsafeMutablePointer<Float>) throws {
        let n = rows.shape[0]
        let x = rows.converted(to: .f32)
        try f.forward(x.floats, rows: n, gateBuf: bufs.0.ensure(n * inner), upBuf: bufs.1.ensure(n * inner), into: out)
    }
}
