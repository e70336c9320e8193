import Foundation
import Tensor

/// The service behind a worker: answers jobs on the worker's compute thread. Created on that
/// thread and used only there, so it needs no locking of its own.
public protocol WorkerHandler: AnyObject {
    /// Answers jobs that arrived together (a batch); one reply per job, in order. Failures are
    /// error replies (`Message.errorReply`), never thrown: the worker stays up.
    func handle(_ jobs: [Message]) -> [Message]
    /// Called when no job arrived for a heartbeat interval (a router pumps its own dispatcher here).
    func idle()
    /// Counters for a `stats` query.
    func stats() -> [String: Int]
}

extension WorkerHandler {
    public func idle() {}
    public func stats() -> [String: Int] { [:] }
}

/// Jobs in, replies out, between the I/O thread and the compute thread.
///
/// `@unchecked Sendable`: every field is guarded by `cond`.
final class WorkQueue: @unchecked Sendable {
    private let cond = NSCondition()
    private var jobs: [Message] = []
    private var replies: [Message] = []
    private var closed = false

    func push(_ m: Message) { cond.lock(); jobs.append(m); cond.signal(); cond.unlock() }

    /// Every queued job (waiting at most `timeout`); nil once closed.
    func takeJobs(timeout: Double) -> [Message]? {
        cond.lock(); defer { cond.unlock() }
        if jobs.isEmpty && !closed { _ = cond.wait(until: Date(timeIntervalSinceNow: timeout)) }
        if closed { return nil }
        defer { jobs.removeAll() }
        return jobs
    }

    func pushReplies(_ r: [Message]) { cond.lock(); replies.append(contentsOf: r); cond.unlock() }

    func takeReplies() -> [Message] {
        cond.lock(); defer { cond.unlock() }
        defer { replies.removeAll() }
        return replies
    }

    func close() { cond.lock(); closed = true; cond.broadcast(); cond.unlock() }
}

/// The worker side of the load-balancing pattern: a DEALER that connects to a dispatcher,
/// announces READY with its services, heartbeats, reconnects after the dispatcher falls silent
/// (so dispatcher and worker may start in any order), validates every message (error reply on a
/// malformed one, then carries on) and runs the handler on a separate compute thread so heartbeats
/// keep flowing during long computations.
public final class ServiceWorker {
    public let endpoint: String
    public let announcement: WorkerAnnouncement
    public let policy: HeartbeatPolicy
    public var limits = WireLimits.standard
    /// Longest pause between reconnect attempts when no dispatcher answers.
    public var maxReconnectDelay = 2.0
    /// Run the handler on the socket thread itself, with no compute thread: for services whose
    /// jobs take milliseconds (expert workers), where the two thread hand-offs per job (each a
    /// wake-up of tens of µs, much more when the cores are busy) cost more than they buy.
    /// Heartbeats then wait while a job runs, so keep it off for long jobs (encoders, prefill).
    public var computeInline = false

    public init(endpoint: String, announcement: WorkerAnnouncement, policy: HeartbeatPolicy = .standard) {
        self.endpoint = endpoint
        self.announcement = announcement
        self.policy = policy
    }

    /// Builds the handler on the compute thread, then serves until `stop` is set. Throws when the
    /// handler cannot be built (e.g. weights missing) or the socket cannot be set up.
    public func run(stop: StopFlag, makeHandler: @escaping @Sendable () throws -> any WorkerHandler) throws {
        if computeInline { return try runInline(stop: stop, handler: try makeHandler()) }
        let who = announcement.name
        let queue = WorkQueue()
        let bell = try Socket(.pair)
        let bellEndpoint = "inproc://worker-bell-\(UUID().uuidString)"
        try bell.bind(bellEndpoint)
        let started = StartSignal()
        let policy = self.policy
        let thread = Thread {
            do {
                let handler = try makeHandler()
                let ring = try Socket(.pair)
                try ring.connect(bellEndpoint)
                started.done(nil)
                var served = 0
                while let jobs = queue.takeJobs(timeout: policy.interval) {
                    if jobs.isEmpty { handler.idle(); continue }
                    queue.pushReplies(Self.answer(jobs, handler, who: who, served: &served))
                    try? ring.send([.bytes([1])])
                }
                ring.close()
            } catch {
                started.done("\(error)")
            }
        }
        thread.stackSize = 16 << 20
        thread.start()
        if let failure = started.wait() {
            queue.close()
            throw WireError.unavailable("\(who) could not start: \(failure)")
        }
        defer { queue.close() }

        let link = try DispatcherLink(worker: self)
        while !stop.isSet {
            let ready = try Poller.wait([link.dealer, bell], timeout: policy.interval)
            let now = monotonicSeconds()
            if ready[1] {
                while try Poller.wait([bell], timeout: 0).first == true { _ = try bell.receiveNow() }
                link.send(queue.takeReplies())
            }
            if ready[0] { try link.drain(now: now) { queue.push($0) } }
            try link.keepAlive(now: now)
        }
        link.close()
        bell.close()
    }

    /// Answers one batch: the handler's replies to the work, then any stats queries.
    static func answer(_ jobs: [Message], _ handler: any WorkerHandler, who: String, served: inout Int) -> [Message] {
        let work = jobs.filter { $0.kind != .stats }
        var replies = work.isEmpty ? [] : handler.handle(work)
        if replies.count != work.count {
            replies = work.map { Message.errorReply(to: $0, "\(who): handler answered \(replies.count) of \(work.count) jobs") }
        }
        served += work.count
        Parallel.park()  // idle until the next job: the pool's spinners give their cores back
        for s in jobs where s.kind == .stats {
            var counters = handler.stats()
            counters["served"] = served
            let reply = (try? Message.json(.statsReply, counters, requestID: s.requestID)) ?? Message.errorReply(to: s, "stats")
            replies.append(reply)
        }
        return replies
    }

    /// `run` with `computeInline`: one thread receives, computes and replies.
    private func runInline(stop: StopFlag, handler: any WorkerHandler) throws {
        let who = announcement.name
        var served = 0
        let link = try DispatcherLink(worker: self)
        while !stop.isSet {
            let ready = try Poller.wait([link.dealer], timeout: policy.interval)
            var now = monotonicSeconds()
            var jobs: [Message] = []
            if ready[0] {
                try link.drain(now: now) { jobs.append($0) }
            } else {
                handler.idle()
            }
            if !jobs.isEmpty {
                link.send(Self.answer(jobs, handler, who: who, served: &served))
                now = monotonicSeconds()
            }
            try link.keepAlive(now: now)
        }
        link.close()
    }

    fileprivate func connectAndAnnounce() throws -> Socket {
        let s = try Socket(.dealer)
        s.sendTimeout = 5
        try s.connect(endpoint)
        try s.send(try Message.json(.ready, announcement))
        return s
    }
}

/// A worker's connection to its dispatcher, shared by the threaded and the inline loops: drains and
/// validates what arrived (control messages handled here, work handed on), heartbeats, and
/// reconnects after the dispatcher falls silent. Used by one thread only.
private final class DispatcherLink {
    private unowned let worker: ServiceWorker
    private(set) var dealer: Socket
    private var lastHeard: Double
    private var lastBeat: Double
    private var reconnectDelay: Double
    private var who: String { worker.announcement.name }

    init(worker: ServiceWorker) throws {
        self.worker = worker
        dealer = try worker.connectAndAnnounce()
        lastHeard = monotonicSeconds()
        lastBeat = lastHeard
        reconnectDelay = worker.policy.interval
    }

    /// Receives everything waiting; each valid work message goes to `deliver`, a malformed one gets
    /// an error reply.
    func drain(now: Double, deliver: (Message) -> Void) throws {
        repeat {
            let frames = try dealer.receiveNow()
            lastHeard = now
            reconnectDelay = worker.policy.interval
            let message: Message
            do {
                message = try Message(frames: frames, limits: worker.limits)
            } catch {
                wireLog(who, "rejected a message: \(error)")
                try? dealer.send(Message.errorReply(to: nil, "\(who) rejected a message: \(error)").withRequestID(of: frames))
                continue
            }
            switch message.kind {
            case .heartbeat, .ready: break
            case .disconnect: try dealer.send(try Message.json(.ready, worker.announcement))
            case .error: wireLog(who, "dispatcher reported: \(message.payloadText)")
            default: deliver(message)
            }
        } while try Poller.wait([dealer], timeout: 0).first == true
    }

    func send(_ replies: [Message]) {
        for r in replies {
            do { try dealer.send(r) } catch { wireLog(who, "could not send a reply: \(error)") }
        }
    }

    /// Heartbeat when due; reconnect (with back-off) after the dispatcher's silence outlasts expiry.
    func keepAlive(now: Double) throws {
        let policy = worker.policy
        if now - lastBeat >= policy.interval {
            lastBeat = now
            try? dealer.send(Message(.heartbeat))
        }
        if now - lastHeard > max(policy.expiry, reconnectDelay) {
            wireLog(who, "no word from the dispatcher at \(worker.endpoint) for \(String(format: "%.1f", now - lastHeard)) s; reconnecting")
            dealer.close()
            dealer = try worker.connectAndAnnounce()
            lastHeard = now
            reconnectDelay = min(reconnectDelay * 2, max(worker.maxReconnectDelay, policy.expiry))
        }
    }

    func close() {
        try? dealer.send(Message(.disconnect))
        dealer.close()
    }
}

/// One-shot "the compute thread is up (or failed)" signal.
///
/// `@unchecked Sendable`: guarded by `cond`.
final class StartSignal: @unchecked Sendable {
    private let cond = NSCondition()
    private var finished = false
    private var failure: String?

    func done(_ failure: String?) { cond.lock(); finished = true; self.failure = failure; cond.broadcast(); cond.unlock() }

    func wait() -> String? {
        cond.lock(); defer { cond.unlock() }
        while !finished { cond.wait() }
        return failure
    }
}

extension Message {
    /// Copies the request id from a rejected message's header when it got that far, so the sender
    /// can match the error reply.
    public func withRequestID(of frames: [InFrame]) -> Message {
        var m = self
        if let head = frames.first, head.count >= 16 {
            var r = ByteReader(Array(head.bytes.prefix(16)))
            _ = try? r.u64()
            if let id = try? r.u64() { m.requestID = id }
        }
        return m
    }
}
