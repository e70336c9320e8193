import Foundation
import Stages
import TestSupport
import Testing
import Wire

@Suite(.serialized) struct PipelineTests {
    @Test func distributedAnswersEqualUnimoeRun() throws {
        // `unimoe run` through the real CLI for the text-only request; the others in-process.
        let cli = try Binaries.unimoe(["run", "--model", modelDir, "--max-new-tokens", "10", "--json", textOnly.0.question])
        #expect(cli.status == 0, "\(cli.stderr)")
        let cliIDs = (try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as? [String: Any])?["ids"] as? [Int]
        let local = try LocalPipeline(modelDirectory: modelDir)
        let want = try [textOnly, imageText, videoAudioText].map { try runInProcess(local, $0) }
        #expect(cliIDs == want[0])

        let c = try Cluster()
        defer { c.stop() }
        try c.startAll()
        let client = try c.client()
        for (r, w) in zip([textOnly, imageText, videoAudioText], want) {
            var streamed: [Int] = []
            let got = try client.ask(r.0, files: r.1) { id, _ in streamed.append(id) }
            #expect(got.ids == w, "\(r.0.question)")
            #expect(streamed == got.ids)
            #expect(got.timings["first_token"] != nil)
        }
        // And `unimoe ask` itself.
        let ask = try Binaries.unimoe(["ask", "--pipeline", c.pipeline, "--image", sample("picture.png"), "--max-new-tokens", "10",
                                       "--json", imageText.0.question])
        #expect(ask.status == 0, "\(ask.stderr)")
        let askIDs = (try JSONSerialization.jsonObject(with: Data(ask.stdout.utf8)) as? [String: Any])?["ids"] as? [Int]
        #expect(askIDs == want[1])
    }

    @Test func replicasShareWorkAndALateExpertJoins() throws {
        let local = try LocalPipeline(modelDirectory: modelDir)
        let want = try runInProcess(local, imageText)
        let c = try Cluster()
        defer { c.stop() }
        try c.startAll(expertGroups: [])
        try c.start("expert", ["--group", "0"], name: "a1")
        try c.start("expert", ["--group", "0"], name: "a2")
        // Group 1 is missing: the request waits for it; a late worker then joins and is used.
        let late = ResultBox(count: 1)
        let client = try c.client()
        let endpoint = c.frontend
        let waiter = Thread {
            do { late.set(0, .success(try Cluster.clientFor(endpoint).ask(imageText.0, files: imageText.1).ids)) } catch { late.set(0, .failure(error)) }
        }
        waiter.start()
        Thread.sleep(forTimeInterval: 1.0)
        try c.start("expert", ["--group", "1"], name: "late")
        for _ in 0..<3 { #expect(try client.ask(imageText.0, files: imageText.1).ids == want) }
        var waited = 0.0
        while late.get(0) == nil && waited < 30 { Thread.sleep(forTimeInterval: 0.1); waited += 0.1 }
        #expect((try? late.get(0)?.get()) == want)
        let stats = try client.stats()
        #expect(stats["router/served/a1", default: 0] > 0, "\(stats)")
        #expect(stats["router/served/a2", default: 0] > 0, "\(stats)")
        #expect(stats["router/served/late", default: 0] > 0, "\(stats)")
    }

    @Test func concurrentRequestsAnswerAsAlone() throws {
        let local = try LocalPipeline(modelDirectory: modelDir)
        let shapes = [textOnly, imageText, videoAudioText]
        let requests: [(AskRequest, [String])] = (0..<8).map { i in
            var r = shapes[i % 3]
            r.0.question += " (\(i))"
            r.0.maxNewTokens = 6 + i % 3
            return r
        }
        let want = try requests.map { try runInProcess(local, $0) }
        let c = try Cluster()
        defer { c.stop() }
        try c.startAll()
        _ = try c.client().ask(textOnly.0, files: [])  // warm-up: every worker joined
        let results = ResultBox(count: requests.count)
        let endpoint = c.frontend
        DispatchQueue.concurrentPerform(iterations: requests.count) { i in
            do { results.set(i, .success(try Cluster.clientFor(endpoint).ask(requests[i].0, files: requests[i].1).ids)) } catch { results.set(i, .failure(error)) }
        }
        for i in 0..<requests.count {
            switch results.get(i) {
            case .success(let ids)?: #expect(ids == want[i], "request \(i)")
            case .failure(let e)?: Issue.record("request \(i) failed: \(e)")
            case nil: Issue.record("request \(i) gave no result")
            }
        }
    }
}

extension Cluster {
    static func clientFor(_ endpoint: String) throws -> AskClient { try AskClient(endpoint: endpoint, timeout: 60) }
}

/// Results written by concurrent requests. `@unchecked Sendable`: guarded by `lock`.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Result<[Int], Error>?]
    init(count: Int) { items = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<[Int], Error>) { lock.lock(); items[i] = r; lock.unlock() }
    func get(_ i: Int) -> Result<[Int], Error>? { lock.lock(); defer { lock.unlock() }; return items[i] }
}
