import XCTest
import Foundation
import Checkpoint
import TestSupport
@testable import Training

/// Each stage trains exactly what it should: after a few steps on the four-modality data, every
/// tensor of the written model that the stage must not train is byte-identical to the source
/// checkpoint, and the tensors it trains have changed.
final class StageTests: XCTestCase {
    /// The one source tensor training deliberately leaves out (the Whisper decoder's token embeddings,
    /// which the speech connector never reads; inference skips it too).
    static let unusedSourceTensor = "model.mm_audio_aligner.decoder.audio_decoder.embed_tokens.weight"

    struct Outcome {
        var out: String
        var changed: Set<String>
        var unchanged: Set<String>
        var records: [StepRecord]
    }

    /// Trains `stage` for 8 steps (batch 2) on the four samples and compares OUT/model.safetensors
    /// with the source, tensor by tensor, byte for byte.
    func train(_ stage: TrainingStage, saveAdapters: Bool = false) throws -> Outcome {
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.fourSamples)
        var o = options(stage: stage, data: data, scratch: s)
        o.saveAdapters = saveAdapters
        let run = try TrainingRun(options: o, log: { _ in })
        try run.run()
        XCTAssertEqual(run.records.map(\.step), Array(1...8))
        XCTAssertTrue(run.records.allSatisfy { $0.loss.isFinite && $0.gradNorm.isFinite })

        let src = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        let out = try SafeTensorsFile(path: o.out + "/model.safetensors")
        XCTAssertEqual(Set(out.names), Set(src.names).subtracting([Self.unusedSourceTensor]),
                       "the written model holds the source's tensors (no more, no fewer)")
        var changed = Set<String>(), unchanged = Set<String>()
        for name in out.names {
            guard let a = src.entries[name], let b = out.entries[name] else { continue }
            XCTAssertEqual(a.shape, b.shape, name)
            XCTAssertEqual(a.dtype, b.dtype, name)
            if tensorBytes(src, name) == tensorBytes(out, name) { unchanged.insert(name) } else { changed.insert(name) }
        }
        // The rest of a model directory: config, tokenizer, towers.
        let fm = FileManager.default
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "loss.jsonl",
                  "vision_tower/config.json", "vision_tower/model.safetensors", "vision_tower/preprocessor_config.json",
                  "audio_tower/config.json", "audio_tower/model.safetensors", "audio_tower/preprocessor_config.json"] {
            XCTAssertTrue(fm.fileExists(atPath: o.out + "/" + f), "OUT/\(f) missing")
        }
        for tower in ["vision_tower", "audio_tower"] {
            XCTAssertEqual(fm.contents(atPath: o.out + "/\(tower)/model.safetensors"),
                           fm.contents(atPath: TrainFixture.model + "/\(tower)/model.safetensors"), "\(tower) is frozen")
        }
        XCTAssertEqual(try lossLog(o.out + "/loss.jsonl").map(\.step), Array(1...8))
        return Outcome(out: o.out, changed: changed, unchanged: unchanged, records: run.records)
    }

    static let names: [String] = {
        (try? SafeTensorsFile(path: TrainFixture.model + "/model.safetensors").names)?.filter { $0 != unusedSourceTensor } ?? []
    }()

    static func isConnector(_ n: String) -> Bool {
        n.hasPrefix("model.mm_projector.") || n == "model.query_tokens" || n.hasPrefix("model.mm_audio_aligner.")
    }
    static func isExpert(_ n: String) -> Bool {
        n.hasPrefix("model.layers.0.mlp.experts.") || n.hasPrefix("model.layers.2.mlp.experts.")
    }
    static func isRouter(_ n: String) -> Bool {
        n == "model.layers.0.mlp.gate.weight" || n == "model.layers.2.mlp.gate.weight"
    }
    static func isLoRATarget(_ n: String) -> Bool {
        n.hasPrefix("model.layers.") && ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            .contains { n.hasSuffix(".\($0).weight") }
    }

    func testNamesCoverEveryKind() {
        XCTAssertEqual(Self.names.count, 117)
        XCTAssertEqual(Self.names.filter(Self.isExpert).count, 2 * 4 * 3)
        XCTAssertEqual(Self.names.filter(Self.isRouter).count, 2)
        XCTAssertEqual(Self.names.filter(Self.isLoRATarget).count, 4 * 4 + 2 * 3 + 2 * 4 * 3)
        XCTAssertGreaterThan(Self.names.filter(Self.isConnector).count, 30)
    }

    func testStage1TrainsOnlyTheConnectors() throws {
        let r = try train(.alignment)
        XCTAssertEqual(r.changed, Set(Self.names.filter(Self.isConnector)),
                       "changed but frozen: \(r.changed.filter { !Self.isConnector($0) }.sorted()); trained but unchanged: \(r.unchanged.filter(Self.isConnector).sorted())")
        XCTAssertTrue(r.records.allSatisfy { $0.loss == $0.crossEntropy }, "stage 1 adds no auxiliary loss")
    }

    func testStage2TrainsOnlyTheExperts() throws {
        let r = try train(.experts)
        XCTAssertEqual(r.changed, Set(Self.names.filter(Self.isExpert)),
                       "changed but frozen: \(r.changed.filter { !Self.isExpert($0) }.sorted()); trained but unchanged: \(r.unchanged.filter(Self.isExpert).sorted())")
        XCTAssertTrue(r.records.allSatisfy { $0.loss == $0.crossEntropy }, "stage 2 adds no auxiliary loss")
    }

    func testStage2ForcesOneExpertPerModality() throws {
        // One sample of one modality: only that modality's expert (text → 0) learns.
        let s = try makeScratch()
        let data = try s.write("data.jsonl", TrainFixture.textLine + "\n")
        let o = options(stage: .experts, data: data, scratch: s, steps: 3)
        let run = try TrainingRun(options: o, log: { _ in })
        try run.run()
        let src = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        let out = try SafeTensorsFile(path: o.out + "/model.safetensors")
        let changed = Set(src.names.filter { tensorBytes(src, $0) != tensorBytes(out, $0) && out.contains($0) })
        XCTAssertEqual(changed, Set(Self.names.filter { $0.hasPrefix("model.layers.0.mlp.experts.0.") || $0.hasPrefix("model.layers.2.mlp.experts.0.") }))
    }

    func testStage3MergedTrainsOnlyRoutersAndLoRATargets() throws {
        let r = try train(.mixed)
        let allowed = Set(Self.names.filter { Self.isRouter($0) || Self.isLoRATarget($0) })
        XCTAssertTrue(r.changed.isSubset(of: allowed), "changed but frozen: \(r.changed.subtracting(allowed).sorted())")
        for n in Self.names.filter(Self.isRouter) { XCTAssertTrue(r.changed.contains(n), "router \(n) did not change") }
        // Every attention projection and dense MLP gets a LoRA delta (experts only when routed to).
        for n in Self.names where Self.isLoRATarget(n) && !Self.isExpert(n) {
            XCTAssertTrue(r.changed.contains(n), "\(n) should carry a merged LoRA delta")
        }
        for l in [0, 2] {
            XCTAssertTrue(r.changed.contains { $0.hasPrefix("model.layers.\(l).mlp.experts.") }, "no expert of layer \(l) changed")
        }
        // Embeddings, norms, the LM head and the connectors are untouched.
        for n in Self.names where !allowed.contains(n) { XCTAssertTrue(r.unchanged.contains(n), n) }
        XCTAssertTrue(r.unchanged.contains("model.embed_tokens.weight") && r.unchanged.contains("lm_head.weight")
                      && r.unchanged.contains("model.norm.weight") && r.unchanged.contains("model.mm_projector.0.weight"))
        XCTAssertTrue(r.records.allSatisfy { $0.auxLoss > 0 && $0.loss > $0.crossEntropy }, "stage 3 trains with the auxiliary loss")
        XCTAssertFalse(FileManager.default.fileExists(atPath: r.out + "/adapter.safetensors"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: r.out + "/adapter_config.json"))
    }

    func testStage3WithAdaptersKeepsTheBaseWeights() throws {
        let r = try train(.mixed, saveAdapters: true)
        XCTAssertEqual(r.changed, Set(Self.names.filter(Self.isRouter)), "only the routers change in the base weights")
        let adapter = try SafeTensorsFile(path: r.out + "/adapter.safetensors")
        let targets = Self.names.filter(Self.isLoRATarget)
        XCTAssertEqual(Set(adapter.names), Set(targets.flatMap { t -> [String] in
            let stem = String(t.dropLast(".weight".count))
            return [stem + ".lora_A.weight", stem + ".lora_B.weight"]
        }))
        let src = try SafeTensorsFile(path: TrainFixture.model + "/model.safetensors")
        for t in targets {
            let stem = String(t.dropLast(".weight".count))
            let w = src.entries[t]!.shape
            XCTAssertEqual(adapter.entries[stem + ".lora_A.weight"]?.shape, [8, w[1]], t)
            XCTAssertEqual(adapter.entries[stem + ".lora_B.weight"]?.shape, [w[0], 8], t)
        }
        // The attention adapters have learned something (B starts at zero).
        let b = try adapter.tensor("model.layers.1.self_attn.q_proj.lora_B.weight").toArray()
        XCTAssertTrue(b.contains { $0 != 0 })
        let cfg = try AdapterConfig.load(directory: r.out)
        XCTAssertEqual(cfg.rank, 8)
        XCTAssertEqual(cfg.alpha, 16)
        XCTAssertEqual(cfg.scale, 2)
    }
}
