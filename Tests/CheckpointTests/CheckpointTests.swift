import XCTest
import Foundation
import Checkpoint
import Tensor
import TestSupport

final class CheckpointTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-dir-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func path(_ name: String) -> String { (dir as NSString).appendingPathComponent(name) }

    func filled(_ shape: [Int], _ v: Float) throws -> Tensor {
        try Tensor(shape: shape, values: [Float](repeating: v, count: shape.reduce(1, *)))
    }

    /// transformers' `save_pretrained` output, sharded in four with an index.
    func testReferenceShardedCheckpoint() throws {
        let dir = Fixtures.path("checkpoint/tiny-llama")
        let expected = try XCTUnwrap(Fixtures.json("checkpoint/tiny-llama/expected.json") as? [String: Any])
        let names = try XCTUnwrap(expected["names"] as? [String])
        let sums = try XCTUnwrap(expected["checksums"] as? [String: Double])
        let c = try Checkpoint(directory: dir)
        XCTAssertEqual(c.names, names)
        let config = try ModelConfig.load(directory: dir)
        XCTAssertEqual(config.modelType, "llama")
        XCTAssertEqual(config.numKeyValueHeads, 2)
        XCTAssertEqual(config.headDim, 4)
        let kvShape = [config.numKeyValueHeads * config.headDim, config.hiddenSize]
        let k = try c.take("model.layers.1.self_attn.k_proj.weight", shape: kvShape)
        XCTAssertEqual(k.shape, [8, 16])
        for n in names where !n.hasSuffix("k_proj.weight") || !n.contains("layers.1") {
            let t = try c.take(n)
            let sum = t.toArray().reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(sum, try XCTUnwrap(sums[n]), accuracy: 1e-9 * max(1, abs(sum)) + 1e-9, n)
        }
        XCTAssertNoThrow(try c.finishLoading())
    }

    func testReferenceMixtralConfig() throws {
        let c = try ModelConfig.load(file: Fixtures.path("checkpoint/mixtral-config.json"))
        XCTAssertEqual(c.experts, 4)
        XCTAssertEqual(c.expertsPerToken, 2)
        XCTAssertEqual(c.ropeTheta, 1e6)
        XCTAssertEqual(c.numKeyValueHeads, 2)
        XCTAssertTrue(c.isMoE(layer: 1))
    }

    func testWrittenShardsLoad() throws {
        try SafeTensorsWriter.write(path: path("s-1.safetensors"), tensors: [("a", try filled([2, 3], 1)), ("b", try filled([4], 2))])
        try SafeTensorsWriter.write(path: path("s-2.safetensors"), tensors: [("c", try filled([3, 2], 3).converted(to: .bf16))])
        let index = #"{"metadata": {"total_size": 48}, "weight_map": {"a": "s-1.safetensors", "b": "s-1.safetensors", "c": "s-2.safetensors"}}"#
        try Data(index.utf8).write(to: URL(fileURLWithPath: path("model.safetensors.index.json")))
        let c = try Checkpoint(directory: dir)
        XCTAssertEqual(c.names, ["a", "b", "c"])
        XCTAssertEqual(c.shape("c"), [3, 2])
        XCTAssertNil(c.shape("zz"))
        XCTAssertEqual(try c.take("c", shape: [3, 2]).toArray(), [Float](repeating: 3, count: 6))
        XCTAssertEqual(try c.take("c").dtype, .bf16)
        XCTAssertEqual(try c.take("a").toArray(), [Float](repeating: 1, count: 6))
        XCTAssertThrowsError(try c.finishLoading()) { e in XCTAssertEqual(e as? CheckpointError, .unusedTensors(["b"])) }
        _ = try c.take("b")
        XCTAssertNoThrow(try c.finishLoading())
    }

    func testStrictLoading() throws {
        let tensors = try (0..<8).map { ("layer.\($0).weight", try filled([2, 2], Float($0))) }
        try SafeTensorsWriter.write(path: path("model.safetensors"), tensors: tensors)
        let c = try Checkpoint(directory: dir)
        XCTAssertTrue(c.contains("layer.3.weight"))
        XCTAssertFalse(c.contains("layer.9.weight"))
        // Wrong shape: named, with both shapes.
        XCTAssertThrowsError(try c.take("layer.0.weight", shape: [4])) { e in
            XCTAssertEqual(e as? CheckpointError, .shapeMismatch(name: "layer.0.weight", expected: [4], actual: [2, 2]))
            XCTAssertTrue("\(e)".contains("'layer.0.weight' has shape [2, 2], the config needs [4]"), "\(e)")
        }
        XCTAssertThrowsError(try c.take("missing.weight")) { e in
            XCTAssertEqual(e as? CheckpointError, .missingTensor("missing.weight"))
            XCTAssertTrue("\(e)".contains("'missing.weight'"))
        }
        XCTAssertNil(try c.takeIfPresent("missing.weight"))
        XCTAssertEqual(try c.takeIfPresent("layer.1.weight", shape: [2, 2])?.toArray(), [1, 1, 1, 1])
        // A failed take does not count as used.
        XCTAssertThrowsError(try c.finishLoading()) { e in
            XCTAssertEqual(e as? CheckpointError, .unusedTensors(["layer.0.weight", "layer.2.weight", "layer.3.weight", "layer.4.weight",
                                                                   "layer.5.weight", "layer.6.weight", "layer.7.weight"]))
            XCTAssertTrue("\(e)".contains("7 tensor(s) the model does not use: layer.0.weight, layer.2.weight"), "\(e)")
        }
        c.ignore { $0.hasPrefix("layer.") && $0 != "layer.5.weight" }
        XCTAssertThrowsError(try c.finishLoading()) { e in XCTAssertEqual(e as? CheckpointError, .unusedTensors(["layer.5.weight"])) }
        _ = try c.take("layer.5.weight")
        XCTAssertNoThrow(try c.finishLoading())
    }

    func testConcurrentTakes() throws {
        let tensors = try (0..<64).map { ("t\($0)", try filled([3], Float($0))) }
        try SafeTensorsWriter.write(path: path("model.safetensors"), tensors: tensors)
        let c = try Checkpoint(directory: dir)
        DispatchQueue.concurrentPerform(iterations: 64) { i in _ = try? c.take("t\(i)") }
        XCTAssertNoThrow(try c.finishLoading())
    }

    func testDirectoryWithoutWeights() throws {
        XCTAssertThrowsError(try Checkpoint(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("no model.safetensors or model.safetensors.index.json"), "\(e)")
        }
        XCTAssertThrowsError(try Checkpoint(directory: dir + "/nope"))
    }

    func testSingleFileInit() throws {
        try SafeTensorsWriter.write(path: path("x.safetensors"), tensors: [("w", try filled([2], 5))])
        let c = try Checkpoint(file: path("x.safetensors"))
        XCTAssertEqual(try c.take("w").toArray(), [5, 5])
        XCTAssertNoThrow(try c.finishLoading())
    }
}
