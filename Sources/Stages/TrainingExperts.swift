import Foundation
import Checkpoint
import Models
import Tensor
import Training
import Wire

/// A control request from the trainer to an expert worker in training (`trainControl` payload).
public struct TrainControl: Codable, Sendable {
    /// configure | zero | norm | step | state | restore | export
    public var op: String
    public var setup: ExpertTrainingSetup?
    public var lr: Double?
    public var clip: Float?
    public var step: Int?
    public var merge: Bool?
    /// Paging of state/export replies (at most `TrainControl.page` tensors per message).
    public var offset: Int?
    /// restore: names of the attached tensors.
    public var names: [String]?

    public static let page = 48
    public init(op: String) { self.op = op }
}

/// An expert worker's answer (`trainControlReply` payload); tensors ride along in the message.
public struct TrainControlReply: Codable, Sendable {
    public var squares: Double?
    public var names: [String]?
    public var total: Int?
    public init() {}
}

/// The expert worker's service in training (`unimoe-expert --train`): holds an `ExpertShard` made at
/// `configure`, answers forward (`expertForward`) and backward (`expertBackward`) for its experts,
/// and the trainer's step and state requests. Stateful: the trainer pins every job of an expert to
/// this worker, so a forward's activations are here when its backward arrives.
public final class TrainingExpertService: WorkerHandler {
    let modelDirectory: String
    let layers: [Int]?
    let experts: [Int]
    private(set) var shard: ExpertShard?

    public init(modelDirectory: String, layers: [Int]?, experts: [Int]) {
        self.modelDirectory = modelDirectory; self.layers = layers; self.experts = experts
    }

    /// `expert/L/E` for every (layer, expert) the worker will hold: `layers`, or the model's MoE
    /// layers (for a dense model that training will upcycle: the even layers, as the trainer's default).
    public static func services(modelDirectory: String, layers: [Int]?, experts: [Int]) throws -> [String] {
        let config = try ModelConfig.load(directory: modelDirectory)
        let ls = layers ?? (config.hasMoE ? (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
                                          : Array(stride(from: 0, to: config.numHiddenLayers, by: 2)))
        return ls.flatMap { l in experts.map { WorkerAnnouncement.expertService(layer: l, expert: $0) } }
    }

    public func handle(_ jobs: [Message]) -> [Message] {
        jobs.map { job in
            do { return try answer(job) } catch {
                return Message.errorReply(to: job, "expert trainer: \(error)")
            }
        }
    }

    private func answer(_ job: Message) throws -> Message {
        switch job.kind {
        case .expertForward, .expertBackward:
            guard let shard else { throw TrainingError.remote("not configured: the trainer sends configure first") }
            guard job.tensors.count == 1 else { throw TrainingError.remote("\(job.kind) needs one tensor, got \(job.tensors.count)") }
            let l = Int(job.layer), e = Int(job.expert)
            let out = job.kind == .expertForward ? try shard.forward(layer: l, expert: e, rows: job.tensors[0])
                                                 : try shard.backward(layer: l, expert: e, outputGrad: job.tensors[0])
            return Message(.expertResult, requestID: job.requestID, layer: job.layer, expert: job.expert, tensors: [out])
        case .trainControl:
            let c = try job.decodePayload(TrainControl.self)
            var reply = TrainControlReply()
            var tensors: [Tensor] = []
            switch c.op {
            case "configure":
                guard let setup = c.setup else { throw TrainingError.remote("configure without a setup") }
                shard = try ExpertShard(modelDirectory: modelDirectory, layers: layers, experts: experts, setup: setup)
            default:
                guard let shard else { throw TrainingError.remote("not configured: the trainer sends configure first") }
                switch c.op {
                case "zero": shard.zeroGrads()
                case "norm": reply.squares = shard.gradientSquares()
                case "step": shard.step(lr: c.lr ?? 0, clip: c.clip ?? 1)
                case "state", "export":
                    let all = c.op == "state" ? shard.state() : shard.export(mergeLoRA: c.merge ?? true)
                    let start = min(c.offset ?? 0, all.count), end = min(start + TrainControl.page, all.count)
                    reply.names = all[start..<end].map(\.0)
                    reply.total = all.count
                    tensors = all[start..<end].map(\.1)
                case "restore":
                    let names = c.names ?? []
                    guard names.count == job.tensors.count else { throw TrainingError.remote("restore: \(names.count) names for \(job.tensors.count) tensors") }
                    var map: [String: Tensor] = [:]
                    for (n, t) in zip(names, job.tensors) { map[n] = t.copy() }
                    try shard.restore(step: c.step ?? 0, tensors: map)
                default: throw TrainingError.remote("unknown control '\(c.op)'")
                }
            }
            return try Message.json(.trainControlReply, reply, requestID: job.requestID, tensors: tensors)
        default:
            throw TrainingError.remote("cannot handle \(job.kind) messages")
        }
    }
}

/// The trainer's side of expert-parallel training: experts live in `unimoe-expert --train` workers
/// that joined the dispatcher. Every (layer, expert) must be offered by exactly one worker (replicas
/// would drift apart); jobs are pinned to it. Any worker failure stops training with a typed error
/// (the run's last checkpoint stays resumable).
public final class RemoteTrainingExperts: DistributedExperts {
    public let dispatcher: Dispatcher
    public let timeout: Double
    private var owner: [String: Dispatcher.WorkerID] = [:]
    private var workerService: [Dispatcher.WorkerID: String] = [:]

    /// Waits (up to `joinTimeout`) until every `expert/L/E` of `layers` × `0..<experts` is offered,
    /// then configures each worker with `setup`.
    public init(dispatcher: Dispatcher, layers: [Int], experts: Int, setup: ExpertTrainingSetup,
                joinTimeout: Double = 60, timeout: Double = 300) throws {
        self.dispatcher = dispatcher
        self.timeout = timeout
        let wanted = layers.flatMap { l in (0..<experts).map { WorkerAnnouncement.expertService(layer: l, expert: $0) } }
        let deadline = monotonicSeconds() + joinTimeout
        while true {
            let missing = wanted.filter { dispatcher.workers(offering: $0).isEmpty }
            if missing.isEmpty { break }
            guard monotonicSeconds() < deadline else {
                throw TrainingError.remote("no expert worker offers \(missing.prefix(6).joined(separator: ", "))\(missing.count > 6 ? " …" : "") after \(Int(joinTimeout)) s (start unimoe-expert --train for them)")
            }
            try dispatcher.pump(timeout: 0.1)
        }
        for s in wanted {
            let ws = dispatcher.workers(offering: s)
            guard ws.count == 1, let w = ws.first else {
                throw TrainingError.remote("\(s) is offered by \(ws.count) workers; training needs exactly one (stop the replicas)")
            }
            owner[s] = w
            if workerService[w] == nil { workerService[w] = s }
        }
        var c = TrainControl(op: "configure")
        c.setup = setup
        _ = try control(c)
    }

    private func fail(_ what: String, _ error: Error) -> TrainingError {
        if let t = error as? TrainingError { return t }
        return .remote("\(what): \(error)")
    }

    /// Sends one control request to every worker (pinned), returns the replies in worker order.
    @discardableResult
    private func control(_ c: TrainControl, tensors: [Dispatcher.WorkerID: [Tensor]] = [:]) throws -> [(Dispatcher.WorkerID, Message)] {
        do {
            try dispatcher.pump(timeout: 0)
            for s in Set(owner.keys) { _ = try worker(for: s) }
            let workers = workerService.keys.sorted { $0.lexicographicallyPrecedes($1) }
            var ids: [UInt64] = []
            for w in workers {
                let m = try Message.json(.trainControl, c, tensors: tensors[w] ?? [])
                ids.append(try dispatcher.submit(m, service: workerService[w] ?? "", pinnedTo: w))
            }
            Parallel.park()
            let replies = try dispatcher.collect(ids, timeout: timeout)
            return try zip(workers, ids).map { w, id in
                guard let r = replies[id]?.message else { throw TrainingError.remote("expert worker gave no reply to \(c.op)") }
                if r.kind == .error { throw TrainingError.remote("expert worker: \(r.payloadText)") }
                guard r.kind == .trainControlReply else { throw TrainingError.remote("expert worker answered \(c.op) with \(r.kind)") }
                return (w, r)
            }
        } catch { throw fail("expert workers (\(c.op))", error) }
    }

    /// The worker holding `service`: the one it was pinned to or, once that identity has left the
    /// dispatcher because the worker reconnected (same process, same state), the one worker
    /// offering the service now. A restarted worker is caught by its own "not configured" answer.
    private func worker(for service: String) throws -> Dispatcher.WorkerID {
        if let w = owner[service], dispatcher.workers[w] != nil { return w }
        let now = dispatcher.workers(offering: service)
        guard now.count == 1, let w = now.first else { throw TrainingError.remote("the worker holding \(service) is gone") }
        if let old = owner[service] { workerService[old] = nil }
        owner[service] = w
        if workerService[w] == nil { workerService[w] = service }
        return w
    }

    private func exchange(_ kind: MessageKind, layer: Int, batches: [ExpertRows]) throws -> [Tensor] {
        do {
            var ids: [UInt64] = []
            for b in batches {
                let s = WorkerAnnouncement.expertService(layer: layer, expert: b.expert)
                let w = try worker(for: s)
                ids.append(try dispatcher.submit(Message(kind, layer: Int32(layer), expert: Int32(b.expert), tensors: [b.rows]), service: s, pinnedTo: w))
            }
            Parallel.park()
            let replies = try dispatcher.collect(ids, timeout: timeout)
            return try zip(ids, batches).map { id, b in
                guard let r = replies[id]?.message else { throw TrainingError.remote("expert \(b.expert) of layer \(layer): no reply") }
                if r.kind == .error { throw TrainingError.remote("expert \(b.expert) of layer \(layer): \(r.payloadText)") }
                guard r.kind == .expertResult, r.tensors.count == 1, r.tensors[0].shape == b.rows.shape else {
                    throw TrainingError.remote("expert \(b.expert) of layer \(layer) answered \(r.kind) \(r.tensors.map(\.shape))")
                }
                return r.tensors[0].copy()
            }
        } catch { throw fail("layer \(layer) \(kind == .expertForward ? "forward" : "backward")", error) }
    }

    public func forward(layer: Int, batches: [ExpertRows]) throws -> [Tensor] { try exchange(.expertForward, layer: layer, batches: batches) }
    public func backward(layer: Int, outputGrads: [ExpertRows]) throws -> [Tensor] { try exchange(.expertBackward, layer: layer, batches: outputGrads) }

    public func zeroGrads() throws { try control(TrainControl(op: "zero")) }

    public func gradientSquares() throws -> Double {
        try control(TrainControl(op: "norm")).reduce(0) { $0 + ((try? $1.1.decodePayload(TrainControlReply.self).squares) ?? 0) }
    }

    public func step(lr: Double, clip: Float) throws {
        var c = TrainControl(op: "step")
        c.lr = lr; c.clip = clip
        try control(c)
    }

    /// Pages of tensors from every worker.
    private func collectPages(_ op: String, merge: Bool? = nil) throws -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        var offsets: [Dispatcher.WorkerID: Int] = [:]
        var pending = Set(workerService.keys)
        while !pending.isEmpty {
            // One request per worker that still has pages to send.
            var c = TrainControl(op: op)
            c.merge = merge
            let replies = try pagedControl(c, offsets: offsets, only: pending)
            for (w, r) in replies {
                let rep = try r.decodePayload(TrainControlReply.self)
                let names = rep.names ?? []
                guard names.count == r.tensors.count else { throw TrainingError.remote("\(op): \(names.count) names for \(r.tensors.count) tensors") }
                out += zip(names, r.tensors.map { $0.copy() }).map { ($0, $1) }
                let next = (offsets[w] ?? 0) + names.count
                offsets[w] = next
                if names.isEmpty || next >= (rep.total ?? 0) { pending.remove(w) }
            }
        }
        return out
    }

    private func pagedControl(_ c: TrainControl, offsets: [Dispatcher.WorkerID: Int], only: Set<Dispatcher.WorkerID>) throws -> [(Dispatcher.WorkerID, Message)] {
        do {
            var ids: [(Dispatcher.WorkerID, UInt64)] = []
            for w in only.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                var m = c
                m.offset = offsets[w] ?? 0
                ids.append((w, try dispatcher.submit(try Message.json(.trainControl, m), service: workerService[w] ?? "", pinnedTo: w)))
            }
            let replies = try dispatcher.collect(ids.map(\.1), timeout: timeout)
            return try ids.map { w, id in
                guard let r = replies[id]?.message else { throw TrainingError.remote("expert worker gave no reply to \(c.op)") }
                if r.kind == .error { throw TrainingError.remote("expert worker: \(r.payloadText)") }
                return (w, r)
            }
        } catch { throw fail("expert workers (\(c.op))", error) }
    }

    public func state() throws -> [(String, Tensor)] { try collectPages("state") }
    public func export(mergeLoRA: Bool) throws -> [(String, Tensor)] { try collectPages("export", merge: mergeLoRA) }

    public func restore(step: Int, tensors: [String: Tensor]) throws {
        // Each worker takes the tensors of its own experts (names carry layer and expert), in pages.
        let names = tensors.keys.sorted()
        var byWorker: [Dispatcher.WorkerID: [String]] = [:]
        for n in names {
            guard let (l, e) = Self.layerExpert(n), let w = owner[WorkerAnnouncement.expertService(layer: l, expert: e)] else { continue }
            byWorker[w, default: []].append(n)
        }
        for (w, ns) in byWorker.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            var i = 0
            // Each page restores what it carries (values and moments); pages together cover the shard.
            while i < ns.count {
                let page = Array(ns[i..<min(i + TrainControl.page, ns.count)])
                var c = TrainControl(op: "restore")
                c.step = step; c.names = page
                let m = try Message.json(.trainControl, c, tensors: page.compactMap { tensors[$0] })
                do {
                    let (r, _) = try dispatcher.call(m, service: workerService[w] ?? "", pinnedTo: w, timeout: timeout)
                    guard r.kind == .trainControlReply else { throw TrainingError.remote("restore answered \(r.kind)") }
                } catch { throw fail("expert workers (restore)", error) }
                i += TrainControl.page
            }
        }
    }

    static func layerExpert(_ name: String) -> (Int, Int)? {
        let n = name.hasPrefix("exp_avg_sq.") ? String(name.dropFirst(11)) : name.hasPrefix("exp_avg.") ? String(name.dropFirst(8)) : name
        let parts = n.split(separator: ".")
        guard parts.count > 5, let l = Int(parts[2]), let i = parts.firstIndex(of: "experts"), i + 1 < parts.count, let e = Int(parts[i + 1]) else { return nil }
        return (l, e)
    }
}
