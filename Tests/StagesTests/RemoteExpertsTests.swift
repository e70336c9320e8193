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
func startExpertWorker(_ endpoint: String, experts: [Int], layers: [Int]? = nil, name: String, stop: StopFlag,
                       directory: String = unimoeDir) {
    let t = Thread {
        do {
            let local = try LocalExperts.load(directory: directory, layers: layers, experts: experts)
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
        let deadline = monotonicSeconds() + 10
        while d.workers.count < 2 && monotonicSeconds() < deadline { try remote.pump(timeout: 0.05) }
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
        // One message per worker per layer, carrying both of its experts' rows.
        let counts = remote.counters()
        #expect(counts["served/e01"] == 2 && counts["served/e23"] == 2, "\(counts)")
        #expect(remote.timings.entries["expert_messages"]?.count == 4)
    }

    /// A worker answers a share naming an expert it does not hold, or mismatched lists, with an
    /// error reply for that job only, and goes on answering good ones.
    @Test func badExpertSharesGetErrorReplies() throws {
        let service = ExpertService(experts: try LocalExperts.load(directory: unimoeDir, layers: [0], experts: [0, 1]))
        let hidden = service.experts.hidden
        let rows = try randomRows(2, hidden, seed: 3)
        var noList = Message(.expertForward, requestID: 1, layer: 0, expert: 0, tensors: [rows, rows])
        noList.payload = nil
        let replies = service.handle([
            try Message.expertForward(layer: 0, experts: [0, 5], rows: [rows, rows]),
            noList,
            try Message.expertForward(layer: 0, experts: [1, 0], rows: [rows, try randomRows(1, hidden, seed: 4)]),
            try Message.expertForward(layer: 0, experts: [0], rows: [try randomRows(1, hidden + 1, seed: 5)]),
        ])
        #expect(replies.map(\.kind) == [.error, .error, .expertResult, .error])
        #expect(replies[0].payloadText.contains("5"), "\(replies[0].payloadText)")
        let want = try service.experts.run(layer: 0, batches: [ExpertBatch(expert: 1, rows: rows),
                                                               ExpertBatch(expert: 0, rows: try randomRows(1, hidden, seed: 4))])
        #expect(replies[2].tensors.map { $0.toArray() } == want.map { $0.toArray() })
    }

    /// Qwen2-MoE: the workers serve the routed experts; the shared expert and its gate run with the trunk.
    @Test func qwen2MoeTrunkWithRemoteRoutedExperts() throws {
        let dir = Fixtures.path("lm/qwen2-moe")
        let local = try LanguageModel.load(directory: dir)
        let trunk = try LanguageModel.load(directory: dir, experts: .remote)
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: quick, name: "router-test")
        let remote = RemoteExperts(dispatcher: d, timeout: 10)
        let stop = StopFlag()
        defer { stop.set() }
        startExpertWorker(d.endpoint, experts: [0, 1, 2, 3], name: "q0", stop: stop, directory: dir)
        startExpertWorker(d.endpoint, experts: [4, 5, 6, 7], name: "q1", stop: stop, directory: dir)
        let ids = [28, 49, 59, 118, 69, 67, 60, 3, 78, 32]
        #expect(try trunk.logits(ids: ids, experts: remote).toArray() == local.logits(ids: ids).toArray())
    }

    @Test func trunkWithRemoteExpertsGivesIdenticalLogits() throws {
        let local = try LanguageModel.load(directory: unimoeDir)
        let trunk = try LanguageModel.load(directory: unimoeDir, experts: .remote)
        let d = try Dispatcher(bind: "tcp://127.0.0.1:*", policy: quick, name: "router-test")
        let remote = RemoteExperts(dispatcher: d, timeout: 10)
        let stop = StopFlag()
        defer { stop.set() }
        // Expert 1 has two replicas; the others one each, spread over three workers.
        startExpertWorker(d.endpoint, experts: [0, 1], name: "a", stop: stop)
        startExpertWorker(d.endpoint, experts: [1, 2], name: "b", stop: stop)
        startExpertWorker(d.endpoint, experts: [3], name: "c", stop: stop)
        let ids = [1, 17, 300, 42, 5, 9, 88, 250, 3, 77]
        let want = try local.logits(ids: ids).toArray()
        let got = try trunk.logits(ids: ids, experts: remote).toArray()
        #expect(got == want)
        // A batched step of two sequences (one prefill, one decode) matches too.
        let c1 = local.makeCache(), c2 = local.makeCache(), r1 = trunk.makeCache(), r2 = trunk.makeCache()
        _ = try local.forward([SequenceStep(cache: c2, embeddings: local.embed(ids: [1, 2, 3]))], allPositions: false)
        _ = try trunk.forward([SequenceStep(cache: r2, embeddings: trunk.embed(ids: [1, 2, 3]))], experts: remote, allPositions: false)
        let wantB = try local.forward([SequenceStep(cache: c1, embeddings: local.embed(ids: ids)),
                                       SequenceStep(cache: c2, embeddings: local.embed(ids: [4]))], allPositions: false)
        let gotB = try trunk.forward([SequenceStep(cache: r1, embeddings: trunk.embed(ids: ids)),
                                      SequenceStep(cache: r2, embeddings: trunk.embed(ids: [4]))], experts: remote, allPositions: false)
        #expect(zip(wantB, gotB).allSatisfy { $0.toArray() == $1.toArray() })
        #expect(remote.timings.entries["moe_round_trip"]?.count ?? 0 >= 4)
        // Multi-row round trips stay out of the one-row figures; a lone decode step adds one per MoE layer.
        #expect(remote.timings.entries["moe_one_row_round_trip"] == nil)
        let before = remote.timings.entries["moe_round_trip"]?.count ?? 0
        _ = try trunk.forward([SequenceStep(cache: r2, embeddings: trunk.embed(ids: [5]))], experts: remote, allPositions: false)
        let layers = (remote.timings.entries["moe_round_trip"]?.count ?? 0) - before
        #expect(layers > 0 && remote.timings.entries["moe_one_row_round_trip"]?.count == layers)
        #expect(remote.timings.entries["moe_one_row_overhead"]?.count == layers)
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
