import Foundation
import Models
import Tensor
import Wire

/// The trunk's `ExpertRunner` when experts live in other processes: per MoE layer and step it sends
/// one message per expert carrying every row routed to that expert (replicas chosen by the
/// dispatcher's load balancing), waits for all of them, and hands the outputs back in order.
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
        var ids: [UInt64] = []
        ids.reserveCapacity(batches.count)
        for b in batches {
            let m = Message(.expertForward, layer: Int32(layer), expert: Int32(b.expert), tensors: [b.rows])
            ids.append(try dispatcher.submit(m, service: WorkerAnnouncement.expertService(layer: layer, expert: b.expert)))
        }
        // The pool is not parked while the experts compute: its spinners yield every 64 spins and
        // sleep after ~1 ms on their own, and the layer's next kernels then find them awake
        // instead of paying a wake-up. Likewise the replies are polled for, yielding, for the
        // first 3 ms (a decode layer's experts take 1–3 ms). Measured on the 1B pipeline (2 cores,
        // 4 workers), paired runs of distributed ÷ in-process decode: parked and blocking 0.59–0.82,
        // not parked 0.71–0.85, and polling too 0.72–0.90 (better in 5 of 6 pairs).
        let replies = try dispatcher.collect(ids, timeout: timeout, spin: Self.replySpin)
        // Compute time per worker: a worker serving two of the layer's experts runs them in turn.
        var busy: [Dispatcher.WorkerID: UInt64] = [:]
        var outputs: [Tensor] = []
        outputs.reserveCapacity(batches.count)
        for (id, b) in zip(ids, batches) {
            guard let reply = replies[id] else { throw WireError.unavailable("expert \(b.expert) of layer \(layer): no reply") }
            let r = reply.message
            if r.kind == .error { throw WireError.remote("expert \(b.expert) of layer \(layer): \(r.payloadText)") }
            guard r.kind == .expertResult, r.tensors.count == 1, r.tensors[0].shape == b.rows.shape else {
                throw WireError.malformed("expert \(b.expert) of layer \(layer) answered \(r.kind) with shapes \(r.tensors.map(\.shape)), expected \(b.rows.shape)")
            }
            outputs.append(r.tensors[0])
            busy[reply.worker ?? [], default: 0] += UInt64(r.sequence)
        }
        let rt = monotonicSeconds() - t0
        // Workers compute in parallel: what the wire and the scheduling cost is the round trip
        // minus the busiest worker's compute time (each reply carries its expert's, in µs).
        let slowest = Double(busy.values.max() ?? 0) * 1e-6
        timings.add("moe_round_trip", seconds: rt)
        timings.add("moe_expert_compute", seconds: slowest)
        timings.add("moe_overhead", seconds: max(0, rt - slowest))
        timings.add("expert_messages", seconds: 0, count: batches.count)
        return outputs
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
            guard job.tensors.count == 1, job.tensors[0].rank == 2 else {
                return Message.errorReply(to: job, "expert worker: expertForward needs one [rows, hidden] tensor, got \(job.tensors.map(\.shape))")
            }
            let layer = Int(job.layer), expert = Int(job.expert)
            do {
                let t0 = monotonicSeconds()
                let out = try experts.run(layer: layer, batches: [ExpertBatch(expert: expert, rows: job.tensors[0])])
                let dt = monotonicSeconds() - t0
                timings.add("expert", seconds: dt)
                served["layer\(layer)/expert\(expert)", default: 0] += 1
                // `sequence` carries the compute time in µs, so the router can tell wire time from work.
                return Message(.expertResult, requestID: job.requestID, sequence: UInt32(min(dt * 1e6, 4e9)), layer: job.layer,
                               expert: job.expert, tensors: out)
            } catch {
                return Message.errorReply(to: job, "expert worker: layer \(layer) expert \(expert): \(error)")
            }
        }
    }

    public func stats() -> [String: Int] {
        var s = served
        s["expert_ms"] = Int((timings.entries["expert"]?.seconds ?? 0) * 1000)
        return s
    }
}
