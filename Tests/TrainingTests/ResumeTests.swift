import XCTest
import Foundation
import TestSupport
@testable import Training

/// A run killed with SIGKILL and resumed with `--resume` ends exactly where an uninterrupted run
/// does: the same model bytes and the same loss at every step (the resumed run cuts the log back
/// to its checkpoint's step and continues it). Both runs are separate `unimoe train` processes.
final class ResumeTests: XCTestCase {
    static let steps = 30

    func data(_ s: Scratch) throws -> String {
        // Longer answers than the demo's make a step slow enough to kill a run midway.
        let long = "the quick brown fox jumps over the lazy dog and keeps on running across the wide green field until the sun goes down"
        var lines = (1...8).map { TrainFixture.text("t\($0)", "Tell story number \($0)", "\(long) \($0)") }
        lines += [TrainFixture.imageLine, TrainFixture.audioLine]
        return try s.write("data.jsonl", lines.joined(separator: "\n"))
    }

    func args(_ s: Scratch, data: String, out: String, seed: String = "11") -> [String] {
        ["train", "--stage", "3", "--model", TrainFixture.model, "--data", data, "--media-dir", s.media, "--out", out,
         "--steps", "\(Self.steps)", "--batch", "2", "--lr", "1e-2", "--seed", seed, "--threads", "1", "--save-every", "5"]
    }

    func lineCount(_ path: String) -> Int {
        guard let d = FileManager.default.contents(atPath: path) else { return 0 }
        return d.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    }

    /// The deterministic figures of a log line (not the timings).
    func figures(_ r: StepRecord) -> [Double] {
        [Double(r.step), Double(r.epoch), r.loss, r.crossEntropy, r.auxLoss, r.learningRate, r.gradNorm, Double(r.tokens)]
    }

    func testKilledRunResumesToTheSameModelAndLog() throws {
        let s = try makeScratch()
        let data = try data(s)
        let outA = s.path("A"), outB = s.path("B")

        let a = try Binaries.unimoe(args(s, data: data, out: outA), timeout: 60)
        XCTAssertEqual(a.status, 0, a.stderr)
        let logA = try lossLog(outA + "/loss.jsonl")
        XCTAssertEqual(logA.map(\.step), Array(1...Self.steps))

        // Run B, killed once its log holds at least 12 steps.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Binaries.path())
        p.arguments = args(s, data: data, out: outB)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        var seen = 0
        while p.isRunning && Date() < deadline {
            seen = lineCount(outB + "/loss.jsonl")
            if seen >= 12 { kill(p.processIdentifier, SIGKILL); break }
            usleep(500)
        }
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal, "run B finished before it could be killed (saw \(seen) steps)")
        XCTAssertEqual(p.terminationStatus, SIGKILL)
        let stepsAtKill = lineCount(outB + "/loss.jsonl")
        XCTAssertLessThan(stepsAtKill, Self.steps, "killed too late to test resuming")
        XCTAssertFalse(FileManager.default.fileExists(atPath: outB + "/model.safetensors"), "a killed run wrote no final model")
        let latest = try TrainingRun.latestCheckpoint(in: outB)
        XCTAssertNotNil(latest)

        let b = try Binaries.unimoe(args(s, data: data, out: outB) + ["--resume"], timeout: 60)
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertTrue(b.stderr.contains("resuming from \(latest ?? "?")"), b.stderr)

        let modelA = FileManager.default.contents(atPath: outA + "/model.safetensors")
        let modelB = FileManager.default.contents(atPath: outB + "/model.safetensors")
        XCTAssertNotNil(modelA)
        XCTAssertTrue(modelA == modelB, "the resumed run's model differs from the uninterrupted run's")
        let logB = try lossLog(outB + "/loss.jsonl")
        XCTAssertEqual(logB.map(\.step), Array(1...Self.steps), "every step logged exactly once")
        XCTAssertEqual(logB.map(figures), logA.map(figures))

        // Resuming with other settings is refused, naming the checkpoint.
        let c = try Binaries.unimoe(args(s, data: data, out: outB, seed: "12") + ["--resume"], timeout: 60)
        XCTAssertEqual(c.status, 1, c.stderr)
        XCTAssertTrue(c.stderr.contains("checkpoints/step-0000\(Self.steps)") && c.stderr.contains("same settings"), c.stderr)
        // So is another learning rate, and other data (one sample more).
        var otherLR = args(s, data: data, out: outB)
        otherLR[otherLR.firstIndex(of: "--lr")! + 1] = "2e-2"
        let d = try Binaries.unimoe(otherLR + ["--resume"], timeout: 60)
        XCTAssertEqual(d.status, 1, d.stderr)
        XCTAssertTrue(d.stderr.contains("same --lr"), d.stderr)
        let moreData = try String(contentsOfFile: data, encoding: .utf8) + "\n" + TrainFixture.textLine
        let data2 = try s.write("data2.jsonl", moreData)
        let e = try Binaries.unimoe(args(s, data: data2, out: outB) + ["--resume"], timeout: 60)
        XCTAssertEqual(e.status, 1, e.stderr)
        XCTAssertTrue(e.stderr.contains("same data file"), e.stderr)
    }

    func testResumeWithoutCheckpointStartsFresh() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        var o = options(stage: .alignment, data: data, scratch: s, steps: 4)
        o.resume = true
        let run = try TrainingRun(options: o, log: { _ in })
        XCTAssertEqual(run.step, 0)
        try run.run()
        XCTAssertEqual(try lossLog(o.out + "/loss.jsonl").map(\.step), [1, 2, 3, 4])
    }

    func testLibraryResumeAfterStopMatchesUninterrupted() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        var whole = options(stage: .mixed, data: data, scratch: s, out: "whole", steps: 10)
        whole.saveEvery = 3
        let a = try TrainingRun(options: whole, log: { _ in })
        try a.run()

        var part = whole
        part.out = s.path("part")
        let b1 = try TrainingRun(options: part, log: { _ in })
        b1.shouldStop = { $0 == 7 }
        try b1.run()
        XCTAssertEqual(b1.step, 7)
        part.resume = true
        let b2 = try TrainingRun(options: part, log: { _ in })
        XCTAssertEqual(b2.step, 6, "resumes from the step-6 checkpoint")
        try b2.run()
        XCTAssertEqual(b2.records.map(\.step), Array(7...10))
        XCTAssertEqual(b2.records.map(figures), Array(a.records.suffix(4)).map(figures))
        XCTAssertEqual(FileManager.default.contents(atPath: whole.out + "/model.safetensors"),
                       FileManager.default.contents(atPath: part.out + "/model.safetensors"))
        XCTAssertEqual(try lossLog(part.out + "/loss.jsonl").map(\.step), Array(1...10))
    }
}

extension ResumeTests {
    /// Resuming with another `--steps` keeps the checkpoint's total (the larger), and the learning
    /// rate of every later step follows that total's schedule, as in the uninterrupted run.
    func testResumeWithFewerStepsKeepsTheSchedule() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        var whole = options(stage: .mixed, data: data, scratch: s, out: "whole", steps: 10)
        whole.saveEvery = 3
        let a = try TrainingRun(options: whole, log: { _ in })
        try a.run()

        var part = whole
        part.out = s.path("part")
        let b1 = try TrainingRun(options: part, log: { _ in })
        b1.shouldStop = { $0 == 7 }
        try b1.run()
        part.resume = true
        part.steps = 6
        let b2 = try TrainingRun(options: part, log: { _ in })
        XCTAssertEqual(b2.totalSteps, 10)
        try b2.run()
        XCTAssertEqual(b2.records.map(\.step), Array(7...10))
        XCTAssertEqual(b2.records.map(\.learningRate), Array(a.records.suffix(4)).map(\.learningRate))
        XCTAssertEqual(b2.records.map(figures), Array(a.records.suffix(4)).map(figures))
        XCTAssertEqual(FileManager.default.contents(atPath: whole.out + "/model.safetensors"),
                       FileManager.default.contents(atPath: part.out + "/model.safetensors"))
    }
}

extension ResumeTests {
    /// A fresh run (no --resume) into an OUT that holds an earlier run's checkpoints must not let
    /// those stale checkpoints displace its own: killed and resumed, it continues from its own last
    /// checkpoint and ends where it would have uninterrupted.
    func testFreshRunIntoOldOutputResumesFromItsOwnCheckpoint() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        // An earlier, finished run in OUT (checkpoints step 5 and 10).
        var old = options(stage: .mixed, data: data, scratch: s, out: "out", steps: 10, lr: 1e-2)
        old.saveEvery = 5
        _ = try { let r = try TrainingRun(options: old, log: { _ in }); try r.run(); return r }()

        // The new run: other learning rate, same OUT, stopped (as if killed) after step 4.
        var new = old
        new.learningRate = 5e-3
        new.saveEvery = 2
        let b1 = try TrainingRun(options: new, log: { _ in })
        b1.shouldStop = { $0 == 4 }
        try b1.run()
        new.resume = true
        let b2 = try TrainingRun(options: new, log: { _ in })
        XCTAssertEqual(b2.step, 4, "resumed from a checkpoint of the earlier run")
        try b2.run()

        var reference = new
        reference.resume = false
        reference.out = s.path("reference")
        let r = try TrainingRun(options: reference, log: { _ in })
        try r.run()
        XCTAssertEqual(try lossLog(new.out + "/loss.jsonl").map(figures), r.records.map(figures))
        XCTAssertEqual(FileManager.default.contents(atPath: new.out + "/model.safetensors"),
                       FileManager.default.contents(atPath: reference.out + "/model.safetensors"))
    }
}

extension ResumeTests {
    /// Checkpoint directories are ordered by step number, also past step 999999 where the
    /// six-digit names stop sorting as text (--steps allows up to 10⁸).
    func testCheckpointsPastAMillionStepsSortByStep() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine)
        let o = options(stage: .mixed, data: data, scratch: s, steps: 1)
        let root = o.out + "/checkpoints"
        for step in [999_998, 999_999] {
            try FileManager.default.createDirectory(atPath: root + "/step-\(step)", withIntermediateDirectories: true)
            try "{}".write(toFile: root + "/step-\(step)/state.json", atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(try TrainingRun.latestCheckpoint(in: o.out), root + "/step-999999")
        let run = try TrainingRun(options: o, log: { _ in })
        run.state.step = 1_000_000
        try run.saveCheckpoint()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root).sorted(), ["step-1000000", "step-999999"],
                       "the two newest are kept")
        XCTAssertEqual(try TrainingRun.latestCheckpoint(in: o.out), root + "/step-1000000")
    }
}
