import Foundation
import XCTest
import Checkpoint
import TestSupport

/// `unimoe convert` on the released-layout fixtures (scripts/fixtures/convert.py): the converted
/// directory's `unimoe logits` equal PyTorch's, plain, sharded and with LoRA merged; hostile PyTorch
/// files fail with one typed line and never run anything.
final class ConvertCommandTests: XCTestCase {
    static let sentinel = "/tmp/unimoe-convert-sentinel"
    var tmp = ""

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("convert-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: tmp) }

    var ids: [Int] {
        get throws { try XCTUnwrap((try Fixtures.json("convert/expected.json") as? [String: Any])?["ids"] as? [Int]) }
    }

    func expected(_ name: String) throws -> [Float] {
        try Fixtures.tensors("convert/expected.safetensors").tensor(name).toArray()
    }

    var run: ConvertRunner { ConvertRunner(scratch: tmp) }

    /// Converts `source` into a fresh directory and returns it.
    func convert(_ source: String, _ extra: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let (out, obj) = try run.convert(["--from", source] + extra, file: file, line: line)
        XCTAssertEqual(obj["experts"] as? Int, 4, file: file, line: line)
        XCTAssertEqual(obj["moe_layers"] as? [Int], [0], file: file, line: line)
        return out
    }

    func logits(_ model: String, file: StaticString = #filePath, line: UInt = #line) throws -> [Float] {
        try run.logits(model, ids: try ids, file: file, line: line)
    }

    func testConvertedLogitsMatchPyTorch() throws {
        let out = try convert(Fixtures.path("convert/base"))
        let err = relativeError(try logits(out), try expected("logits"))
        XCTAssertLessThanOrEqual(err, 1e-4)
        // The config says what the loader needs; the tokenizer files came along; inv_freq was dropped.
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["model_type"] as? String, "unimoe")
        XCTAssertEqual(config["num_experts"] as? Int, 4)
        XCTAssertEqual(config["num_experts_per_tok"] as? Int, 2)
        XCTAssertEqual(config["moe_layers"] as? [Int], [0])
        XCTAssertEqual(config["pretraining_tp"] as? Int, 1, "source keys are kept")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/tokenizer_config.json"))
        let names = try SafeTensorsFile(path: out + "/model.safetensors").names
        XCTAssertTrue(names.contains("model.layers.0.mlp.gate.weight"))
        XCTAssertTrue(names.contains("model.layers.0.mlp.experts.3.down_proj.weight"))
        XCTAssertTrue(names.contains("model.layers.1.mlp.gate_proj.weight"))
        XCTAssertFalse(names.contains { $0.contains("deepspeed") || $0.contains("inv_freq") })
    }

    func testShardedConvertMatches() throws {
        let out = try convert(Fixtures.path("convert/sharded"))
        XCTAssertLessThanOrEqual(relativeError(try logits(out), try expected("logits")), 1e-4)
    }

    func testLoRAMergedConvertMatches() throws {
        let r = try Binaries.unimoe(["convert", "--from", Fixtures.path("convert/lora"), "--out", tmp + "/lora"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any]
        XCTAssertEqual(obj?["merged_lora"] as? Int, 7)
        let got = try logits(tmp + "/lora")
        XCTAssertLessThanOrEqual(relativeError(got, try expected("logits_lora")), 1e-4)
        XCTAssertGreaterThan(relativeError(got, try expected("logits")), 1e-3, "the adapters must have been merged")
    }

    func testConnectorFileBesideTheWeightsIsIncluded() throws {
        let src = tmp + "/with-projector"
        try FileManager.default.copyItem(atPath: Fixtures.path("convert/base"), toPath: src)
        try FileManager.default.copyItem(atPath: Fixtures.path("convert/extra/mm_projector.bin"), toPath: src + "/mm_projector.bin")
        // A released multimodal config names its towers (which is what lets the trunk pass over connectors).
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/config.json"))) as? [String: Any])
        cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
        cfg["mm_projector_type"] = "mlp2x_gelu"
        cfg["mm_hidden_size"] = 16
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: src + "/config.json"))
        let out = try convert(src)
        let f = try SafeTensorsFile(path: out + "/model.safetensors")
        let torchFile = try TorchCheckpointFile(path: src + "/mm_projector.bin")
        for name in ["model.mm_projector.0.weight", "model.mm_projector.0.bias", "model.mm_projector.2.weight", "model.mm_projector.2.bias"] {
            let ref = try XCTUnwrap(torchFile.ref(name))
            XCTAssertEqual(try f.tensor(name).toArray(), try torchFile.tensor(ref, name: name).toArray(), name)
        }
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["mm_projector_type"] as? String, "mlp2x_gelu")
        XCTAssertLessThanOrEqual(relativeError(try logits(out), try expected("logits")), 1e-4)
    }

    func testBF16Output() throws {
        let out = try convert(Fixtures.path("convert/base"), ["--dtype", "bf16"])
        let f = try SafeTensorsFile(path: out + "/model.safetensors")
        XCTAssertEqual(f.entries["lm_head.weight"]?.dtype, .bf16)
        XCTAssertLessThanOrEqual(relativeError(try logits(out), try expected("logits")), 5e-2)
    }

    /// Runs convert on a directory whose `pytorch_model.bin` is `hostile/<name>`; it must exit 1 with one
    /// line naming the problem, write no model and never create the sentinel.
    func assertRefused(_ name: String, _ phrases: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        try? FileManager.default.removeItem(atPath: Self.sentinel)
        let src = (tmp as NSString).appendingPathComponent("src-\(name)")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.path("convert/base/config.json"), toPath: src + "/config.json")
        try FileManager.default.copyItem(atPath: Fixtures.path("convert/hostile/\(name)"), toPath: src + "/pytorch_model.bin")
        try run.assertFails(["--from", src], phrases, file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.sentinel), "\(name) ran code", file: file, line: line)
    }

    func testHostileFilesAreRefused() throws {
        try assertRefused("system.bin", "global 'posix.system'", "not allowed")
        try assertRefused("eval.bin", "global '__builtin__.eval'", "not allowed")   // protocol 2 writes builtins as __builtin__
        try assertRefused("truncated.bin", "malformed PyTorch zip", "end-of-central-directory")
        try assertRefused("bomb.bin", "malformed PyTorch zip", "4294967280 bytes", "past the end")
        try assertRefused("storage-size.bin", "storage '0'", "24 bytes but its zip entry holds 16")
        try assertRefused("deflate.bin", "compressed", "unsupported")
        try assertRefused("strided.bin", "not contiguous")
        try assertRefused("unmapped.bin", "'model.layers.0.mlp.frobnicate.weight'", "no mapping")
    }

    /// Runs convert on a copy of `fixture` after `edit` changed it; expects exit 1 with one line holding the phrases.
    func assertFails(copying fixture: String, _ edit: (String) throws -> Void, _ phrases: String...,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        let src = (tmp as NSString).appendingPathComponent("src-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: Fixtures.path(fixture), toPath: src)
        try edit(src)
        try run.assertFails(["--from", src], phrases, file: file, line: line)
    }

    func testBrokenAdaptersAndIndexesFail() throws {
        let fm = FileManager.default
        try assertFails(copying: "convert/lora", { try fm.removeItem(atPath: $0 + "/adapter_config.json") }, "needs adapter_config.json")
        try assertFails(copying: "convert/lora", { d in
            try #"{"r": 2, "lora_alpha": 8}"#.write(toFile: d + "/adapter_config.json", atomically: true, encoding: .utf8)
        }, "do not fit rank 2")
        try assertFails(copying: "convert/lora", { d in
            // Adapters for a model whose weights lack the adapted layer.
            try fm.removeItem(atPath: d + "/pytorch_model.bin")
            try fm.copyItem(atPath: Fixtures.path("convert/hostile/unmapped.bin"), toPath: d + "/pytorch_model.bin")
        }, "which the base weights do not hold")
        try assertFails(copying: "convert/sharded", { try fm.removeItem(atPath: $0 + "/pytorch_model-00002-of-00002.bin") }, "which does not exist")
        try assertFails(copying: "convert/sharded", { d in
            let idx = d + "/pytorch_model.bin.index.json"
            let text = try String(contentsOfFile: idx, encoding: .utf8).replacingOccurrences(of: "\"lm_head.weight\"", with: "\"lm_head.renamed\"")
            try text.write(toFile: idx, atomically: true, encoding: .utf8)
        }, "'lm_head.renamed' is listed in", "does not hold it")
        try assertFails(copying: "convert/base", { try fm.removeItem(atPath: $0 + "/config.json") }, "config.json", "missing")
    }

    func testMissingWeightsAndUnmappedNames() throws {
        let empty = tmp + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.path("convert/base/config.json"), toPath: empty + "/config.json")
        var r = try Binaries.unimoe(["convert", "--from", empty, "--out", tmp + "/o1"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("no pytorch_model.bin or pytorch_model.bin.index.json"), r.stderr)
        r = try Binaries.unimoe(["convert", "--from", empty, "--out", tmp + "/o1", "--dtype", "f64"])
        XCTAssertEqual(r.status, 64)
        r = try Binaries.unimoe(["convert", "--from", Fixtures.path("convert/base")])
        XCTAssertEqual(r.status, 64)
    }
}
