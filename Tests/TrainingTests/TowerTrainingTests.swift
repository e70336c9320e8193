import XCTest
import Checkpoint
import Tensor
import TestSupport
@testable import Training

/// Stage 0 with `--train-towers`: the CLIP tower and the Whisper encoder train with the trunk (their
/// inputs cached, not their outputs), the loss falls, and the new towers are written where the
/// model directory names them and load for inference.
final class TowerTrainingTests: XCTestCase {
    func testTowersTrainAndAreWrittenBack() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", [TrainFixture.imageLine, TrainFixture.audioLine, TrainFixture.textLine].joined(separator: "\n"))
        var o = options(stage: .pretrain, data: data, scratch: s, steps: 12, batch: 3, lr: 3e-3)
        o.trainTowers = true
        let run = try TrainingRun(options: o)
        XCTAssertNotNil(run.model.visionTower)
        XCTAssertNotNil(run.model.audioTower)
        XCTAssertTrue(run.model.params["vision_model.embeddings.patch_embedding.weight"]?.trainable ?? false)
        XCTAssertTrue(run.model.params["encoder.conv1.weight"]?.trainable ?? false)
        try run.run()
        let losses = run.records.map(\.loss)
        XCTAssertLessThan(losses.suffix(3).reduce(0, +), losses.prefix(3).reduce(0, +) * 0.8, "\(losses)")
        for (tower, changed, kept) in [("vision_tower", "vision_model.embeddings.patch_embedding.weight", "vision_model.post_layernorm.weight"),
                                       ("audio_tower", "encoder.conv1.weight", "encoder.embed_positions.weight")] {
            let before = try SafeTensorsFile(path: "\(TrainFixture.model)/\(tower)/model.safetensors")
            let after = try SafeTensorsFile(path: "\(o.out)/\(tower)/model.safetensors")
            XCTAssertEqual(Set(after.names), Set(before.names), tower)
            XCTAssertEqual(after.entries[changed]?.shape, before.entries[changed]?.shape, tower)
            XCTAssertNotEqual(try after.tensor(changed).toArray(), try before.tensor(changed).converted(to: .f32).toArray(), "\(changed) trained")
            XCTAssertEqual(try after.tensor(kept).toArray(), try before.tensor(kept).converted(to: .f32).toArray(), "\(kept) is frozen")
        }
        // The trained directory answers through the inference path.
        let r = try Binaries.unimoe(["run", "--model", o.out, "--image", s.media + "/picture.png", "--audio", s.media + "/tone.wav",
                                     "--max-new-tokens", "2", "--json", "What?"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testTowersTrainOnlyInStageZero() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.imageLine)
        var o = options(stage: .alignment, data: data, scratch: s)
        o.trainTowers = true
        XCTAssertThrowsError(try TrainingRun(options: o)) { e in
            XCTAssertTrue("\(e)".contains("--train-towers goes with stage 0"), "\(e)")
        }
    }
}
