import XCTest
import Checkpoint
import Tensor
import TestSupport
@testable import Training

/// The media-words objective (`--media-words`): its hand-written gradient against central finite
/// differences (the max-pool routes each column's gradient to its largest row), and a stage 0 run
/// in which the objective falls, the towers and connectors learn from it, and its head is not written.
final class MediaWordsTests: XCTestCase {
    /// Loss of `op` on `media` (a fresh gradient pass, scale 1).
    func loss(_ op: MediaWordsOp, _ media: Tensor, _ segments: [MediaWordsOp.Segment]) -> Double {
        op.weight.zeroGrad(); op.bias.zeroGrad()
        return op.accumulate(media: media, segments: segments, scale: 1, mediaGrad: nil)
    }

    func testGradientMatchesFiniteDifferences() throws {
        var g = SplitMix(3)
        let h = 5, v = 4, rows = 7
        let op = MediaWordsOp(vocabulary: v, width: h, seed: 1)
        for i in 0..<(v * h) { op.weight.value.floats[i] = g.next() }
        for i in 0..<v { op.bias.value.floats[i] = g.next() }
        let media = Tensor(zeros: [rows, h])
        for i in 0..<(rows * h) { media.floats[i] = 2 * g.next() }
        // Two media (3 and 4 rows), different words; a zero-row segment and one without words add nothing.
        let segments: [MediaWordsOp.Segment] = [.init(start: 0, count: 3, words: [0, 2]), .init(start: 3, count: 4, words: [1]),
                                                .init(start: 7, count: 0, words: [3]), .init(start: 0, count: 7, words: [])]
        let mediaGrad = Tensor(zeros: [rows, h])
        op.weight.zeroGrad(); op.bias.zeroGrad()
        let scale: Float = 0.5
        let l0 = op.accumulate(media: media, segments: segments, scale: scale, mediaGrad: mediaGrad)
        XCTAssertGreaterThan(l0, 0)
        let dW = op.weight.grad.toArray(), dB = op.bias.grad.toArray(), dM = mediaGrad.toArray()
        let eps: Float = 1e-2
        func check(_ t: Tensor, _ analytic: [Float], _ what: String) {
            for i in 0..<t.count {
                let keep = t.floats[i]
                t.floats[i] = keep + eps; let up = loss(op, media, segments)
                t.floats[i] = keep - eps; let down = loss(op, media, segments)
                t.floats[i] = keep
                let numeric = Double(scale) * (up - down) / Double(2 * eps)
                XCTAssertEqual(Double(analytic[i]), numeric, accuracy: 2e-3 + 2e-3 * abs(numeric), "\(what)[\(i)]")
            }
        }
        check(op.weight.value, dW, "weight")
        check(op.bias.value, dB, "bias")
        check(media, dM, "media")
        // Only each column's maximum row of a medium receives gradient.
        XCTAssertEqual(dM.filter { $0 != 0 }.count, 2 * h)
    }

    func testWordsAreLowerCaseLetterRuns() {
        XCTAssertEqual(MediaWordsOp.words("Red circle, leftwards!"), ["red", "circle", "leftwards"])
        XCTAssertEqual(MediaWordsOp.words("3 shapes"), ["shapes"])
    }

    func testStageZeroLearnsTheWordsAndDoesNotExportTheHead() throws {
        let s = try makeScratch()
        let lines = [TrainFixture.imageLine, TrainFixture.audioLine, TrainFixture.textLine, TrainFixture.videoLine]
        let data = try s.write("data.jsonl", lines.joined(separator: "\n"))
        var o = options(stage: .pretrain, data: data, scratch: s, steps: 10, batch: 2, lr: 3e-3)
        o.trainTowers = true
        o.mediaWords = 1
        let run = try TrainingRun(options: o)
        // The vocabulary: the answers of the samples with media ("red", "a tone", "left"), not the text sample's.
        XCTAssertEqual(run.model.mediaWords?.vocabulary, 4)
        try run.run()
        let words = run.records.compactMap(\.mediaWords)
        XCTAssertEqual(words.count, 10)
        XCTAssertLessThan(words.suffix(3).reduce(0, +), words.prefix(3).reduce(0, +) * 0.8, "\(words)")
        let out = try SafeTensorsFile(path: o.out + "/model.safetensors")
        XCTAssertFalse(out.names.contains { $0.hasPrefix("media_words_head") })
        let before = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        XCTAssertEqual(Set(out.names), Set(before.names))
        // A resume asking for another weight is refused with what to do.
        o.resume = true
        o.mediaWords = 2
        o.steps = 12
        XCTAssertThrowsError(try TrainingRun(options: o)) { e in XCTAssertTrue("\(e)".contains("--media-words"), "\(e)") }
    }

    /// `--media-words-only`: the towers and connectors learn, the trunk is neither run nor changed,
    /// text samples are skipped (an epoch is the media batches).
    func testMediaWordsAloneLeaveTheTrunkAlone() throws {
        let s = try makeScratch()
        let lines = [TrainFixture.imageLine, TrainFixture.videoLine, TrainFixture.textLine, TrainFixture.textLine.replacingOccurrences(of: "\"c\"", with: "\"d\"")]
        let data = try s.write("data.jsonl", lines.joined(separator: "\n"))
        var o = options(stage: .pretrain, data: data, scratch: s, batch: 1, lr: 3e-3)
        o.steps = nil
        o.epochs = 6
        o.trainTowers = true
        o.mediaWords = 1
        o.mediaWordsOnly = true
        let run = try TrainingRun(options: o)
        XCTAssertEqual(run.totalSteps, 12, "two media batches an epoch, the text ones skipped")
        XCTAssertFalse(run.model.params["model.embed_tokens.weight"]?.trainable ?? true)
        XCTAssertTrue(run.model.params["model.mm_projector.0.weight"]?.trainable ?? false)
        try run.run()
        XCTAssertEqual(run.records.map(\.crossEntropy), [Double](repeating: 0, count: 12))
        XCTAssertEqual(run.records.map(\.tokens), [Int](repeating: 0, count: 12), "no answer token is trained")
        let words = run.records.compactMap(\.mediaWords)
        XCTAssertLessThan(words.suffix(4).reduce(0, +), words.prefix(4).reduce(0, +) * 0.8, "\(words)")
        let before = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        let after = try SafeTensorsFile(path: o.out + "/model.safetensors")
        for name in before.names {
            let same = try after.tensor(name).toArray() == before.tensor(name).converted(to: .f32).toArray()
            if !TrainableModel.isConnector(name) { XCTAssertTrue(same, "\(name) is the trunk's") }
            if name.hasPrefix("model.mm_projector.") { XCTAssertFalse(same, "\(name) learns") }
        }
        let tower = "vision_model.embeddings.patch_embedding.weight"
        XCTAssertNotEqual(try SafeTensorsFile(path: o.out + "/vision_tower/model.safetensors").tensor(tower).toArray(),
                          try SafeTensorsFile(path: TrainFixture.model + "/vision_tower/model.safetensors").tensor(tower).converted(to: .f32).toArray())
    }

    func testRefusedWhereNothingLearnsFromTheMediaRows() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.imageLine)
        var o = options(stage: .experts, data: data, scratch: s)
        o.mediaWords = 1
        XCTAssertThrowsError(try TrainingRun(options: o)) { e in XCTAssertTrue("\(e)".contains("stage 0 or 1"), "\(e)") }
        let text = try s.write("text.jsonl", TrainFixture.textLine)
        var t = options(stage: .pretrain, data: text, scratch: s)
        t.mediaWords = 1
        XCTAssertThrowsError(try TrainingRun(options: t)) { e in XCTAssertTrue("\(e)".contains("no sample"), "\(e)") }
    }
}
