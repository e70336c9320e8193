import Foundation
import Stages
import TestSupport
import Testing
import Wire

/// CURVE on a tcp deployment: the pipeline file's keys (from `unimoe keys`) authenticate and
/// encrypt every tcp socket; a client or worker whose key is not allowed, or that speaks no CURVE
/// at all, is refused (and the refusal logged), while the authorised ones get the usual answer.
@Suite(.serialized) struct CurveTests {
    /// `count` tcp ports free right now on 127.0.0.1.
    func freePorts(_ count: Int) throws -> [Int] {
        let sockets = try (0..<count).map { _ in try Socket(.router) }
        defer { for s in sockets { s.close() } }
        return try sockets.map { s in
            try s.bind("tcp://127.0.0.1:*")
            return Int(try s.lastEndpoint().split(separator: ":").last ?? "") ?? 0
        }
    }

    func writePipeline(_ c: Cluster, name: String, ports: [Int], curve: CurveSettings?) throws -> String {
        var cfg = PipelineConfig(model: modelDir, frontend: "tcp://127.0.0.1:\(ports[0])", backend: "tcp://127.0.0.1:\(ports[1])",
                                 experts: "tcp://127.0.0.1:\(ports[2])", heartbeat: HeartbeatPolicy(interval: 0.5, liveness: 6),
                                 requestTimeout: 60, expertTimeout: 30, expertGroups: [[0, 1], [2, 3]])
        cfg.curve = curve
        let path = c.dir + "/\(name).json"
        try JSONEncoder().encode(cfg).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func onlyAllowedKeysGetIn() throws {
        let keys = try Binaries.unimoe(["keys"])
        #expect(keys.status == 0, "\(keys.stderr)")
        let curve = try JSONDecoder().decode([String: CurveSettings].self, from: Data(keys.stdout.utf8))["curve"]
        let good = try #require(curve)
        #expect(good.allow == [good.clientPublic])
        let stranger = try CurveKeys.pair()
        var bad = good
        bad.clientPublic = stranger.public
        bad.clientSecret = stranger.secret

        let c = try Cluster()
        defer { c.stop() }
        let ports = try freePorts(3)
        let secured = try writePipeline(c, name: "secured", ports: ports, curve: good)
        let intruding = try writePipeline(c, name: "intruding", ports: ports, curve: bad)
        let open = try writePipeline(c, name: "open", ports: ports, curve: nil)
        try c.start("coordinator", name: "coordinator", pipeline: secured)
        try c.start("decode", name: "decode", pipeline: secured)
        try c.start("encode", ["--modality", "image,video,audio"], name: "encode", pipeline: secured)
        try c.start("connect", ["--modality", "image,video,audio"], name: "connect", pipeline: secured)
        try c.start("router", name: "router", pipeline: secured)
        try c.start("expert", ["--group", "0"], name: "expert0", pipeline: secured)
        try c.start("expert", ["--group", "1"], name: "expert1", pipeline: secured)

        let want = try runInProcess(try LocalPipeline(modelDirectory: modelDir), imageText)
        // `unimoe ask` gives a coordinator 2 s to answer its probe: let this one start first.
        #expect(c.waitForLog("coordinator", "clients via"), "\(c.log("coordinator"))")
        func ask(_ pipeline: String) throws -> ProcessResult {
            try Binaries.unimoe(["ask", "--pipeline", pipeline, "--image", sample("picture.png"), "--max-new-tokens", "10", "--json",
                                 "--timeout", "60", imageText.0.question], timeout: 90)
        }
        let ok = try ask(secured)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect((try? JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as? [String: Any])?["ids"] as? [Int] == want)

        // A client with a key the coordinator does not allow, and one with no CURVE at all.
        for (pipeline, what) in [(intruding, "an unknown key"), (open, "no CURVE")] {
            let t0 = monotonicSeconds()
            let refused = try ask(pipeline)
            #expect(refused.status == 1, "\(what): \(refused.stdout)")
            #expect(refused.stderr.contains("no coordinator answers"), "\(what): \(refused.stderr)")
            #expect(monotonicSeconds() - t0 < 10)
        }
        #expect(c.log("coordinator").contains("refused a CURVE peer from 127.0.0.1: public key \(stranger.public)"),
                "\(c.log("coordinator").suffix(1500))")
        #expect(c.log("coordinator").contains("refused a peer on tcp://127.0.0.1:\(ports[0])"), "\(c.log("coordinator").suffix(1500))")

        // A worker with an unknown key never joins: the router refuses it, and answers stay the same.
        try c.start("expert", ["--group", "1"], name: "intruder", pipeline: intruding)
        Thread.sleep(forTimeInterval: 1.5)
        #expect(c.log("router").contains("refused a CURVE peer"), "\(c.log("router").suffix(1500))")
        #expect(!c.log("router").contains("intruder joined"))
        let again = try ask(secured)
        #expect(again.status == 0, "\(again.stderr)")
        #expect((try? JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])?["ids"] as? [Int] == want)

        // A pipeline file with a broken key is refused before any socket opens.
        var broken = good
        broken.serverSecret = "not a key"
        let brokenFile = try writePipeline(c, name: "broken", ports: ports, curve: broken)
        let r = try ask(brokenFile)
        #expect(r.status == 1)
        #expect(r.stderr.contains("curve.server_secret is not a CURVE key"), "\(r.stderr)")
    }
}
