import Foundation
import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// Qwen2-MoE directories as transformers writes them (per-expert Hub names, shared expert + gate,
/// q/k/v biases); logits and greedy tokens against transformers run in LanguageModelTests and
/// LMCommandTests over every `LMFixture`.
final class Qwen2MoeTests: XCTestCase {
    let plain = LMFixture(name: "qwen2-moe", tolerance: 1e-4)
    let norm = LMFixture(name: "qwen2-moe-norm", tolerance: 1e-4)

    func testLayoutFromConfig() throws {
        let m = try plain.load()
        XCTAssertEqual(m.architecture.modelType, "qwen2_moe")
        XCTAssertEqual(m.architecture.routingRule, .softmaxOverAll(renormalize: false))
        // mlp_only_layers [1]: layers 0 and 2 sparse, with a shared expert; the dense layer uses intermediate_size.
        XCTAssertEqual(m.layers.map { $0.sparse != nil }, [true, false, true])
        XCTAssertEqual(m.layers[0].sparse?.shared?.inner, 48)
        XCTAssertEqual(m.layers[0].sparse?.sharedGate?.shape, [1, 64])
        XCTAssertEqual(m.layers[1].dense?.inner, 96)
        XCTAssertEqual(m.localExperts?.inner, 16)
        XCTAssertEqual(m.localExperts?.loaded, [0: Array(0..<8), 2: Array(0..<8)])
        XCTAssertNotNil(m.layers[0].attention.qBias)
        XCTAssertNil(m.layers[0].attention.oBias)
        // decoder_sparse_step 2: layer 1 sparse only; norm_topk_prob true.
        let n = try norm.load()
        XCTAssertEqual(n.layers.map { $0.sparse != nil }, [false, true])
        XCTAssertEqual(n.architecture.routingRule, .softmaxOverAll(renormalize: true))
    }

    func testRoutingRule() {
        let logits: [Float] = [1, 3, 2, 0]
        var idx = [Int](repeating: 0, count: 2), w = [Float](repeating: 0, count: 2)
        let z = logits.map { expf($0) }.reduce(0, +)
        Router.route(logits, rows: 1, experts: 4, k: 2, rule: .softmaxOverAll(renormalize: false), noise: nil, indices: &idx, weights: &w)
        XCTAssertEqual(idx, [1, 2])
        XCTAssertEqual(w[0], expf(3) / z, accuracy: 1e-6)
        XCTAssertEqual(w[1], expf(2) / z, accuracy: 1e-6)
        Router.route(logits, rows: 1, experts: 4, k: 2, rule: .softmaxOverAll(renormalize: true), noise: nil, indices: &idx, weights: &w)
        XCTAssertEqual(idx, [1, 2])
        XCTAssertEqual(w[0], expf(3) / (expf(3) + expf(2)), accuracy: 1e-6)
        XCTAssertEqual(w[0] + w[1], 1, accuracy: 1e-6)
    }

    /// The routed experts in another runner (as an expert worker serves them); the shared expert
    /// stays with the trunk, so the logits are the local ones.
    func testRemoteRoutedExpertsSharedExpertInTrunk() throws {
        for f in [plain, norm] {
            let trunk = try f.load(.remote)
            XCTAssertNil(trunk.localExperts)
            XCTAssertNotNil(trunk.layers.compactMap(\.sparse).first?.shared)
            let worker = try LocalExperts.load(directory: f.directory)
            let ids = try f.ids
            let remote = try trunk.logits(ids: ids, experts: worker).toArray()
            XCTAssertEqual(remote, try f.load().logits(ids: ids).toArray(), f.name)
            assertClose(remote, try f.logits, f.tolerance, "\(f.name) remote experts")
        }
    }

    func testKVCacheDecodeEqualsFullRecompute() throws {
        let model = try plain.load()
        let ids = try plain.ids
        let full = try model.logits(ids: ids).toArray()
        let cache = model.makeCache()
        var rows = try model.forward([SequenceStep(cache: cache, embeddings: model.embed(ids: Array(ids[..<4])))], allPositions: true)[0].toArray()
        for t in 4..<ids.count {
            rows += try model.forward([SequenceStep(cache: cache, embeddings: model.embed(ids: [ids[t]]))], allPositions: false)[0].toArray()
        }
        assertClose(rows, full, 1e-5, "qwen2-moe cached decode vs full")
    }

    func testMissingSharedExpertGateIsNamed() throws {
        let dir = try TempModelDir(copying: plain.directory)
        try dir.editTensors { $0.removeAll { $0.0 == "model.layers.2.mlp.shared_expert_gate.weight" } }
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            XCTAssertEqual(e as? CheckpointError, .missingTensor("model.layers.2.mlp.shared_expert_gate.weight"))
        }
        // The shared expert belongs to the trunk: remote placement still needs it.
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path, experts: .remote)) { e in
            XCTAssertEqual(e as? CheckpointError, .missingTensor("model.layers.2.mlp.shared_expert_gate.weight"))
        }
    }

    func testMissingSharedExpertProjectionAndBiasAreNamed() throws {
        for name in ["model.layers.0.mlp.shared_expert.down_proj.weight", "model.layers.1.self_attn.v_proj.bias"] {
            let dir = try TempModelDir(copying: plain.directory)
            try dir.editTensors { $0.removeAll { $0.0 == name } }
            XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
                XCTAssertEqual(e as? CheckpointError, .missingTensor(name))
            }
        }
    }

    func testUnknownTensorIsNamed() throws {
        for name in ["model.layers.1.mlp.shared_expert_gate.weight", "model.layers.0.self_attn.o_proj.bias"] {
            let dir = try TempModelDir(copying: plain.directory)
            try dir.editTensors { $0.append((name, Tensor(zeros: name.hasSuffix("bias") ? [64] : [1, 64]))) }
            XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
                XCTAssertEqual(e as? CheckpointError, .unusedTensors([name]))
            }
        }
    }

    func testWrongSharedGateShapeIsNamed() throws {
        let dir = try TempModelDir(copying: plain.directory)
        try dir.editTensors { l in
            if let i = l.firstIndex(where: { $0.0 == "model.layers.0.mlp.shared_expert_gate.weight" }) { l[i].1 = Tensor(zeros: [64]) }
        }
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            XCTAssertTrue("\(e)".contains("model.layers.0.mlp.shared_expert_gate.weight"), "\(e)")
        }
    }

    func testCLIErrorNamesMissingSharedGate() throws {
        let dir = try TempModelDir(copying: plain.directory)
        try dir.editTensors { $0.removeAll { $0.0 == "model.layers.0.mlp.shared_expert_gate.weight" } }
        let out = NSTemporaryDirectory() + "/qwen-logits-\(UUID().uuidString).f32"
        defer { try? FileManager.default.removeItem(atPath: out) }
        for args in [["logits", "--model", dir.path, "--ids", "3,4,5", "--out", out],
                     ["generate", "--model", dir.path, "--ids", "3,4,5", "--max-new-tokens", "2", "--json"]] {
            let r = try UnimoeProcess.run(args)
            XCTAssertEqual(r.status, 1, args[0])
            XCTAssertTrue(r.stderr.contains("model.layers.0.mlp.shared_expert_gate.weight"), r.stderr)
        }
    }
}
