import XCTest
import Checkpoint
import Tensor
import TestSupport
@testable import Training

/// The encoders' backward passes (groundwork for training the towers) against torch autograd in
/// float64 (`scripts/fixtures/train_towers.py`): CLIP's features Uni-MoE reads and the Whisper
/// encoder's last state, and the gradient of every tensor that reaches them.
final class TowerGradientTests: XCTestCase {
    func normError(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 1e-300
        for i in 0..<a.count { let d = Double(a[i] - b[i]); num += d * d; den += Double(b[i]) * Double(b[i]) }
        return (num / den).squareRoot()
    }

    /// Every trainable tensor's gradient against the reference (`grad.NAME`); returns how many.
    func checkGradients(_ params: ParameterSet, _ expected: SafeTensorsFile) throws -> Int {
        var checked = 0
        for p in params.ordered where p.trainable {
            let name = "grad." + p.name
            guard expected.contains(name) else { XCTFail("no reference gradient for \(p.name)"); continue }
            let ours = p.grad.toArray(), ref = try expected.tensor(name).toArray()
            let refNorm = ref.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
            if refNorm < 1e-6 {
                // A key bias shifts every score of a query equally: softmax ignores it, its gradient is
                // exactly 0 (the references are rounding noise, ~1e-17 in f64, ~1e-8 in f32).
                XCTAssertLessThan(ours.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot(), 1e-5, p.name)
            } else {
                XCTAssertLessThan(normError(ours, ref), 1e-4, p.name)
            }
            checked += 1
        }
        XCTAssertEqual(checked, expected.names.filter { $0.hasPrefix("grad.") }.count, "every tensor torch gave a gradient to")
        return checked
    }

    func testVisionFeaturesAndEveryGradientMatchAutograd() throws {
        let tower = try TrainableVisionTower(directory: Fixtures.path("train/vision/tower"))
        let expected = try Fixtures.tensors("train/vision/expected.safetensors")
        let features = try tower.forward(pixels: try expected.tensor("pixels"))
        XCTAssertLessThan(normError(features.toArray(), try expected.tensor("features").toArray()), 1e-5)
        tower.backward(try expected.tensor("upstream"))
        XCTAssertGreaterThan(try checkGradients(tower.params, expected), 30)
        // The last layer and the post-layernorm never reach the penultimate features: frozen.
        XCTAssertFalse(tower.params["vision_model.encoder.layers.2.mlp.fc1.weight"]?.trainable ?? true)
        XCTAssertFalse(tower.params["vision_model.post_layernorm.weight"]?.trainable ?? true)
    }

    func testWhisperEncoderStatesAndEveryGradientMatchAutograd() throws {
        let encoder = try TrainableWhisperEncoder(directory: Fixtures.path("train/audio/tower"))
        let expected = try Fixtures.tensors("train/audio/expected.safetensors")
        let states = try encoder.forward(mel: try expected.tensor("mel"))
        XCTAssertLessThan(normError(states.toArray(), try expected.tensor("states").toArray()), 1e-5)
        encoder.backward(try expected.tensor("upstream"))
        XCTAssertGreaterThan(try checkGradients(encoder.params, expected), 30)
        XCTAssertFalse(encoder.params["encoder.embed_positions.weight"]?.trainable ?? true, "transformers keeps the positions fixed")
    }
}
