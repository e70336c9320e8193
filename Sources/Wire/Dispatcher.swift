import Foundation
import Tensor

/// The broker side of the load-balancing pattern: binds a ROUTER, learns workers from their READY
/// announcements, sends each job to a live worker offering its service (fewest jobs in flight,
/// then least recently used, so replicas share the load), heartbeats workers, expires silent ones
/// and re-sends their in-flight jobs to another replica. Used by the router (for expert workers)
/// and by the coordinator (for the decode/encode/connect/router stages). Single-threaded: call it
/// from the thread that created it.
public final class Dispatcher {
    public typealias WorkerID = [UInt8]

    /// One known worker.
    public struct WorkerState {
        public var announcement: WorkerAnnouncement
        public var lastSeen: Double
        public var lastAssigned: Double = 0
        public var inFlight: Set<UInt64> = []
        public var served = 0
    }

    struct Job {
        var message: Message
        /// Every service the job needs from one worker (one, except for an expert worker's batch).
        var services: [String]
        var service: String { services.joined(separator: "+") }
        var callerRequestID: UInt64
        var pinnedTo: WorkerID?
        var worker: WorkerID?
        var attempts = 0
    }

    public let socket: Socket
    public let endpoint: String
    public let policy: HeartbeatPolicy
    public let name: String
    public var limits = WireLimits.standard
    /// Jobs re-sent after their worker died, at most this many times each.
    public var maxAttempts = 3

    public private(set) var workers: [WorkerID: WorkerState] = [:]
    private var jobs: [UInt64: Job] = [:]
    private var completed: [UInt64: Reply] = [:]
    private var nextJob: UInt64 = 1
    private var lastHeartbeat = 0.0
    /// Per worker name: jobs completed (kept after the worker leaves), for stats queries.
    public private(set) var servedByName: [String: Int] = [:]

    public init(bind endpoint: String, policy: HeartbeatPolicy = .standard, name: String = "dispatcher") throws {
        socket = try Socket(.router)
        try socket.bind(endpoint)
        self.endpoint = try socket.lastEndpoint()
        self.policy = policy
        self.name = name
    }

    /// Live workers offering `service`.
    public func workers(offering service: String) -> [WorkerID] {
        workers(offering: [service])
    }

    /// Live workers offering every one of `services`.
    public func workers(offering services: [String]) -> [WorkerID] {
        workers.filter { w in services.allSatisfy(w.value.announcement.services.contains) }.map(\.key)
    }

    /// Queues `message` for a worker offering `service` (or exactly `pinnedTo`, for sticky state such
    /// as a sequence's KV cache or one media stream). Returns the job id `collect` answers by.
    @discardableResult
    public func submit(_ message: Message, service: String, pinnedTo: WorkerID? = nil) throws -> UInt64 {
        try submit(message, services: [service], pinnedTo: pinnedTo)
    }

    /// Queues `message` for one worker offering all of `services` (an expert worker's share of a
    /// layer: every expert it is sent rows for).
    @discardableResult
    public func submit(_ message: Message, services: [String], pinnedTo: WorkerID? = nil) throws -> UInt64 {
        let id = nextJob
        nextJob += 1
        var m = message
        m.requestID = id
        jobs[id] = Job(message: m, services: services, callerRequestID: message.requestID, pinnedTo: pinnedTo)
        try assign(id)
        return id
    }

    /// The worker a job went to (to pin follow-up jobs to it).
    public func worker(of job: UInt64) -> WorkerID? { jobs[job]?.worker }

    /// A worker's answer to one job (an error reply included) and who sent it (nil when the
    /// dispatcher itself failed the job).
    public struct Reply {
        public var message: Message
        public var worker: WorkerID?
        /// The dispatcher failed the job because the worker it was pinned to died: the sticky state
        /// (a KV cache, a media stream) is gone, and the caller may rebuild it on another worker.
        public var stateLost = false
    }

    /// Waits until every job in `ids` has its reply (an error reply counts) or `timeout` passes;
    /// keeps heartbeating, learning and expiring workers meanwhile. Replies carry the caller's
    /// request id again. For the first `spin` seconds it polls without blocking, yielding the core
    /// between polls, then blocks: a reply due within milliseconds is seen at once instead of after
    /// a thread wake-up (~60 µs in a VM), while a thread that needs this core still gets it.
    public func collect(_ ids: [UInt64], timeout: Double, spin: Double = 0) throws -> [UInt64: Reply] {
        let start = monotonicSeconds()
        let deadline = start + timeout, spinUntil = start + spin
        while true {
            try housekeeping()
            if ids.allSatisfy({ completed[$0] != nil }) { break }
            if let missing = ids.first(where: { jobs[$0] == nil && completed[$0] == nil }) {
                throw WireError.unavailable("job \(missing) is unknown to \(name)")
            }
            let now = monotonicSeconds()
            if now >= deadline {
                let waiting = ids.compactMap { jobs[$0] }
                let unassigned = Set(waiting.filter { $0.worker == nil }.map(\.service)).sorted()
                for id in ids { jobs[id] = nil }
                if !unassigned.isEmpty {
                    throw WireError.unavailable("no worker offers \(unassigned.joined(separator: ", ")) at \(endpoint) after \(timeout) s")
                }
                throw WireError.timeout("\(waiting.count) job(s) for \(Set(waiting.map(\.service)).sorted().joined(separator: ", ")) unanswered after \(timeout) s")
            }
            if now < spinUntil {
                try pump(timeout: 0)
                sched_yield()
            } else {
                try pump(timeout: min(deadline - now, policy.interval))
            }
        }
        var out: [UInt64: Reply] = [:]
        for id in ids { out[id] = completed.removeValue(forKey: id) }
        return out
    }

    /// Submits one job and waits for its reply; an error reply becomes `WireError.remote`.
    public func call(_ message: Message, service: String, pinnedTo: WorkerID? = nil, timeout: Double) throws -> (Message, WorkerID?) {
        let id = try submit(message, service: service, pinnedTo: pinnedTo)
        guard let reply = try collect([id], timeout: timeout)[id] else { throw WireError.unavailable("job \(id) lost") }
        if reply.message.kind == .error { throw WireError.remote(reply.message.payloadText) }
        return (reply.message, reply.worker)
    }

    /// Every reply that has arrived since the last call, for event-loop callers (the coordinator)
    /// that keep many jobs in flight instead of waiting on a few with `collect`.
    public func takeCompleted() -> [(job: UInt64, reply: Reply)] {
        defer { completed.removeAll() }
        return completed.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Drops jobs whose answer is no longer wanted (their request failed); a late reply is ignored.
    public func forget(_ ids: [UInt64]) {
        for id in ids {
            if let w = jobs[id]?.worker { workers[w]?.inFlight.remove(id) }
            jobs[id] = nil
            completed[id] = nil
        }
    }

    /// Services that have jobs waiting because no live worker offers them.
    public var starvedServices: [String] {
        Set(jobs.values.filter { $0.worker == nil }.map(\.service)).sorted()
    }

    /// Handles whatever arrives within `timeout` seconds (at least one poll), then heartbeats and expiry.
    public func pump(timeout: Double) throws {
        if try Poller.wait([socket], timeout: timeout).first == true {
            // Drain everything queued so heartbeats that piled up while we were busy count first.
            repeat {
                let frames = try socket.receiveNow()
                try handle(frames)
            } while try Poller.wait([socket], timeout: 0).first == true
        }
        try housekeeping()
    }

    /// Counts for a stats reply: completed jobs per worker name and the live workers.
    public func statsCounters() -> [String: Int] {
        var out: [String: Int] = [:]
        for (k, v) in servedByName { out["served/\(k)"] = v }
        out["workers"] = workers.count
        return out
    }

    /// Tells every worker we are going away (they reconnect and wait for a new dispatcher).
    public func close() {
        socket.close()
    }

    // MARK: - internals

    private func housekeeping() throws {
        let now = monotonicSeconds()
        if now - lastHeartbeat >= policy.interval {
            lastHeartbeat = now
            for id in Array(workers.keys) {
                do { try socket.send(Message(.heartbeat), to: id) } catch { try dropWorker(id, reason: "unreachable (\(error))") }
            }
        }
        for (id, w) in workers where now - w.lastSeen > policy.expiry {
            try dropWorker(id, reason: "silent for \(String(format: "%.1f", now - w.lastSeen)) s")
        }
        for (id, job) in jobs where job.worker == nil && completed[id] == nil {
            try assign(id)
        }
    }

    private func dropWorker(_ id: WorkerID, reason: String) throws {
        guard let w = workers.removeValue(forKey: id) else { return }
        wireLog(name, "worker \(w.announcement.name) gone: \(reason); re-sending \(w.inFlight.count) job(s)")
        for jobID in w.inFlight {
            guard var job = jobs[jobID] else { continue }
            job.worker = nil
            if job.pinnedTo == id {
                // Sticky state (KV cache, media stream) died with the worker: fail the job.
                jobs[jobID] = nil
                var reply = Message.errorReply(to: job.message, "worker \(w.announcement.name) serving \(job.service) died with this job's state")
                reply.requestID = job.callerRequestID
                completed[jobID] = Reply(message: reply, worker: nil, stateLost: true)
                continue
            }
            jobs[jobID] = job
            try assign(jobID)
        }
    }

    private func assign(_ jobID: UInt64) throws {
        guard var job = jobs[jobID], job.worker == nil else { return }
        if job.attempts >= maxAttempts {
            jobs[jobID] = nil
            var reply = Message.errorReply(to: job.message, "\(job.service): gave up after \(job.attempts) workers failed")
            reply.requestID = job.callerRequestID
            completed[jobID] = Reply(message: reply, worker: nil)
            return
        }
        let candidates: [WorkerID]
        if let pin = job.pinnedTo {
            guard workers[pin] != nil else {
                jobs[jobID] = nil
                var reply = Message.errorReply(to: job.message, "the \(job.service) worker holding this request's state is gone")
                reply.requestID = job.callerRequestID
                completed[jobID] = Reply(message: reply, worker: nil, stateLost: true)
                return
            }
            candidates = [pin]
        } else {
            candidates = workers(offering: job.services)
        }
        guard let chosen = candidates.min(by: { a, b in
            let wa = workers[a]!, wb = workers[b]!
            if wa.inFlight.count != wb.inFlight.count { return wa.inFlight.count < wb.inFlight.count }
            return wa.lastAssigned < wb.lastAssigned
        }) else { return }  // stays queued until a worker offering the service joins
        do {
            try socket.send(job.message, to: chosen)
        } catch {
            try dropWorker(chosen, reason: "send failed (\(error))")
            try assign(jobID)
            return
        }
        job.worker = chosen
        job.attempts += 1
        jobs[jobID] = job
        workers[chosen]?.inFlight.insert(jobID)
        workers[chosen]?.lastAssigned = monotonicSeconds()
    }

    private func handle(_ frames: [InFrame]) throws {
        guard frames.count >= 2 else { return }
        let id = frames[0].bytes
        let message: Message
        do {
            message = try Message(frames: Array(frames.dropFirst()), limits: limits)
        } catch {
            wireLog(name, "rejected a message from a worker: \(error)")
            try? socket.send(Message.errorReply(to: nil, "\(error)"), to: id)
            return
        }
        let now = monotonicSeconds()
        workers[id]?.lastSeen = now
        switch message.kind {
        case .ready:
            do {
                let ann = try message.decodePayload(WorkerAnnouncement.self)
                let isNew = workers[id] == nil
                workers[id] = WorkerState(announcement: ann, lastSeen: now, inFlight: workers[id]?.inFlight ?? [])
                if isNew { wireLog(name, "worker \(ann.name) joined (\(ann.services.count) service(s))") }
                for (jid, job) in jobs where job.worker == nil { try assign(jid) }
            } catch {
                wireLog(name, "rejected READY: \(error)")
                try? socket.send(Message.errorReply(to: message, "\(error)"), to: id)
            }
        case .heartbeat:
            if workers[id] == nil { try? socket.send(Message(.disconnect), to: id) }  // please re-announce
        case .disconnect:
            try dropWorker(id, reason: "left")
        default:
            guard let job = jobs[message.requestID], job.worker == id else {
                if message.kind == .error { wireLog(name, "error from worker: \(message.payloadText)") }
                return  // a late reply to a job already re-sent elsewhere
            }
            workers[id]?.inFlight.remove(message.requestID)
            workers[id]?.served += 1
            if let w = workers[id] { servedByName[w.announcement.name, default: 0] += 1 }
            var reply = message
            reply.requestID = job.callerRequestID
            completed[message.requestID] = Reply(message: reply, worker: id)
            jobs[message.requestID] = nil
        }
    }
}
