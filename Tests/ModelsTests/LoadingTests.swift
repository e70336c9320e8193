import Foundation
import XCTest
import Tensor
import Checkpoint
import TestSupport
@testable import Models

/// Strict loading: every checkpoint tensor used, every parameter present with its shape, and
/// configurations the engine cannot run refused with a message naming the problem.
final class LoadingTests: XCTestCase {
    let source = LMFixture.all[4].directory   // unimoe, single-file safetensors

    func testUnusedTensorIsNamed() throws {
        let dir = try TempModelDir(copying: source)
        try dir.editTensors { $0.append(("model.layers.1.mlp.gate.weight", Tensor(zeros: [4, 64]))) }
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            XCTAssertEqual(e as? CheckpointError, .unusedTensors(["model.layers.1.mlp.gate.weight"]))
        }
    }

    func testMissingTensorIsNamed() throws {
        let dir = try TempModelDir(copying: source)
        try dir.editTensors { $0.removeAll { $0.0 == "model.layers.2.mlp.experts.3.up_proj.weight" } }
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            XCTAssertEqual(e as? CheckpointError, .missingTensor("model.layers.2.mlp.experts.3.up_proj.weight"))
        }
        // With remote experts the expert tensors are not read at all.
        XCTAssertNoThrow(try LanguageModel.load(directory: dir.path, experts: .remote))
    }

    func testWrongShapeIsNamed() throws {
        let dir = try TempModelDir(copying: source)
        try dir.editTensors { list in
            let i = try XCTUnwrap(list.firstIndex { $0.0 == "model.layers.0.self_attn.k_proj.weight" })
            list[i].1 = Tensor(zeros: [32, 64])
        }
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            XCTAssertEqual(e as? CheckpointError,
                           .shapeMismatch(name: "model.layers.0.self_attn.k_proj.weight", expected: [64, 64], actual: [32, 64]))
        }
    }

    func testMalformedConfigIsACheckpointError() throws {
        let dir = try TempModelDir(copying: source)
        try "{\"model_type\": \"unimoe\", \"hidden_size\": 64".write(toFile: dir.file("config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LanguageModel.load(directory: dir.path)) { e in
            guard case .config = e as? CheckpointError else { return XCTFail("\(e)") }
        }
    }

    func testRemoteLoadSkipsOnlyExpertTensors() throws {
        let ckpt = try Checkpoint(directory: source)
        let config = try ModelConfig.load(directory: source)
        _ = try LanguageModel(config: config, checkpoint: ckpt, experts: .remote)
        try ckpt.finishLoading()
        let arch = try Architecture.forConfig(config)
        XCTAssertTrue(arch.isExpertTensor("model.layers.0.mlp.experts.1.down_proj.weight"))
        XCTAssertFalse(arch.isExpertTensor("model.layers.0.mlp.gate.weight"))
        XCTAssertFalse(arch.isExpertTensor("model.layers.1.mlp.down_proj.weight"))
        XCTAssertTrue(try Architecture.named("mixtral").isExpertTensor("model.layers.3.block_sparse_moe.experts.0.w2.weight"))
    }
}
