import XCTest
import Foundation
import Checkpoint
import Models
import Tensor
import TestSupport
@testable import Training

/// The three stages one after the other, each on the previous one's output, starting from a dense
/// multimodal model (the demo model with its MoE layers folded back into dense MLPs): stage 1
/// keeps the trunk, stage 2 upcycles and trains the experts and keeps the connectors, stage 3
/// saved as adapters and then continued from those adapters; every output loads for inference.
final class StageChainTests: XCTestCase {
    /// A dense copy of the demo model in `scratch/dense`: layers 0 and 2 get expert `e`'s FFN as
    /// their dense MLP, the routers and other experts are dropped, config.json loses its MoE keys.
    func denseModel(_ s: Scratch, expert e: Int = 1) throws -> String {
        let dir = s.path("dense")
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in ["tokenizer.json", "tokenizer_config.json", "vision_tower", "audio_tower"] {
            try fm.createSymbolicLink(atPath: dir + "/" + f, withDestinationPath: TrainFixture.model + "/" + f)
        }
        let cfgData = try Data(contentsOf: URL(fileURLWithPath: TrainFixture.model + "/config.json"))
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: cfgData) as? [String: Any])
        for k in ["num_experts", "num_experts_per_tok", "moe_layers"] { cfg[k] = nil }
        cfg["model_type"] = "llama"
        try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .prettyPrinted])
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        let src = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        var tensors: [(String, Tensor)] = []
        for name in src.names {
            if name.contains(".mlp.gate.weight") { continue }
            if let r = name.range(of: ".mlp.experts.\(e).") {
                tensors.append((name.replacingCharacters(in: r, with: ".mlp."), try src.tensor(name)))
            } else if !name.contains(".mlp.experts.") {
                tensors.append((name, try src.tensor(name)))
            }
        }
        try SafeTensorsWriter.write(path: dir + "/model.safetensors", tensors: tensors)
        return dir
    }

    func file(_ dir: String) throws -> SafeTensorsFile { try SafeTensorsFile(path: dir + "/model.safetensors") }

    func run(_ o: TrainingOptions) throws -> TrainingRun {
        let r = try TrainingRun(options: o, log: { _ in })
        try r.run()
        return r
    }

    func testDenseModelThroughAllStages() throws {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        let dense = try denseModel(s)
        let denseFile = try file(dense)
        XCTAssertFalse(try ModelConfig.load(directory: dense).hasMoE)

        // Stage 3 on the dense trunk (the dense baseline of the MoE-vs-dense comparison) trains its
        // LoRA adapters alone: with no routers, every base tensor keeps its value.
        var o3 = options(stage: .mixed, data: data, scratch: s, out: "dense-s3")
        o3.model = dense
        o3.saveAdapters = true
        let denseRun = try run(o3)
        XCTAssertFalse(denseRun.model.params.trainable.isEmpty)
        XCTAssertTrue(denseRun.model.params.trainable.allSatisfy { $0.name.contains(".lora_") })
        let d3 = try file(o3.out)
        for n in denseFile.names { XCTAssertEqual(tensorBytes(denseFile, n), tensorBytes(d3, n), n) }
        let dl = try LanguageModel.load(directory: o3.out).logits(ids: [1, 5, 9, 20]).toArray()
        let d0 = try LanguageModel.load(directory: dense).logits(ids: [1, 5, 9, 20]).toArray()
        XCTAssertGreaterThan(relativeError(dl, d0), 1e-4, "stage 3 changed the dense model through its adapters")

        // Stage 1 on the dense model: only connectors change.
        var o1 = options(stage: .alignment, data: data, scratch: s, out: "s1")
        o1.model = dense
        _ = try run(o1)
        let s1 = try file(o1.out)
        for n in denseFile.names where !n.hasSuffix("audio_decoder.embed_tokens.weight") {
            let same = tensorBytes(denseFile, n) == tensorBytes(s1, n)
            XCTAssertEqual(same, !StageTests.isConnector(n), n)
        }

        // Stage 2 upcycles: every even layer gets 4 experts, copies of its dense MLP, then trained.
        var o2 = options(stage: .experts, data: data, scratch: s, out: "s2")
        o2.model = o1.out
        _ = try run(o2)
        let cfg2 = try ModelConfig.load(directory: o2.out)
        XCTAssertTrue(cfg2.hasMoE)
        XCTAssertEqual(cfg2.experts, 4)
        XCTAssertEqual(cfg2.moeLayers, [0, 2])
        let s2 = try file(o2.out)
        for l in [0, 2] {
            for p in ["gate_proj", "up_proj", "down_proj"] {
                XCTAssertFalse(s2.contains("model.layers.\(l).mlp.\(p).weight"), "dense MLP of layer \(l) left behind")
                let dense = tensorBytes(s1, "model.layers.\(l).mlp.\(p).weight")
                for e in 0..<4 {
                    let name = "model.layers.\(l).mlp.experts.\(e).\(p).weight"
                    XCTAssertEqual(s2.entries[name]?.shape, s1.entries["model.layers.\(l).mlp.\(p).weight"]?.shape, name)
                    XCTAssertNotEqual(tensorBytes(s2, name), dense, "\(name) was not trained (each modality trains its expert)")
                }
            }
            XCTAssertEqual(s2.entries["model.layers.\(l).mlp.gate.weight"]?.shape, [4, 64])
        }
        for n in s1.names where s2.contains(n) {
            XCTAssertEqual(tensorBytes(s1, n), tensorBytes(s2, n), "\(n) is not an expert and must keep stage 1's value")
        }
        XCTAssertTrue(s1.names.filter { !s2.contains($0) }.allSatisfy { $0.contains(".mlp.") && ($0.contains("layers.0.") || $0.contains("layers.2.")) })

        // Stage 3 with adapters (rank 4, alpha 32: scale 8) on the upcycled model.
        var o3a = options(stage: .mixed, data: data, scratch: s, out: "s3a")
        o3a.model = o2.out
        o3a.loraRank = 4
        o3a.loraAlpha = 32
        o3a.saveAdapters = true
        _ = try run(o3a)
        let s3a = try file(o3a.out)
        for n in s2.names {
            XCTAssertEqual(tensorBytes(s2, n) == tensorBytes(s3a, n), !StageTests.isRouter(n), n)
        }
        let cfg = try AdapterConfig.load(directory: o3a.out)
        XCTAssertEqual(cfg.rank, 4)
        XCTAssertEqual(cfg.scale, 8)

        // Continuing stage 3 from those adapters with lr 0 keeps them, and its merged output is what
        // the inference loader merges from the adapter directory (the adapters' own scale, not --lora-*).
        var o3b = options(stage: .mixed, data: data, scratch: s, out: "s3b", steps: 1, lr: 0)
        o3b.model = o3a.out
        let continued = try run(o3b)
        XCTAssertEqual(continued.model.params.trainable.filter { $0.name.contains(".lora_") }.count,
                       2 * StageTests.names.filter(StageTests.isLoRATarget).count)
        XCTAssertTrue(continued.model.params.trainable.filter { $0.name.contains(".lora_A.") }.allSatisfy { $0.shape[0] == 4 })
        let merged = try Checkpoint(directory: o3a.out)
        let s3b = try file(o3b.out)
        XCTAssertEqual(Set(s3b.names), Set(s3a.names))
        for n in s3b.names {
            let want = try merged.take(n).converted(to: .f32).toArray()
            let got = try s3b.tensor(n).toArray()
            XCTAssertLessThan(relativeError(got, want), 1e-6, n)
        }

        // Every output is a model the inference code loads, and the adapter directory answers like its merge.
        let ids = [1, 5, 9, 20]
        let la = try LanguageModel.load(directory: o3a.out).logits(ids: ids).toArray()
        let lb = try LanguageModel.load(directory: o3b.out).logits(ids: ids).toArray()
        XCTAssertLessThan(relativeError(la, lb), 1e-5)
        let l2 = try LanguageModel.load(directory: o2.out).logits(ids: ids).toArray()
        XCTAssertGreaterThan(relativeError(la, l2), 1e-4, "stage 3 changed the model")
    }

    func testGradientAccumulationEqualsTheLargerBatch() throws {
        // Two text samples: one batch of 2, or two micro-batches of 1 accumulated: the same steps.
        // (Stage 2: no auxiliary loss, whose per-micro-batch mean would differ by design.)
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n" + TrainFixture.text("d", "Say bye", "good bye"))
        let big = options(stage: .experts, data: data, scratch: s, out: "big", steps: 4, batch: 2)
        var acc = options(stage: .experts, data: data, scratch: s, out: "acc", steps: 4, batch: 1)
        acc.gradientAccumulation = 2
        let a = try run(big), b = try run(acc)
        XCTAssertEqual(a.records.map(\.tokens), b.records.map(\.tokens))
        for (x, y) in zip(a.records, b.records) {
            XCTAssertEqual(x.loss, y.loss, accuracy: 1e-5 * x.loss)
            XCTAssertEqual(x.gradNorm, y.gradNorm, accuracy: 1e-4 * x.gradNorm)
            XCTAssertEqual(x.learningRate, y.learningRate)
        }
        // The weights agree to 1e-4 except where Adam amplifies rounding: an element whose gradient is
        // at rounding level may step ±lr in one order and ∓lr in the other (seen on one element in
        // 8192 on AMD Zen's BLAS kernels). At most 0.1% of elements may do so, by at most 2·lr a step.
        let fa = try file(big.out), fb = try file(acc.out)
        let lr = Float(big.learningRate ?? 0)
        for n in fa.names {
            let want = try fa.tensor(n).toArray(), got = try fb.tensor(n).toArray()
            let scale = want.reduce(Float(1e-30)) { max($0, abs($1)) }
            var flipped = 0
            for i in want.indices where abs(got[i] - want[i]) > 1e-4 * scale {
                flipped += 1
                XCTAssertLessThanOrEqual(abs(got[i] - want[i]), 2 * lr * 4, "\(n)[\(i)]")
            }
            XCTAssertLessThanOrEqual(flipped, max(1, want.count / 1000), n)
        }
        // Epoch-based totals count optimizer steps: 2 samples, batch 1, accumulation 2 → 1 step per epoch.
        var epochs = acc
        epochs.steps = nil
        epochs.epochs = 3
        epochs.out = s.path("epochs")
        XCTAssertEqual(try TrainingRun(options: epochs, log: { _ in }).totalSteps, 3)
    }
}
