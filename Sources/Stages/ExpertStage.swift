import Foundation
import Models
import Tensor
import Wire

/// The trunk's `ExpertRunner` when experts live in other processes: per MoE layer and step it sends
/// each expert worker one message carrying every row routed to any of its experts (experts offered
/// by the same workers travel together; the dispatcher picks among replicas), waits for all of
/// them, and hands the outputs back in order.
///
/// `@unchecked Sendable`: the dispatcher (a ZeroMQ socket) is used only under `lock`, so calls are
/// serialised and the socket never sees two threads at once.
public final class RemoteExperts: ExpertRunner, @unchecked Sendable {
    public let dispatcher: Dispatcher
    /// Longest wait for one layer's expert replies (also covers workers that have not joined yet).
    public let timeout: Double
    private let lock = NSLock()
    /// Round trips made and the time they took (send of the first to receipt of the last reply).
    public private(set) var timings = StageTimings()

    /// How long a layer's replies are polled for before the wait blocks (see `run`).
    static let replySpin = 0.003

    public init(dispatcher: Dispatcher, timeout: Double = 60) {
        self.dispatcher = dispatcher
        self.timeout = timeout
    }

    public func run(layer: Int, batches: [ExpertBatch]) throws -> [Tensor] {
        lock.lock(); defer { lock.unlock() }
        let t0 = monotonicSeconds()
        let services = batches.map { WorkerAnnouncement.expertService(layer: layer, expert: $0.expert) }
        let shares = workerShares(services)
        var ids: [UInt64] = []
        ids.reserveCapacity(shares.count)
        for share in shares {
            let m = try Message.expertForward(layer: layer, experts: share.map { batches[$0].expert }, rows: share.map { batches[$0].rows })
            ids.append(try dispatcher.submit(m, services: share.map { services[$0] }))
        }
        // The pool is not parked while the experts compute: its spinners yield every 64 spins and
        // sleep after ~1 ms on their own, and the layer's next kernels then find them awake
        // instead of paying a wake-up. Likewise the replies are polled for, yielding, for the
        // first 3 ms (a decode layer's experts take 1–3 ms). Measured on the 1B pipeline (2 cores,
        // 4 workers), paired runs of distributed ÷ in-process decode: parked and blocking 0.59–0.82,
        // not parked 0.71–0.85, and polling too 0.72–0.90 (better in 5 of 6 pairs).
        let replies = try dispatcher.collect(ids, timeout: timeout, spin: Self.replySpin)
        var outputs = [Tensor?](repeating: nil, count: batches.count)
        var busy: [Dispatcher.WorkerID: UInt64] = [:]
        for (id, share) in zip(ids, shares) {
            // Named only when something failed: this loop runs once per worker per layer and token.
            func what() -> String {
                "expert\(share.count > 1 ? "s" : "") \(share.map { String(batches[$0].expert) }.joined(separator: ",")) of layer \(layer)"
            }
            guard let reply = replies[id] else { throw WireError.unavailable("\(what()): no reply") }
            let r = reply.message
            if r.kind == .error { throw WireError.remote("\(what()): \(r.payloadText)") }
            guard r.kind == .expertResult, r.tensors.count == share.count,
                  zip(r.tensors, share).allSatisfy({ $0.shape == batches[$1].rows.shape }) else {
                throw WireError.malformed("\(what()) answered \(r.kind) with shapes \(r.tensors.map(\.shape)), expected \(share.map { batches[$0].rows.shape })")
            }
            for (i, t) in zip(share, r.tensors) { outputs[i] = t }
            busy[reply.worker ?? [], default: 0] += UInt64(r.sequence)
        }
        let rt = monotonicSeconds() - t0
        // Workers compute in parallel: what the wire and the scheduling cost is the round trip
        // minus the busiest worker's compute time (each reply carries its share's, in µs).
        let busiest = Double(busy.values.max() ?? 0) * 1e-6
        timings.add("moe_round_trip", seconds: rt)
        timings.add("moe_expert_compute", seconds: busiest)
        timings.add("moe_overhead", seconds: max(0, rt - busiest))
        // Also apart for round trips of one row per expert (a lone sequence's decode step): the
        // totals mix in prefill's, whose expert compute is many times longer.
        if batches.allSatisfy({ $0.rows.shape[0] == 1 }) {
            timings.add("moe_one_row_round_trip", seconds: rt)
            timings.add("moe_one_row_expert_compute", seconds: busiest)
            timings.add("moe_one_row_overhead", seconds: max(0, rt - busiest))
        }
        timings.add("expert_messages", seconds: 0, count: shares.count)
        return outputs.map { $0! }
    }

    /// Indices of `services` (one per batch) grouped into one message per worker: services the same
    /// live workers offer go together (every expert of a group whose workers all serve it); one no
    /// live worker offers yet waits alone.
    private func workerShares(_ services: [String]) -> [[Int]] {
        var shares: [[Int]] = []
        var shareOf: [[Dispatcher.WorkerID]: Int] = [:]
        for (i, service) in services.enumerated() {
            let offering = dispatcher.workers(offering: service).sorted { $0.lexicographicallyPrecedes($1) }
            if !offering.isEmpty, let s = shareOf[offering] {
                shares[s].append(i)
            } else {
                if !offering.isEmpty { shareOf[offering] = shares.count }
                shares.append([i])
            }
        }
        return shares
    }

    /// Lets the dispatcher heartbeat and learn workers between steps.
    public func pump(timeout: Double) throws {
        lock.lock(); defer { lock.unlock() }
        try dispatcher.pump(timeout: timeout)
    }

    /// Completed jobs per expert worker name, for stats.
    public func counters() -> [String: Int] {
        lock.lock(); defer { lock.unlock() }
        return dispatcher.statsCounters()
    }
}

/// The expert worker's service: holds only the (layer, expert) weights it serves and answers
/// `expertForward` messages with the expert's output for the rows it was sent.
public final class ExpertService: WorkerHandler {
    public let experts: LocalExperts
    public private(set) var timings = StageTimings()
    private var served: [String: Int] = [:]

    public init(experts: LocalExperts) { self.experts = experts }

    /// Service names (`expert/L/E`) for everything this worker holds, for its READY announcement.
    public static func services(_ experts: LocalExperts) -> [String] {
        experts.loaded.sorted { $0.key < $1.key }.flatMap { l, es in es.map { WorkerAnnouncement.expertService(layer: l, expert: $0) } }
    }

    public func handle(_ jobs: [Message]) -> [Message] {
        jobs.map { job in
            guard job.kind == .expertForward else {
                return Message.errorReply(to: job, "expert worker: cannot handle \(job.kind) messages")
            }
            let layer = Int(job.layer)
            do {
                let indices = try job.expertIndices()
                guard job.tensors.allSatisfy({ $0.rank == 2 }) else {
                    throw WireError.malformed("expertForward needs [rows, hidden] tensors, got \(job.tensors.map(\.shape))")
                }
                let t0 = monotonicSeconds()
                let out = try experts.run(layer: layer, batches: zip(indices, job.tensors).map { ExpertBatch(expert: $0, rows: $1) })
                let dt = monotonicSeconds() - t0
                timings.add("expert", seconds: dt)
                for e in indices { served["layer\(layer)/expert\(e)", default: 0] += 1 }
                // `sequence` carries the compute time in µs, so the router can tell wire time from work.
                return Message(.expertResult, requestID: job.requestID, sequence: UInt32(min(dt * 1e6, 4e9)), layer: job.layer,
                               expert: job.expert, tensors: out)
            } catch {
                return Message.errorReply(to: job, "expert worker: layer \(layer): \(error)")
            }
        }
    }

    public func stats() -> [String: Int] {
        var s = served
        s["expert_ms"] = Int((timings.entries["expert"]?.seconds ?? 0) * 1000)
        return s
    }
}
