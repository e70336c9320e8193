import Foundation
import Models
import Tensor
import Wire

/// The trunk stage: embeddings in, last-position logits out, holding the KV cache of every live
/// sequence. Tokens of several sequences given to one `step` run as one batched forward (each
/// MoE layer then sends one message per expert for all of them).
public final class RouterStage {
    public let model: LanguageModel
    /// nil: the model's own local experts.
    public let experts: ExpertRunner?
    public private(set) var timings = StageTimings()
    private var caches: [UInt64: KVCache] = [:]

    public init(model: LanguageModel, experts: ExpertRunner? = nil) {
        self.model = model
        self.experts = experts
    }

    public var liveSequences: Int { caches.count }

    /// One batched step. `items[i].embeddings` are the new positions of sequence `items[i].id`
    /// (a prompt at first, then one token per step); returns `[1, vocab]` logits per item.
    public func step(_ items: [(id: UInt64, embeddings: Tensor)], rowKinds: [[String]?]? = nil) throws -> [Tensor] {
        guard Set(items.map(\.id)).count == items.count else { throw StageError.badRequest("a sequence appears twice in one step") }
        let steps = items.enumerated().map { i, it -> SequenceStep in
            let cache = caches[it.id] ?? model.makeCache(capacity: it.embeddings.shape.first ?? 0)
            caches[it.id] = cache
            return SequenceStep(cache: cache, embeddings: it.embeddings, rowKinds: rowKinds?[i] ?? nil)
        }
        let rows = items.reduce(0) { $0 + ($1.embeddings.shape.first ?? 0) }
        let t0 = monotonicSeconds()
        let out = try model.forward(steps, experts: experts, allPositions: false)
        timings.add(items.contains { $0.embeddings.shape.first ?? 0 > 1 } ? "prefill" : "decode_step", seconds: monotonicSeconds() - t0)
        timings.add("rows", seconds: 0, count: rows)
        return out
    }

    /// Forgets the KV caches of finished (or abandoned) sequences.
    public func release(_ ids: [UInt64]) {
        for id in ids { caches[id] = nil }
    }
}

/// Wire form of a trunk step: which sequences, in the order of the message's tensors.
public struct TrunkStepHeader: Codable, Sendable, Equatable {
    public var sequences: [UInt64]
    public init(sequences: [UInt64]) { self.sequences = sequences }
}

/// The router process's service: answers `trunkStep` (merging every step that arrived together
/// into one batched forward) and `release`; pumps its expert dispatcher while idle.
public final class RouterService: WorkerHandler {
    public let stage: RouterStage
    let remote: RemoteExperts?

    public init(stage: RouterStage, remote: RemoteExperts?) {
        self.stage = stage
        self.remote = remote
    }

    public func handle(_ jobs: [Message]) -> [Message] {
        var replies = [Message?](repeating: nil, count: jobs.count)
        var batch: [(job: Int, header: TrunkStepHeader)] = []
        var seen = Set<UInt64>()
        for (i, job) in jobs.enumerated() {
            switch job.kind {
            case .release:
                do {
                    stage.release(try job.decodePayload(TrunkStepHeader.self).sequences)
                    replies[i] = Message(.release, requestID: job.requestID)
                } catch { replies[i] = Message.errorReply(to: job, "router: \(error)") }
            case .trunkStep:
                do {
                    let h = try job.decodePayload(TrunkStepHeader.self)
                    guard h.sequences.count == job.tensors.count, !h.sequences.isEmpty else {
                        throw StageError.badRequest("trunkStep names \(h.sequences.count) sequences but carries \(job.tensors.count) tensors")
                    }
                    if h.sequences.contains(where: seen.contains) {
                        replies[i] = answer([(i, h)], jobs)[0]  // overlapping steps cannot share a batch
                    } else {
                        seen.formUnion(h.sequences)
                        batch.append((i, h))
                    }
                } catch { replies[i] = Message.errorReply(to: job, "router: \(error)") }
            default:
                replies[i] = Message.errorReply(to: job, "router: cannot handle \(job.kind) messages")
            }
        }
        if !batch.isEmpty {
            for (k, r) in answer(batch, jobs).enumerated() { replies[batch[k].job] = r }
        }
        return replies.enumerated().map { $1 ?? Message.errorReply(to: jobs[$0], "router: no answer") }
    }

    /// Runs the listed steps as one batched forward and splits the logits back per job.
    private func answer(_ batch: [(job: Int, header: TrunkStepHeader)], _ jobs: [Message]) -> [Message] {
        var items: [(id: UInt64, embeddings: Tensor)] = []
        for (j, h) in batch { for (s, t) in zip(h.sequences, jobs[j].tensors) { items.append((s, t)) } }
        do {
            let logits = try stage.step(items)
            var k = 0
            return batch.map { j, h in
                let part = Array(logits[k..<(k + h.sequences.count)])
                k += h.sequences.count
                return Message(.logits, requestID: jobs[j].requestID, tensors: part)
            }
        } catch {
            return batch.map { Message.errorReply(to: jobs[$0.job], "router: \(error)") }
        }
    }

    public func idle() { try? remote?.pump(timeout: 0) }

    public func stats() -> [String: Int] {
        var s = remote?.counters() ?? [:]
        s["live_sequences"] = stage.liveSequences
        for (k, v) in stage.timings.entries { s["\(k)_ms"] = Int(v.seconds * 1000); s["\(k)_count"] = v.count }
        if let r = remote { for (k, v) in r.timings.entries { s["\(k)_us"] = Int(v.seconds * 1e6); s["\(k)_count"] = v.count } }
        return s
    }
}
