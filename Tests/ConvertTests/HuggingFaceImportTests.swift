import Foundation
import XCTest
import Checkpoint
import Tensor
import TestSupport

/// `unimoe convert` on Hugging Face safetensors directories as published (the language-model
/// fixtures of scripts/fixtures/lm.py and qwen2_moe.py): the converted directory's logits equal the
/// ones transformers computed; the key check is strict both ways.
final class HuggingFaceImportTests: XCTestCase {
    var tmp = ""
    var run: ConvertRunner { ConvertRunner(scratch: tmp) }

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("hf-import-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: tmp) }

    func fixture(_ name: String) throws -> (ids: [Int], logits: [Float]) {
        let ids = try XCTUnwrap((try Fixtures.json("lm/\(name)/expected.json") as? [String: Any])?["ids"] as? [Int])
        return (ids, try Fixtures.tensors("lm/\(name)/expected.safetensors").tensor("logits").toArray())
    }

    /// Converts lm/<name> and checks the logits, the summary and the copied files.
    func assertImports(_ name: String, experts: Int, moeLayers: [Int], dtype: String? = nil, tolerance: Float = 1e-4,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let (out, summary) = try run.convert(["--from", Fixtures.path("lm/\(name)")] + (dtype.map { ["--dtype", $0] } ?? []),
                                             file: file, line: line)
        XCTAssertEqual(summary["experts"] as? Int, experts, file: file, line: line)
        XCTAssertEqual(summary["moe_layers"] as? [Int], moeLayers, file: file, line: line)
        let (ids, want) = try fixture(name)
        let err = relativeError(try run.logits(out, ids: ids, file: file, line: line), want)
        XCTAssertLessThanOrEqual(err, tolerance, "\(name)", file: file, line: line)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/generation_config.json"), file: file, line: line)
    }

    func testMixtralImports() throws {
        try assertImports("mixtral", experts: 8, moeLayers: [0, 1])
    }

    func testQwen2MoEWithSharedExpertImports() throws {
        try assertImports("qwen2-moe", experts: 8, moeLayers: [0, 2])
        let out = try run.convert(["--from", Fixtures.path("lm/qwen2-moe")]).out
        let names = try SafeTensorsFile(path: out + "/model.safetensors").names
        XCTAssertTrue(names.contains("model.layers.0.mlp.shared_expert_gate.weight"))
        XCTAssertTrue(names.contains("model.layers.0.mlp.shared_expert.down_proj.weight"))
        XCTAssertTrue(names.contains("model.layers.0.self_attn.q_proj.bias"))
    }

    func testShardedLlamaImportsIntoOneFile() throws {
        try assertImports("llama-gqa", experts: 0, moeLayers: [])
    }

    func testDTypeConversion() throws {
        let (out, _) = try run.convert(["--from", Fixtures.path("lm/mixtral"), "--dtype", "bf16"])
        let f = try SafeTensorsFile(path: out + "/model.safetensors")
        XCTAssertTrue(f.entries.values.allSatisfy { $0.dtype == .bf16 })
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["torch_dtype"] as? String, "bfloat16")
        XCTAssertEqual(config["model_type"] as? String, "mixtral", "the architecture is kept")
        let (ids, want) = try fixture("mixtral")
        let err = relativeError(try run.logits(out, ids: ids), want)
        XCTAssertLessThanOrEqual(err, 5e-2)
        XCTAssertGreaterThan(err, 0, "bf16 weights must have been rounded")
    }

    /// A copy of lm/<name> whose model.safetensors was edited.
    func edited(_ name: String, _ edit: (inout [(String, Tensor)]) throws -> Void) throws -> String {
        let dir = (tmp as NSString).appendingPathComponent("src-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: Fixtures.path("lm/\(name)"), toPath: dir)
        let f = try SafeTensorsFile(path: dir + "/model.safetensors")
        var list = try f.names.map { ($0, try f.tensor($0).copy()) }
        try edit(&list)
        try SafeTensorsWriter.write(path: dir + "/model.safetensors", tensors: list)
        return dir
    }

    func testUnknownAndMissingTensorsAreNamed() throws {
        let extra = try edited("qwen2-moe") { $0.append(("model.layers.0.mlp.frobnicator.weight", Tensor(zeros: [2, 2]))) }
        try run.assertFails(["--from", extra], ["model.layers.0.mlp.frobnicator.weight", "does not use"])
        let missing = try edited("qwen2-moe") { $0.removeAll { $0.0 == "model.layers.2.mlp.shared_expert_gate.weight" } }
        try run.assertFails(["--from", missing], ["no tensor 'model.layers.2.mlp.shared_expert_gate.weight'"])
        let misshapen = try edited("mixtral") { list in
            let i = try XCTUnwrap(list.firstIndex { $0.0 == "model.layers.1.block_sparse_moe.gate.weight" })
            list[i].1 = Tensor(zeros: [3, list[i].1.shape[1]])
        }
        try run.assertFails(["--from", misshapen], ["model.layers.1.block_sparse_moe.gate.weight", "shape"])
    }

    func testUnsupportedModelTypeAndBaseAreRefused() throws {
        let dir = (tmp as NSString).appendingPathComponent("gpt")
        try FileManager.default.copyItem(atPath: Fixtures.path("lm/mixtral"), toPath: dir)
        let cfg = dir + "/config.json"
        let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: "\"mixtral\"", with: "\"gpt_neox\"")
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        try run.assertFails(["--from", dir], ["model_type 'gpt_neox' cannot be imported"])
        let r = try Binaries.unimoe(["convert", "--from", Fixtures.path("lm/mixtral"), "--base", dir, "--out", tmp + "/x"])
        XCTAssertEqual(r.status, 64, r.stderr)
    }

    /// unimoe's own adapters beside the weights are merged, as `unimoe logits` merges them on load.
    func testOwnAdaptersAreMerged() throws {
        let src = try edited("mixtral") { _ in }
        let name = "model.layers.1.self_attn.q_proj"
        let w = try SafeTensorsFile(path: src + "/model.safetensors").tensor(name + ".weight")
        let r = 2
        let a = try Tensor(shape: [r, w.shape[1]], values: (0..<(r * w.shape[1])).map { Float($0 % 7) * 0.05 - 0.1 })
        let b = try Tensor(shape: [w.shape[0], r], values: (0..<(w.shape[0] * r)).map { Float($0 % 5) * 0.1 - 0.2 })
        try SafeTensorsWriter.write(path: src + "/adapter.safetensors", tensors: [(name + ".lora_A.weight", a), (name + ".lora_B.weight", b)])
        try AdapterConfig(rank: r, alpha: 4, targetModules: ["q_proj"]).write(directory: src)
        let (out, summary) = try run.convert(["--from", src])
        XCTAssertEqual(summary["merged_lora"] as? Int, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter.safetensors"))
        let (ids, plain) = try fixture("mixtral")
        let withAdapters = try run.logits(src, ids: ids)
        XCTAssertGreaterThan(relativeError(withAdapters, plain), 1e-3, "the adapters must matter")
        XCTAssertLessThanOrEqual(relativeError(try run.logits(out, ids: ids), withAdapters), 1e-5)
    }
}
