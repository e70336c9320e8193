import XCTest
import Foundation
import TestSupport
@testable import Training

/// Bad training data and impossible runs fail with a typed error naming the data file and the
/// sample's line (library), and through the CLI with exit 1 and one stderr line; `--skip-bad`
/// turns a bad sample into a warning; CLI misuse exits 64.
final class DataErrorTests: XCTestCase {
    func load(_ path: String, _ scratch: Scratch, skipBad: Bool = false, warn: @escaping (String) -> Void = { _ in }) throws -> [RawSample] {
        try TrainingData.load(path: path, mediaDirectory: scratch.media, skipBad: skipBad, warn: warn)
    }

    // MARK: Library level

    func testGoodDataLoads() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        let samples = try load(data, s)
        XCTAssertEqual(samples.map(\.id), ["a", "b", "c", "e"])
        XCTAssertEqual(samples.map(\.line), [1, 2, 3, 4])
        XCTAssertEqual(samples.map(\.modalityGroup), ["image", "audio", "text", "video"])
        XCTAssertEqual(samples[0].images, [s.media + "/picture.png"])
        XCTAssertEqual(samples[3].turns, [Turn(fromHuman: true, value: "<video>\nWhere does it move?"), Turn(fromHuman: false, value: "left")])
    }

    func testMalformedJSONLine() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", [TrainFixture.imageLine, TrainFixture.textLine,
                                              #"{"id": "broken", "conversations": [{"from": "human", "value": "x"}"#,
                                              TrainFixture.audioLine].joined(separator: "\n"))
        let e = trainingError { _ = try load(data, s) }
        guard case .malformedData(let file, let line, let reason)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertEqual(line, 3)
        XCTAssertTrue(reason.contains("JSON"), reason)
        XCTAssertTrue(e!.description.hasPrefix("\(data):3: "), e!.description)
    }

    func testBlankLinesKeepLineNumbers() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", "\n" + TrainFixture.textLine + "\n\n" + #"{"id": "n", "conversations": []}"# + "\n")
        let e = trainingError { _ = try load(data, s) }
        XCTAssertEqual(e, .malformedData(file: data, line: 4, reason: "no 'conversations' list"))
    }

    func testJSONListSyntaxErrorReportsItsLine() throws {
        let s = try makeScratch()
        let text = """
        [
          {"id": "c", "conversations": [{"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "hi"}]},
          {"id": "d", "conversations": [{"from": "human" "value": "oops"}, {"from": "gpt", "value": "x"}]}
        ]
        """
        let data = try s.write("data.json", text)
        let e = trainingError { _ = try load(data, s) }
        guard case .malformedData(let file, let line, _)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertEqual(line, 3)
    }

    func testJSONListSampleErrorNamesTheElementsLine() throws {
        let s = try makeScratch()
        let text = """
        [
          {"id": "c",
           "conversations": [{"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "hi"}]},
          {"id": "d",
           "image": "nowhere.png",
           "conversations": [{"from": "human", "value": "<image>\\nWhat?"}, {"from": "gpt", "value": "x"}]}
        ]
        """
        let data = try s.write("data.json", text)
        let e = trainingError { _ = try load(data, s) }
        XCTAssertEqual(e, .missingMedia(file: data, line: 4, path: s.media + "/nowhere.png"))
        // The same list without the bad element loads, each sample with its own line.
        let good = try s.write("good.json", "[\n" + TrainFixture.textLine + ",\n\n" + TrainFixture.imageLine + "\n]\n")
        XCTAssertEqual(try load(good, s).map(\.line), [2, 4])
    }

    func testMissingMedia() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n"
            + #"{"id": "m", "audio": "missing.wav", "conversations": [{"from": "human", "value": "<audio>\nHeard?"}, {"from": "gpt", "value": "no"}]}"#)
        let e = trainingError { _ = try load(data, s) }
        XCTAssertEqual(e, .missingMedia(file: data, line: 2, path: s.media + "/missing.wav"))
        XCTAssertTrue(e!.description.contains("missing.wav"), e!.description)
    }

    func testMediaWithoutPlaceholder() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl",
            #"{"id": "p", "image": "picture.png", "conversations": [{"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "red"}]}"#)
        let e = trainingError { _ = try load(data, s) }
        guard case .placeholderMismatch(let file, let line, let reason)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertEqual(line, 1)
        XCTAssertTrue(reason.contains("<image>"), reason)
    }

    func testPlaceholderWithoutMedia() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n"
            + #"{"id": "q", "conversations": [{"from": "human", "value": "<audio>\nWhat did you hear?"}, {"from": "gpt", "value": "a tone"}]}"#)
        let e = trainingError { _ = try load(data, s) }
        guard case .placeholderMismatch(let file, let line, let reason)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertEqual(line, 2)
        XCTAssertTrue(reason.contains("<audio>"), reason)
    }

    func testPlaceholderInAnswer() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl",
            #"{"id": "r", "image": "picture.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "an <image>"}]}"#)
        guard case .placeholderMismatch(_, 1, _)? = trainingError({ _ = try load(data, s) }) else { return XCTFail() }
    }

    func testUnknownModality() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n" + TrainFixture.imageLine + "\n"
            + #"{"id": "u", "pointcloud": "scan.ply", "conversations": [{"from": "human", "value": "What shape?"}, {"from": "gpt", "value": "a cube"}]}"#)
        let e = trainingError { _ = try load(data, s) }
        XCTAssertEqual(e, .unknownModality(file: data, line: 3, key: "pointcloud"))
    }

    func testNoAnswerTurn() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl",
            #"{"id": "g", "conversations": [{"from": "human", "value": "Say hello"}, {"from": "human", "value": "Again"}]}"#)
        let e = trainingError { _ = try load(data, s) }
        guard case .malformedData(let file, 1, let reason)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertTrue(reason.contains("gpt"), reason)
    }

    func testUnreadableMediaIsBadMedia() throws {
        let s = try makeScratch()
        try s.write("media/garbage.png", "this is not a png")
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n"
            + #"{"id": "x", "image": "garbage.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]}"#)
        let e = trainingError { _ = try TrainingRun(options: options(stage: .alignment, data: data, scratch: s), log: { _ in }) }
        guard case .badMedia(let file, 2, let path, _)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertEqual(file, data)
        XCTAssertEqual(path, s.media + "/garbage.png")
    }

    func testSkipBadWarnsAndTrainsOnTheRest() throws {
        let s = try makeScratch()
        try s.write("media/garbage.png", "this is not a png")
        let lines = [TrainFixture.textLine,
                     #"{"id": "broken""#,
                     TrainFixture.imageLine,
                     #"{"id": "u", "pointcloud": "x.ply", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}"#,
                     #"{"id": "x", "image": "garbage.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]}"#,
                     TrainFixture.text("t2", "Say bye", "bye")]
        let data = try s.write("data.jsonl", lines.joined(separator: "\n"))
        var warnings: [String] = []
        let samples = try load(data, s, skipBad: true) { warnings.append($0) }
        XCTAssertEqual(samples.map(\.id), ["c", "a", "x", "t2"])
        XCTAssertEqual(warnings.count, 2, "\(warnings)")
        XCTAssertTrue(warnings.allSatisfy { $0.hasPrefix("warning: skipping \(data):") }, "\(warnings)")
        XCTAssertTrue(warnings[0].contains(":2:") && warnings[1].contains(":4:"), "\(warnings)")

        var log: [String] = []
        var o = options(stage: .mixed, data: data, scratch: s, steps: 3)
        o.skipBad = true
        let run = try TrainingRun(options: o, log: { log.append($0) })
        // The undecodable image is dropped while encoding media: a third warning, and training goes on.
        let skipped = log.filter { $0.hasPrefix("warning: skipping") }
        XCTAssertEqual(skipped.count, 3, "\(log)")
        XCTAssertTrue(skipped.last!.contains("\(data):5:") && skipped.last!.contains("garbage.png"), "\(skipped)")
        try run.run()
        XCTAssertEqual(run.records.count, 3)
        XCTAssertTrue(run.records.allSatisfy { $0.loss.isFinite && $0.tokens > 0 })
        XCTAssertTrue(FileManager.default.fileExists(atPath: o.out + "/model.safetensors"))

        // Without --skip-bad the same file fails at line 2.
        guard case .malformedData(_, 2, _)? = trainingError({ _ = try load(data, s) }) else { return XCTFail() }
    }

    func testEverySampleSkippedIsNoData() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", #"{"id": 1"# + "\n" + #"{"id": 2"# + "\n")
        var o = options(stage: .alignment, data: data, scratch: s)
        o.skipBad = true
        guard case .noData? = trainingError({ _ = try TrainingRun(options: o, log: { _ in }) }) else { return XCTFail() }
    }

    func testCRLFAndCompactListsKeepLines() throws {
        let s = try makeScratch()
        let crlf = try s.write("crlf.jsonl", [TrainFixture.textLine, TrainFixture.imageLine, "", TrainFixture.audioLine].joined(separator: "\r\n") + "\r\n")
        XCTAssertEqual(try load(crlf, s).map(\.line), [1, 2, 4])
        let compact = try s.write("compact.json", "[" + TrainFixture.textLine + ", " + TrainFixture.imageLine + ",\n" + TrainFixture.audioLine + "]")
        XCTAssertEqual(try load(compact, s).map(\.line), [1, 1, 2])
    }

    func testUnreadableOrEmptyDataFile() throws {
        let s = try makeScratch()
        let missing = s.path("nothing.jsonl")
        guard case .malformedData(missing, _, _)? = trainingError({ _ = try load(missing, s) }) else { return XCTFail() }
        let empty = try s.write("empty.jsonl", "\n\n")
        XCTAssertEqual(try load(empty, s), [])
        guard case .noData? = trainingError({ _ = try TrainingRun(options: options(stage: .alignment, data: empty, scratch: s), log: { _ in }) })
        else { return XCTFail() }
    }

    func testStage2WithoutAnExpertForAModality() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        var o = options(stage: .experts, data: data, scratch: s)
        o.expertModalities = ["text", "image", "audio"]
        guard case .invalidSetting(let reason)? = trainingError({ _ = try TrainingRun(options: o, log: { _ in }) }) else { return XCTFail() }
        XCTAssertTrue(reason.contains("video"), reason)
    }

    // MARK: Through the CLI

    func train(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try Binaries.unimoe(["train"] + args, timeout: 60)
        XCTAssertFalse(r.timedOut, "unimoe train \(args) timed out", file: file, line: line)
        return r
    }

    func baseArgs(_ s: Scratch, data: String, stage: String = "1") -> [String] {
        ["--stage", stage, "--model", TrainFixture.model, "--data", data, "--media-dir", s.media, "--out", s.path("out"),
         "--steps", "2", "--batch", "2", "--lr", "1e-2"]
    }

    /// Exit 1, nothing on stdout, and exactly one stderr line.
    func assertOneLineFailure(_ r: ProcessResult, file: StaticString = #filePath, line: UInt = #line) -> String {
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stdout, "", file: file, line: line)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 2, "one line expected: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(lines.last, "", file: file, line: line)
        return String(lines.first ?? "")
    }

    func testCLIMalformedLine() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", [TrainFixture.textLine, TrainFixture.imageLine, "{not json"].joined(separator: "\n"))
        let msg = assertOneLineFailure(try train(baseArgs(s, data: data)))
        XCTAssertTrue(msg.hasPrefix("unimoe train: \(data):3: malformed sample"), msg)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s.path("out")))
    }

    func testCLIMissingMedia() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n"
            + #"{"id": "v", "video": "gone.mp4", "conversations": [{"from": "human", "value": "<video>\nWhere?"}, {"from": "gpt", "value": "left"}]}"#)
        let msg = assertOneLineFailure(try train(baseArgs(s, data: data)))
        XCTAssertTrue(msg.hasPrefix("unimoe train: \(data):2: "), msg)
        XCTAssertTrue(msg.contains(s.media + "/gone.mp4"), msg)
    }

    func testCLIUnknownModality() throws {
        let s = try makeScratch()
        let data = try s.write("data.json", "[\n" + TrainFixture.textLine + ",\n"
            + #"{"id": "u", "pointcloud": "x.ply", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}"# + "\n]")
        let msg = assertOneLineFailure(try train(baseArgs(s, data: data)))
        XCTAssertEqual(msg, "unimoe train: \(data):3: unknown modality 'pointcloud' (known: image, audio, video)")
    }

    func testCLISkipBad() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", [TrainFixture.textLine, "{oops", TrainFixture.imageLine].joined(separator: "\n"))
        let r = try train(baseArgs(s, data: data) + ["--skip-bad", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let warnings = r.stderr.split(separator: "\n").filter { $0.hasPrefix("warning: skipping") }
        XCTAssertEqual(warnings.count, 1, r.stderr)
        XCTAssertTrue(warnings[0].hasPrefix("warning: skipping \(data):2: malformed sample"), r.stderr)
        // --json: one record per step, then the summary.
        XCTAssertEqual(r.stdoutLines.count, 3, r.stdout)
        XCTAssertTrue(r.stdoutLines.last!.contains("\"steps\":2"), r.stdout)
        XCTAssertEqual(try lossLog(s.path("out/loss.jsonl")).map(\.step), [1, 2])
    }

    func testCLIMediaDirDefaultsToTheDataDirectory() throws {
        let s = try makeScratch()
        let data = try s.write("media/data.jsonl", TrainFixture.fourSamples)
        var args = baseArgs(s, data: data)
        args.removeSubrange(args.firstIndex(of: "--media-dir")!...args.firstIndex(of: "--media-dir")! + 1)
        let r = try train(args)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdoutLines.count, 1, r.stdout)
        XCTAssertTrue(r.stdoutLines[0].hasPrefix("trained 2 steps, final loss "), r.stdout)
        // Without the media beside it, the same file names the missing medium.
        let elsewhere = try s.write("data.jsonl", TrainFixture.fourSamples)
        var args2 = baseArgs(s, data: elsewhere)
        args2.removeSubrange(args2.firstIndex(of: "--media-dir")!...args2.firstIndex(of: "--media-dir")! + 1)
        let msg = assertOneLineFailure(try train(args2))
        XCTAssertTrue(msg.hasPrefix("unimoe train: \(elsewhere):1: media file '\(s.dir)/picture.png' does not exist"), msg)
    }

    func testCLIMissingDataFile() throws {
        let s = try makeScratch()
        let msg = assertOneLineFailure(try train(baseArgs(s, data: s.path("absent.jsonl"))))
        XCTAssertTrue(msg.contains(s.path("absent.jsonl")), msg)
    }

    func testCLIUsageErrorsExit64() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine)
        let base = baseArgs(s, data: data)
        func without(_ opt: String) -> [String] {
            var a = base
            let i = a.firstIndex(of: opt)!
            a.removeSubrange(i...i + 1)
            return a
        }
        func with(_ opt: String, _ value: String) -> [String] {
            var a = base
            a[a.firstIndex(of: opt)! + 1] = value
            return a
        }
        let cases: [([String], String)] = [
            (without("--stage"), "--stage"),
            (with("--stage", "4"), "--stage"),
            (with("--stage", "two"), "--stage"),
            (base + ["--save-adapters"], "--save-adapters"),
            (with("--stage", "2") + ["--save-adapters"], "--save-adapters"),
            (without("--model"), "--model"),
            (without("--data"), "--data"),
            (without("--out"), "--out"),
            (with("--steps", "0"), "--steps"),
            (with("--batch", "0"), "--batch"),
            (with("--lr", "fast"), "--lr"),
            (base + ["--seed", "-1"], "--seed"),
            (base + ["--expert-modalities", "text,smell"], "smell"),
            (with("--stage", "2") + ["--media-words", "1"], "--media-words"),
            (base + ["--media-words", "-1"], "--media-words"),
            (base + ["--media-words", "much"], "--media-words"),
            (base + ["--media-words-only"], "--media-words-only"),
            (base + ["extra"], "extra"),
        ]
        for (args, mention) in cases {
            let r = try train(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("unimoe train: "), r.stderr)
            XCTAssertTrue(r.stderr.split(separator: "\n").first?.contains(mention) ?? false, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("\nusage: unimoe train --stage 0|1|2|3"), r.stderr)
            XCTAssertEqual(r.stdout, "")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: s.path("out")))
    }
}
