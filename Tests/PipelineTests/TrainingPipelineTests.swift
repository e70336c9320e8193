import Foundation
import XCTest
import Checkpoint
import Tensor
import TestSupport

/// Distributed training on real processes: expert-parallel (`unimoe-expert --train` workers driven
/// by `unimoe train --pipeline`) and modality data parallel (`unimoe train --world 2`) give the
/// in-process loss curve; a killed expert worker stops training with a resumable checkpoint.
final class TrainingPipelineTests: XCTestCase {
    /// A small mixed-modality data set beside the pipeline's files.
    func writeData(_ dir: String) throws -> String {
        for f in ["picture.png", "tone.wav", "clip.mp4"] {
            try? FileManager.default.copyItem(atPath: sample(f), toPath: dir + "/" + f)
        }
        let lines = [
            #"{"id": "a", "image": "picture.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour is the shape?"}, {"from": "gpt", "value": "red"}]}"#,
            #"{"id": "b", "audio": "tone.wav", "conversations": [{"from": "human", "value": "<audio>\nWhat did you hear?"}, {"from": "gpt", "value": "a tone"}]}"#,
            #"{"id": "c", "conversations": [{"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "hello world"}]}"#,
            #"{"id": "d", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\nWhere does it move?"}, {"from": "gpt", "value": "left"}]}"#,
            #"{"id": "e", "conversations": [{"from": "human", "value": "Count to three"}, {"from": "gpt", "value": "one two three"}]}"#,
        ]
        let path = dir + "/data.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func trainArgs(_ data: String, out: String, steps: Int, extra: [String] = []) -> [String] {
        ["train", "--stage", "3", "--model", modelDir, "--data", data, "--out", out, "--steps", "\(steps)", "--batch", "2",
         "--lr", "1e-2", "--seed", "7", "--threads", "1"] + extra
    }

    /// Per-step losses from OUT/loss.jsonl.
    func losses(_ out: String) throws -> [Double] {
        try String(contentsOfFile: out + "/loss.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return obj?["loss"] as? Double ?? .nan
        }
    }

    func assertSameCurve(_ a: [Double], _ b: [Double], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, "steps", file: file, line: line)
        for (i, (x, y)) in zip(a, b).enumerated() {
            XCTAssertLessThanOrEqual(abs(x - y), 1e-5 * abs(y), "step \(i + 1): \(x) vs \(y)", file: file, line: line)
        }
    }

    func assertSameModel(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let fa = try SafeTensorsFile(path: a + "/model.safetensors"), fb = try SafeTensorsFile(path: b + "/model.safetensors")
        XCTAssertEqual(fa.names, fb.names, file: file, line: line)
        for n in fa.names {
            let x = try fa.tensor(n).toArray(), y = try fb.tensor(n).toArray()
            XCTAssertLessThanOrEqual(relativeError(x, y), 1e-5, n, file: file, line: line)
        }
    }

    func background(_ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Binaries.path("unimoe"))
        p.arguments = args
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }

    func testExpertParallelTrainingGivesTheInProcessLossCurve() throws {
        let c = try Cluster(heartbeat: 0.2)
        defer { c.stop() }
        let data = try writeData(c.dir)
        let local = try Binaries.unimoe(trainArgs(data, out: c.dir + "/local", steps: 20))
        XCTAssertEqual(local.status, 0, local.stderr)
        try c.start("expert", ["--train", "--group", "0"], name: "e0")
        try c.start("expert", ["--train", "--group", "1"], name: "e1")
        let dist = try Binaries.unimoe(trainArgs(data, out: c.dir + "/dist", steps: 20, extra: ["--pipeline", c.pipeline]), timeout: 120)
        XCTAssertEqual(dist.status, 0, dist.stderr + c.log("e0") + c.log("e1"))
        assertSameCurve(try losses(c.dir + "/dist"), try losses(c.dir + "/local"))
        try assertSameModel(c.dir + "/dist", c.dir + "/local")
        // The trunk never loaded expert weights: the workers trained them.
        XCTAssertTrue(c.log("e0").contains("serving expert/0/0"), c.log("e0"))
    }

    func testKilledExpertWorkerStopsWithAResumableCheckpoint() throws {
        let c = try Cluster(heartbeat: 0.2)
        defer { c.stop() }
        let data = try writeData(c.dir)
        let steps = 300
        let reference = try Binaries.unimoe(trainArgs(data, out: c.dir + "/local", steps: steps), timeout: 120)
        XCTAssertEqual(reference.status, 0, reference.stderr)
        try c.start("expert", ["--train", "--group", "0"], name: "e0")
        try c.start("expert", ["--train", "--group", "1"], name: "e1")
        let out = c.dir + "/dist"
        let args = trainArgs(data, out: out, steps: steps, extra: ["--pipeline", c.pipeline, "--save-every", "10"])
        let trainer = try background(args, log: c.dir + "/trainer.log")
        // Kill one worker (SIGKILL) once training is under way.
        let deadline = Date(timeIntervalSinceNow: 60)
        while Date() < deadline, ((try? String(contentsOfFile: out + "/loss.jsonl", encoding: .utf8))?.split(separator: "\n").count ?? 0) < 25 {
            usleep(5_000)
        }
        guard let victim = c.processes["e1"] else { return XCTFail("no worker e1") }
        kill(victim.processIdentifier, SIGKILL)
        victim.waitUntilExit()
        c.processes["e1"] = nil
        while trainer.isRunning && Date() < deadline { usleep(20_000) }
        let log = (try? String(contentsOfFile: c.dir + "/trainer.log", encoding: .utf8)) ?? ""
        XCTAssertFalse(trainer.isRunning, "the trainer must stop, not hang")
        XCTAssertEqual(trainer.terminationStatus, 1, log)
        XCTAssertTrue(log.contains("resume from"), log)
        XCTAssertLessThan(try losses(out).count, steps, "it stopped before the end")
        // Bring the worker back and resume: the run completes and equals the uninterrupted one.
        try c.start("expert", ["--train", "--group", "1"], name: "e1b")
        let resumed = try Binaries.unimoe(args + ["--resume"], timeout: 120)
        XCTAssertEqual(resumed.status, 0, resumed.stderr + c.log("e1b"))
        assertSameCurve(try losses(out), try losses(c.dir + "/local"))
        try assertSameModel(out, c.dir + "/local")
    }

    func testModalityDataParallelReplicasGiveTheInProcessLossCurve() throws {
        let c = try Cluster()
        defer { c.stop() }
        let data = try writeData(c.dir)
        let reference = try Binaries.unimoe(trainArgs(data, out: c.dir + "/local", steps: 10, extra: ["--accumulate", "2"]))
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let endpoint = "ipc://\(c.dir)/allreduce"
        let peer = try background(trainArgs(data, out: c.dir + "/rank1", steps: 10, extra: ["--world", "2", "--rank", "1", "--allreduce", endpoint]),
                                  log: c.dir + "/rank1.log")
        let lead = try Binaries.unimoe(trainArgs(data, out: c.dir + "/dp", steps: 10, extra: ["--world", "2", "--rank", "0", "--allreduce", endpoint]),
                                       timeout: 120)
        peer.waitUntilExit()
        XCTAssertEqual(lead.status, 0, lead.stderr)
        XCTAssertEqual(peer.terminationStatus, 0, (try? String(contentsOfFile: c.dir + "/rank1.log", encoding: .utf8)) ?? "")
        assertSameCurve(try losses(c.dir + "/dp"), try losses(c.dir + "/local"))
        try assertSameModel(c.dir + "/dp", c.dir + "/local")
    }
}
