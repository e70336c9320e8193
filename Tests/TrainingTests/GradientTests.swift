import XCTest
import Checkpoint
import Tensor
import TestSupport
@testable import Training

/// The hand-written backward passes against torch autograd (float64 reference) on the tiny Uni-MoE
/// of `Tests/Fixtures/train/grad` (scripts/fixtures/train.py): image + audio + text, GQA, MoE on
/// alternate layers, LoRA on every linear, the auxiliary loss; every parameter's gradient.
final class GradientTests: XCTestCase {
    static let dir = "train/grad"

    /// ||a − b|| / ||b||, the per-tensor figure the 1e-4 tolerance applies to.
    func normError(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 1e-300
        for i in 0..<a.count { let d = Double(a[i] - b[i]); num += d * d; den += Double(b[i]) * Double(b[i]) }
        return (num / den).squareRoot()
    }

    /// qwen2_moe runs (Models) but has no backward pass: refused with one line, not trained wrongly.
    func testQwen2MoeIsRefused() {
        XCTAssertThrowsError(try TrainableModel(directory: Fixtures.path("lm/qwen2-moe"))) { e in
            XCTAssertEqual(e as? TrainingError, .unsupportedModel("model_type qwen2_moe can be run but not trained"))
        }
    }

    func loadModel() throws -> TrainableModel {
        try TrainableModel(directory: Fixtures.path("\(Self.dir)/model"), speechHeads: 2)
    }

    func examples() throws -> [TrainingExample] {
        let inputs = try Fixtures.tensors("\(Self.dir)/inputs.safetensors")
        let image = try inputs.tensor("image_features"), audio = try inputs.tensor("audio_states")
        return [
            TrainingExample(ids: try inputs.integers("input_ids_0"), labels: try inputs.integers("labels_0"), images: [image]),
            TrainingExample(ids: try inputs.integers("input_ids_1"), labels: try inputs.integers("labels_1"), audios: [audio]),
        ]
    }

    func testLogitsMatchTransformers() throws {
        let model = try loadModel()
        let expected = try Fixtures.tensors("\(Self.dir)/expected.safetensors")
        for (i, ex) in try examples().enumerated() {
            let ours = try model.logits(ex).toArray()
            let ref = try expected.tensor("logits_\(i)").toArray()
            XCTAssertEqual(ours.count, ref.count)
            XCTAssertLessThan(normError(ours, ref), 1e-5, "logits of sequence \(i)")
        }
    }

    func testEveryGradientMatchesAutograd() throws {
        let model = try loadModel()
        model.params.setTrainable { _ in true }
        let exs = try examples()
        let tokens = exs.reduce(0) { $0 + $1.targetCount }
        XCTAssertEqual(tokens, 7)
        let stats = try model.accumulate(exs, ceScale: 1 / Float(tokens), auxScale: model.trunk.auxLossCoefficient)
        let expected = try Fixtures.tensors("\(Self.dir)/expected.safetensors")
        let ce = stats.crossEntropySum / Double(tokens)
        XCTAssertEqual(ce, Double(try expected.tensor("ce").toArray()[0]), accuracy: 1e-4 * ce)
        let aux = Double(try expected.tensor("aux").toArray()[0])
        XCTAssertEqual(stats.auxLoss, aux, accuracy: 1e-4 * aux)
        var checked = 0, worst = (0.0, "")
        for p in model.params.ordered {
            let name = "grad." + p.name
            guard expected.contains(name) else { XCTFail("no reference gradient for \(p.name)"); continue }
            let err = normError(p.grad.toArray(), try expected.tensor(name).toArray())
            XCTAssertLessThan(err, 1e-4, p.name)
            if err > worst.0 { worst = (err, p.name) }
            checked += 1
        }
        XCTAssertEqual(checked, 209, "every parameter of the fixture")
        print("gradients: \(checked) tensors, worst relative error \(worst.0) (\(worst.1))")
    }

    func testAdamWStepsMatchTorch() throws {
        let model = try loadModel()
        model.params.setTrainable { _ in true }
        let expected = try Fixtures.tensors("\(Self.dir)/expected.safetensors")
        let params = model.params.trainable
        let initial = params.map { $0.value.toArray() }
        for p in params { p.grad.floats.update(from: try expected.tensor("grad." + p.name).toArray(), count: p.count) }
        let norm = AdamW.clipGradients(params, maxNorm: 1.0)
        XCTAssertEqual(norm, Double(try expected.tensor("grad_norm").toArray()[0]), accuracy: 1e-5 * norm)
        let opt = AdamW(settings: .init(weightDecay: 0.1))
        for step in 1...2 {
            opt.update(params, lr: 1e-3)
            for (p, x0) in zip(params, initial) {
                // Compare the update itself (params move by ~1e-3, so whole-parameter error would hide it).
                let ref = try expected.tensor("step\(step).\(p.name)").toArray()
                let ours = p.value.toArray()
                let dOurs = zip(ours, x0).map { $0 - $1 }, dRef = zip(ref, x0).map { $0 - $1 }
                XCTAssertLessThan(normError(dOurs, dRef), 1e-4, "step \(step) update of \(p.name)")
                XCTAssertLessThan(normError(ours, ref), 1e-6, "step \(step) \(p.name)")
            }
        }
    }
}

extension GradientTests {
    func testBatchedForwardEqualsPerSequence() throws {
        let model = try loadModel()
        let exs = try examples()
        let (batch, _) = try model.prepare(exs)
        let l = try model.trunk.forward(batch, allLogits: true).toArray()
        _ = try model.trunk.backward(ceScale: 0, auxScale: 0, wantMediaGrad: false)
        let expected = try Fixtures.tensors("\(Self.dir)/expected.safetensors")
        let r0 = try expected.tensor("logits_0").toArray(), r1 = try expected.tensor("logits_1").toArray()
        XCTAssertLessThan(normError(Array(l[0..<r0.count]), r0), 1e-5)
        XCTAssertLessThan(normError(Array(l[r0.count...]), r1), 1e-5)
    }
}
