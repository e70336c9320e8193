import Foundation
import Tensor
import Testing
@testable import Wire

let fast = HeartbeatPolicy(interval: 0.1, liveness: 5)

/// Doubles tensor 0 and says who answered in the payload.
final class Doubler: WorkerHandler {
    let name: String
    init(name: String) { self.name = name }
    func handle(_ jobs: [Message]) -> [Message] {
        jobs.map { job in
            guard let t = job.tensors.first else { return Message.errorReply(to: job, "\(name): no tensor") }
            let out = (try? Tensor(shape: t.shape, values: t.toArray().map { $0 * 2 })) ?? t
            return Message(.expertResult, requestID: job.requestID, layer: job.layer, expert: job.expert,
                           tensors: [out], payload: Data(name.utf8))
        }
    }
}

/// Runs a `ServiceWorker` on its own thread until `stop` is set.
func startWorker(_ endpoint: String, name: String, services: [String], stop: StopFlag, inline: Bool = false) {
    let t = Thread {
        let w = ServiceWorker(endpoint: endpoint, announcement: WorkerAnnouncement(role: "test", services: services, name: name),
                              policy: fast)
        w.computeInline = inline
        do { try w.run(stop: stop) { Doubler(name: name) } } catch { wireLog(name, "worker failed: \(error)") }
    }
    t.start()
}

func job(_ values: [Float], layer: Int32 = 0, expert: Int32 = 0) throws -> Message {
    Message(.expertForward, requestID: 77, layer: layer, expert: expert, tensors: [try Tensor(shape: [1, values.count], values: values)])
}

@Suite(.serialized) struct DispatcherTests {
    @Test func replicasShareTheLoadAndAnswersAreRight() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast, name: "test-dispatcher")
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "w1", services: ["expert/0/0"], stop: stop)
        startWorker(d.endpoint, name: "w2", services: ["expert/0/0", "expert/0/1"], stop: stop)
        var who: [String: Int] = [:]
        for i in 0..<10 {
            // Two jobs at once so both replicas get one even before they have history.
            let a = try d.submit(try job([Float(i), 1]), service: "expert/0/0")
            let b = try d.submit(try job([Float(i), 2]), service: "expert/0/0")
            let replies = try d.collect([a, b], timeout: 5)
            #expect(replies[a]?.message.tensors[0].toArray() == [Float(2 * i), 2])
            #expect(replies[b]?.message.tensors[0].toArray() == [Float(2 * i), 4])
            #expect(replies[a]?.message.requestID == 77)
            for r in replies.values { who[r.message.payloadText, default: 0] += 1 }
        }
        #expect(who["w1", default: 0] > 0 && who["w2", default: 0] > 0, "\(who)")
        let (only, _) = try d.call(try job([3], expert: 1), service: "expert/0/1", timeout: 5)
        #expect(only.payloadText == "w2")
        #expect(d.statsCounters()["served/w1", default: 0] + d.statsCounters()["served/w2", default: 0] == 21)
    }

    @Test func inlineWorkerAnswersJobsAndStats() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast, name: "test-dispatcher")
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "inline", services: ["expert/0/0"], stop: stop, inline: true)
        let a = try d.submit(try job([1, 2]), service: "expert/0/0")
        let b = try d.submit(try job([3]), service: "expert/0/0")
        let replies = try d.collect([a, b], timeout: 5)
        #expect(replies[a]?.message.tensors[0].toArray() == [2, 4])
        #expect(replies[b]?.message.tensors[0].toArray() == [6])
        #expect(replies[b]?.message.payloadText == "inline")
        let (stats, _) = try d.call(Message(.stats), service: "expert/0/0", timeout: 5)
        #expect(stats.kind == .statsReply)
        #expect(stats.payloadText.contains("\"served\":2"), "\(stats.payloadText)")
    }

    @Test func jobsWaitForALateWorker() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast)
        let stop = StopFlag()
        defer { stop.set() }
        let id = try d.submit(try job([5]), service: "expert/1/0")
        // Nobody offers the service yet: a short wait fails and names the service.
        let t0 = monotonicSeconds()
        #expect(throws: WireError.self) { _ = try d.collect([id], timeout: 0.3) }
        #expect(monotonicSeconds() - t0 < 2)
        let id2 = try d.submit(try job([5]), service: "expert/1/0")
        startWorker(d.endpoint, name: "late", services: ["expert/1/0"], stop: stop)
        let r = try d.collect([id2], timeout: 5)
        #expect(r[id2]?.message.tensors[0].toArray() == [10])
    }

    @Test func workerStartedBeforeTheDispatcherJoins() throws {
        // Reserve a port, free it, start the worker first, then bind the dispatcher there.
        let probe = try Socket(.router)
        try probe.bind("tcp://127.0.0.1:*")
        let ep = try probe.lastEndpoint()
        probe.close()
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(ep, name: "early", services: ["decode"], stop: stop)
        Thread.sleep(forTimeInterval: 0.3)
        let d = try Dispatcher(bind: ep, policy: fast)
        let (r, _) = try d.call(try job([1]), service: "decode", timeout: 5)
        #expect(r.tensors[0].toArray() == [2])
    }

    /// closing: the zombie's connection drops (crash); otherwise it hangs silently (frozen process).
    @Test(arguments: [true, false]) func deadWorkersJobIsResentToAReplica(closing: Bool) throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast, name: "resend")
        // A worker that takes a job and dies without answering (no reply, no heartbeat).
        let zombie = try Socket(.dealer)
        try zombie.connect(d.endpoint)
        try zombie.send(try Message.json(.ready, WorkerAnnouncement(role: "test", services: ["expert/2/0"], name: "zombie")))
        // Let the dispatcher learn it before the healthy replica joins, so the job goes to the zombie.
        try d.pump(timeout: 0.2)
        #expect(d.workers(offering: "expert/2/0").count == 1)
        let id = try d.submit(try job([4]), service: "expert/2/0")
        var got: Message?
        while got == nil, let frames = try zombie.receive(timeout: 2) {
            let m = try Message(frames: frames)
            if m.kind == .expertForward { got = m }  // skip heartbeats
        }
        #expect(got != nil, "zombie got no job")
        if closing { zombie.close() }
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "healthy", services: ["expert/2/0"], stop: stop)
        let t0 = monotonicSeconds()
        let r = try d.collect([id], timeout: 5)
        #expect(r[id]?.message.payloadText == "healthy")
        #expect(r[id]?.message.tensors[0].toArray() == [8])
        #expect(monotonicSeconds() - t0 < 3)
        #expect(d.workers.values.allSatisfy { $0.announcement.name != "zombie" })
    }

    @Test func workerRejectsMalformedMessagesAndStaysUp() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast)
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "sturdy", services: ["expert/0/0"], stop: stop)
        _ = try d.call(try job([1]), service: "expert/0/0", timeout: 5)
        guard let wid = d.workers(offering: "expert/0/0").first else { Issue.record("no worker"); return }
        // Garbage straight through the dispatcher's socket: bad magic, then a lying frame count.
        var bad = Message(.expertForward, requestID: 1234, tensors: [try Tensor(shape: [2], values: [1, 2])]).frames()
        bad.removeLast()
        try d.socket.send([.bytes(wid), .bytes([1, 2, 3, 4, 5])])
        try d.socket.send([.bytes(wid)] + bad)
        // Errors come back as error replies to unknown jobs (logged); the worker then still serves.
        let (r, _) = try d.call(try job([21]), service: "expert/0/0", timeout: 5)
        #expect(r.tensors[0].toArray() == [42])
    }

    @Test func errorRepliesCarryTheWorkersMessage() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast)
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "picky", services: ["x"], stop: stop)
        do {
            _ = try d.call(Message(.expertForward), service: "x", timeout: 5)
            Issue.record("expected an error reply")
        } catch let WireError.remote(text) {
            #expect(text == "picky: no tensor")
        }
    }

    @Test func statsQueryCountsServedJobs() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: fast)
        let stop = StopFlag()
        defer { stop.set() }
        startWorker(d.endpoint, name: "counted", services: ["x"], stop: stop)
        for _ in 0..<3 { _ = try d.call(try job([1]), service: "x", timeout: 5) }
        let (s, _) = try d.call(Message(.stats), service: "x", timeout: 5)
        #expect(s.kind == .statsReply)
        #expect(try s.decodePayload([String: Int].self)["served"] == 3)
    }
}
