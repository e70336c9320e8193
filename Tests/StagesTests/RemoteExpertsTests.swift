import Foundation
import Models
import Stages
import Tensor
import TestSupport
import Testing
import Wire

let quick = HeartbeatPolicy(interval: 0.1, liveness: 5)
let unimoeDir = Fixtures.path("lm/unimoe")

/// Runs an expert worker (its own thread, its own ZeroMQ socket) serving `experts` of `layers`.
func startExpertWorker(_ endpoint: String, experts: [Int], layers: [Int]? = nil, name: String, stop: StopFlag) {
    let t = Thread {
        do {
            let local = try LocalExperts.load(directory: unimoeDir, layers: layers, experts: experts)
            let ann = WorkerAnnouncement(role: "expert", services: ExpertService.services(local), name: name)
            try ServiceWorker(endpoint: endpoint, announcement: ann, policy: quick).run(stop: stop) { ExpertService(experts: local) }
        } catch {
            wireLog(name, "failed: \(error)")
        }
    }
    t.start()
}

func randomRows(_ n: Int, _ hidden: Int, seed: Int) throws -> Tensor {
    var x = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1
    let v: [Float] = (0..<(n * hidden)).map { _ in
        x = x &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: x >> 11) % 2001) / 1000 - 1
    }
    return try Tensor(shape: [n, hidden], values: v)
}

@Suite(.serialized) struct RemoteExpertsTests {
    @Test func remoteOutputsEqualLocalOnes() throws {
        let local = try LocalExperts.load(directory: unimoeDir)
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: quick, name: "router-test")
        let remote = RemoteExperts(dispatcher: d, timeout: 10)
        let stop = StopFlag()
        defer { stop.set() }
        startExpertWorker(d.endpoint, experts: [0, 1], name: "e01", stop: stop)
        startExpertWorker(d.endpoint, experts: [2, 3], name: "e23", stop: stop)
        for layer in [0, 2] {
            let batches = try (0..<4).map { e in ExpertBatch(expert: e, rows: try randomRows(e + 2, local.hidden, seed: layer * 10 + e)) }
            let want = try local.run(layer: layer, batches: batches)
            let got = try remote.run(layer: layer, batches: batches)
            #expect(got.count == 4)
            for (g, w) in zip(got, want) {
                #expect(g.shape == w.shape)
                #expect(g.toArray() == w.toArray())
            }
        }
        let counts = remote.counters()
        #expect(counts["served/e01"] == 4 && counts["served/e23"] == 4, "\(counts)")
    }

    @Test func missingExpertIsAnErrorNamingIt() throws {
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: quick)
        let remote = RemoteExperts(dispatcher: d, timeout: 0.5)
        let stop = StopFlag()
        defer { stop.set() }
        startExpertWorker(d.endpoint, experts: [0], layers: [0], name: "only0", stop: stop)
        do {
            _ = try remote.run(layer: 2, batches: [ExpertBatch(expert: 1, rows: try randomRows(1, 64, seed: 1))])
            Issue.record("expected an error")
        } catch let WireError.unavailable(text) {
            #expect(text.contains("expert/2/1"))
        }
    }
}
