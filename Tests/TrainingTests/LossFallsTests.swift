import XCTest
import Foundation
import TestSupport
@testable import Training

/// Training learns: on a small fixed data set the mean loss of the last five steps is well below
/// that of the first five, for stage 3 (LoRA + routers) and for stage 1 (connectors only).
final class LossFallsTests: XCTestCase {
    static let textSamples = [
        TrainFixture.text("t1", "Say hello", "hello world"),
        TrainFixture.text("t2", "Name a colour", "blue"),
        TrainFixture.text("t3", "Count to three", "one two three"),
        TrainFixture.text("t4", "What is the capital of France?", "Paris"),
        TrainFixture.text("t5", "Name an animal", "a cat"),
        TrainFixture.text("t6", "Say goodbye", "see you later"),
    ]

    func mean(_ xs: ArraySlice<StepRecord>) -> Double { xs.reduce(0) { $0 + $1.loss } / Double(xs.count) }

    func assertFalls(_ records: [StepRecord], steps: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(records.count, steps, file: file, line: line)
        XCTAssertTrue(records.allSatisfy { $0.loss.isFinite }, file: file, line: line)
        let first = mean(records.prefix(5)), last = mean(records.suffix(5))
        XCTAssertLessThanOrEqual(last, 0.7 * first, "first five \(first), last five \(last): \(records.map(\.loss))",
                                 file: file, line: line)
    }

    func testStage3LossFalls() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", (Self.textSamples + [TrainFixture.imageLine]).joined(separator: "\n"))
        let run = try TrainingRun(options: options(stage: .mixed, data: data, scratch: s, steps: 40, batch: 2, lr: 1e-2),
                                  log: { _ in })
        try run.run()
        assertFalls(run.records, steps: 40)
    }

    func testStage1LossFalls() throws {
        // Stage 1 trains only the connectors, so the answers must depend on the media.
        let s = try makeScratch()
        let lines = [TrainFixture.imageLine, TrainFixture.audioLine, TrainFixture.videoLine,
                     #"{"id": "a2", "image": "picture.png", "conversations": [{"from": "human", "value": "<image>\nHow many shapes?"}, {"from": "gpt", "value": "one"}]}"#]
        let data = try s.write("data.jsonl", lines.joined(separator: "\n"))
        let run = try TrainingRun(options: options(stage: .alignment, data: data, scratch: s, steps: 30, batch: 2, lr: 1e-2),
                                  log: { _ in })
        try run.run()
        assertFalls(run.records, steps: 30)
    }
}
