import XCTest
import Checkpoint
import Tensor
import TestSupport
@testable import Training

/// The CLIP vision tower's backward (groundwork for training the encoders) against torch autograd
/// in float64 (`scripts/fixtures/train_vision.py`): the features Uni-MoE reads and the gradient of
/// every tower tensor that reaches them.
final class VisionTowerGradientTests: XCTestCase {
    func normError(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 1e-300
        for i in 0..<a.count { let d = Double(a[i] - b[i]); num += d * d; den += Double(b[i]) * Double(b[i]) }
        return (num / den).squareRoot()
    }

    func testFeaturesAndEveryGradientMatchAutograd() throws {
        let tower = try TrainableVisionTower(directory: Fixtures.path("train/vision/tower"))
        let expected = try Fixtures.tensors("train/vision/expected.safetensors")
        let features = try tower.forward(pixels: try expected.tensor("pixels"))
        XCTAssertLessThan(normError(features.toArray(), try expected.tensor("features").toArray()), 1e-5)
        tower.backward(try expected.tensor("upstream"))
        var checked = 0
        for p in tower.params.ordered where p.trainable {
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
        let reference = expected.names.filter { $0.hasPrefix("grad.") }.count
        XCTAssertEqual(checked, reference, "every tensor torch gave a gradient to")
        // The last layer and the post-layernorm never reach the penultimate features: frozen.
        XCTAssertFalse(tower.params["vision_model.encoder.layers.2.mlp.fc1.weight"]?.trainable ?? true)
        XCTAssertFalse(tower.params["vision_model.post_layernorm.weight"]?.trainable ?? true)
    }
}
