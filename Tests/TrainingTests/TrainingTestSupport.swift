import Foundation
import XCTest
import Checkpoint
import TestSupport
@testable import Training

/// Paths and data shared by the training tests: the demo model, the sample media, and a scratch
/// directory per test (removed at teardown) holding the data file and links to the media.
enum TrainFixture {
    /// The repository root (Tests/Fixtures/../..).
    static let repoRoot: String = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().deletingLastPathComponent().path
    static var model: String { repoRoot + "/models/tiny-unimoe" }
    static var samples: String { repoRoot + "/samples" }
    /// A dense language model (llama, GQA, no MoE layers, no tokenizer).
    static var denseModel: String { Fixtures.path("lm/llama-gqa") }

    static let imageLine = #"{"id": "a", "image": "picture.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour is the shape?"}, {"from": "gpt", "value": "red"}]}"#
    static let audioLine = #"{"id": "b", "audio": "tone.wav", "conversations": [{"from": "human", "value": "<audio>\nWhat did you hear?"}, {"from": "gpt", "value": "a tone"}]}"#
    static let textLine = #"{"id": "c", "conversations": [{"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "hello world"}]}"#
    static let videoLine = #"{"id": "e", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\nWhere does it move?"}, {"from": "gpt", "value": "left"}]}"#
    /// The four-sample, four-modality data of the brief.
    static var fourSamples: String { [imageLine, audioLine, textLine, videoLine].joined(separator: "\n") + "\n" }

    /// A text-only sample line.
    static func text(_ id: String, _ question: String, _ answer: String) -> String {
        #"{"id": "\#(id)", "conversations": [{"from": "human", "value": "\#(question)"}, {"from": "gpt", "value": "\#(answer)"}]}"#
    }
}

/// A fresh temporary directory with `media/` linking the sample media.
final class Scratch {
    let dir: String
    var media: String { dir + "/media" }

    init() throws {
        dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("unimoe-train-" + UUID().uuidString)
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/media", withIntermediateDirectories: true)
        for f in ["picture.png", "tone.wav", "clip.mp4"] {
            try fm.createSymbolicLink(atPath: dir + "/media/" + f, withDestinationPath: TrainFixture.samples + "/" + f)
        }
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let path = (dir as NSString).appendingPathComponent(name)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func path(_ name: String) -> String { (dir as NSString).appendingPathComponent(name) }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

extension XCTestCase {
    /// A scratch directory removed when the test ends.
    func makeScratch() throws -> Scratch {
        let s = try Scratch()
        addTeardownBlock { s.remove() }
        return s
    }

    /// Options for a run on the demo model over `data` in `scratch`.
    func options(stage: TrainingStage, data: String, scratch: Scratch, out: String = "out", steps: Int = 8, batch: Int = 2,
                 lr: Double = 1e-2, seed: UInt64 = 7) -> TrainingOptions {
        var o = TrainingOptions(stage: stage, model: TrainFixture.model, data: data, mediaDirectory: scratch.media,
                                out: scratch.path(out))
        o.steps = steps
        o.batchSize = batch
        o.learningRate = lr
        o.seed = seed
        return o
    }
}

/// The raw bytes of tensor `name` in `file` (nil when absent).
func tensorBytes(_ file: SafeTensorsFile, _ name: String) -> [UInt8]? {
    guard let e = file.entries[name] else { return nil }
    return Array(file.mapping[e.range])
}

/// Runs `body` and returns the `TrainingError` it throws (failing the test when it throws nothing or something else).
func trainingError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> TrainingError? {
    do {
        try body()
        XCTFail("expected a TrainingError, nothing was thrown", file: file, line: line)
    } catch let e as TrainingError {
        return e
    } catch {
        XCTFail("expected a TrainingError, got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// The parsed lines of a `loss.jsonl`.
func lossLog(_ path: String) throws -> [StepRecord] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return try text.split(separator: "\n").map { try JSONDecoder().decode(StepRecord.self, from: Data($0.utf8)) }
}
