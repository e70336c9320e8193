import Foundation
import XCTest
@testable import Checkpoint
import TestSupport

/// `unimoe convert --base BASE --from DELTA` on the released v1 split (scripts/fixtures/convert.py
/// `released/`): a base MoE model plus the fine-tuned directory's PEFT adapters, non-LoRA trainables,
/// audio aligner and router gates give the model the reference's loader builds.
final class ReleasedDeltaTests: XCTestCase {
    var tmp = ""
    var run: ConvertRunner { ConvertRunner(scratch: tmp) }
    let base = Fixtures.path("convert/released/base"), delta = Fixtures.path("convert/released/e2")

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("released-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: tmp) }

    var ids: [Int] {
        get throws { try XCTUnwrap((try Fixtures.json("convert/expected.json") as? [String: Any])?["ids"] as? [Int]) }
    }

    func testDeltaOnBaseMatchesTheReferenceLoader() throws {
        let (out, summary) = try run.convert(["--base", base, "--from", delta])
        XCTAssertEqual(summary["experts"] as? Int, 4)
        XCTAssertEqual(summary["moe_layers"] as? [Int], [0, 1])
        // q/k/v/o and 4 experts × gate/up/down in each of the 2 layers.
        XCTAssertEqual(summary["merged_lora"] as? Int, 2 * (4 + 4 * 3))
        let want: [Float] = try Fixtures.tensors("convert/expected.safetensors").tensor("logits_released").toArray()
        XCTAssertLessThanOrEqual(relativeError(try run.logits(out, ids: ids), want), 1e-4)

        let f = try SafeTensorsFile(path: out + "/model.safetensors")
        // The routers are mlp_gates.bin's (loaded last), not non_lora_trainables' copies.
        let gates = try TorchCheckpointFile(path: delta + "/mlp_gates.bin")
        let name = "model.layers.1.mlp.gate.weight"
        XCTAssertEqual(try f.tensor(name).toArray(), try gates.tensor(XCTUnwrap(gates.ref(name)), name: name).toArray())
        // The connectors from non_lora_trainables (prefix stripped) and mm_audio_aligner.bin came along.
        for n in ["model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.mm_audio_aligner.projector.weight", "model.query_tokens"] {
            XCTAssertTrue(f.contains(n), n)
        }
        XCTAssertFalse(f.names.contains { $0.hasPrefix("base_model.") || $0.contains("lora") })
        // The delta's config (it names the towers), the base's tokenizer files.
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["mm_projector_type"] as? String, "mlp2x_gelu")
        XCTAssertEqual(config["model_type"] as? String, "unimoe")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/tokenizer_config.json"))
    }

    func testTheDeltasAreNeeded() throws {
        // The base alone is a different model (the adapters and routers change the logits).
        let (out, _) = try run.convert(["--from", base])
        let want: [Float] = try Fixtures.tensors("convert/expected.safetensors").tensor("logits_released").toArray()
        XCTAssertGreaterThan(relativeError(try run.logits(out, ids: ids), want), 1e-2)
    }

    /// A copy of the delta directory after `edit`.
    func editedDelta(_ edit: (String) throws -> Void) throws -> String {
        let d = (tmp as NSString).appendingPathComponent("e2-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: delta, toPath: d)
        try edit(d)
        return d
    }

    func testMisusedOrBrokenDeltasFail() throws {
        let fm = FileManager.default
        try run.assertFails(["--from", delta], ["holds deltas", "--base DIR"])
        try run.assertFails(["--base", base, "--from", Fixtures.path("convert/base")], ["holds its own pytorch_model.bin"])
        // A trainable no rule maps (the hostile fixture's valid-but-unmapped file as non_lora_trainables).
        let unmapped = try editedDelta { d in
            try fm.removeItem(atPath: d + "/non_lora_trainables.bin")
            try fm.copyItem(atPath: Fixtures.path("convert/hostile/unmapped.bin"), toPath: d + "/non_lora_trainables.bin")
        }
        try run.assertFails(["--base", base, "--from", unmapped], ["'model.layers.0.mlp.frobnicate.weight'", "no mapping"])
        let noConfig = try editedDelta { try fm.removeItem(atPath: $0 + "/config.json") }
        try run.assertFails(["--base", base, "--from", noConfig], ["config.json", "missing"])
        let dora = try editedDelta { d in
            let p = d + "/adapter_config.json"
            try String(contentsOfFile: p, encoding: .utf8).replacingOccurrences(of: "\"use_dora\": false", with: "\"use_dora\": true")
                .write(toFile: p, atomically: true, encoding: .utf8)
        }
        try run.assertFails(["--base", base, "--from", dora], ["use_dora", "not supported"])
        let hostileGates = try editedDelta { d in
            try fm.removeItem(atPath: d + "/mlp_gates.bin")
            try fm.copyItem(atPath: Fixtures.path("convert/hostile/system.bin"), toPath: d + "/mlp_gates.bin")
        }
        try? fm.removeItem(atPath: ConvertCommandTests.sentinel)
        try run.assertFails(["--base", base, "--from", hostileGates], ["posix.system", "not allowed"])
        XCTAssertFalse(fm.fileExists(atPath: ConvertCommandTests.sentinel))
        // Weights convert would leave out (the 8-expert layout's extras) are refused, not skipped.
        let eightExpert = try editedDelta { d in
            try fm.copyItem(atPath: d + "/mlp_gates.bin", toPath: d + "/fm_adapter.bin")
            try fm.copyItem(atPath: d + "/mlp_gates.bin", toPath: d + "/training_args.bin")
        }
        try run.assertFails(["--base", base, "--from", eightExpert], ["fm_adapter.bin", "is not read by convert"])
    }

    func testReferenceRenamingOfTrainables() {
        typealias R = ReleasedCheckpoint
        XCTAssertEqual(R.referenceNames(["base_model.model.model.layers.0.mlp.gate.weight", "base_model.model.lm_head.weight"]),
                       ["model.layers.0.mlp.gate.weight", "lm_head.weight"])
        // Without a model.model. name, one model. prefix stays (as the reference leaves it).
        XCTAssertEqual(R.referenceNames(["base_model.model.lm_head.weight"]), ["model.lm_head.weight"])
        XCTAssertEqual(R.referenceNames(["model.layers.0.mlp.gate.weight"]), ["model.layers.0.mlp.gate.weight"])
        XCTAssertEqual(R.map("model.layers.2.mlp.experts.3.up_proj.weight"), .name("model.layers.2.mlp.experts.3.up_proj.weight"))
        XCTAssertEqual(R.map("model.layers.2.mlp.experts.03.up_proj.weight"), .unmapped)
        XCTAssertEqual(R.map("model.layers.2.mlp.gate.weight"), .name("model.layers.2.mlp.gate.weight"))
    }

    func testRankStabilizedAdaptersScaleBySquareRoot() throws {
        let d = try editedDelta { d in
            let p = d + "/adapter_config.json"
            try String(contentsOfFile: p, encoding: .utf8).replacingOccurrences(of: "\"use_rslora\": false", with: "\"use_rslora\": true")
                .write(toFile: p, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(try AdapterConfig.load(directory: d).scale, 8 / 2)          // alpha 8 / sqrt(r 4)
        XCTAssertEqual(try AdapterConfig.load(directory: delta).scale, 8 / 4)
    }

    /// A copy of the base directory shipping only a SentencePiece tokenizer.model (as Vicuna does).
    func baseWithSentencePiece(_ model: String = Fixtures.path("tokenizer/sentencepiece/tokenizer.model")) throws -> String {
        let d = (tmp as NSString).appendingPathComponent("base-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: base, toPath: d)
        try FileManager.default.copyItem(atPath: model, toPath: d + "/tokenizer.model")
        try FileManager.default.removeItem(atPath: d + "/tokenizer_config.json")
        try FileManager.default.copyItem(atPath: Fixtures.path("tokenizer/sentencepiece/tokenizer_config.json"), toPath: d + "/tokenizer_config.json")
        return d
    }

    func testTokenizerJSONIsMadeFromTheBasesTokenizerModel() throws {
        let (out, _) = try run.convert(["--base", try baseWithSentencePiece(), "--from", delta])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/tokenizer.model"))
        let corpus = try XCTUnwrap(try Fixtures.json("tokenizer/corpus.json") as? [String])
        let expected = try XCTUnwrap((try Fixtures.json("tokenizer/sentencepiece/expected.json") as? [String: [[Int]]])?["ids"])
        let line = try XCTUnwrap(corpus.firstIndex { $0.count > 20 && $0.unicodeScalars.contains { $0.value > 0x2000 } })
        let r = try Binaries.unimoe(["tokenize", "--tokenizer", out, "--text", corpus[line]])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try XCTUnwrap((try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any])?["ids"] as? [Int])
        XCTAssertEqual(ids, expected[line])
    }

    func testBrokenTokenizerModelFailsBeforeWriting() throws {
        let junk = (tmp as NSString).appendingPathComponent("junk.model")
        try Data("not a protobuf".utf8).write(to: URL(fileURLWithPath: junk))
        try run.assertFails(["--base", try baseWithSentencePiece(junk), "--from", delta], ["tokenizer.model", "not a valid SentencePiece model"])
    }
}
