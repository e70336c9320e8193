import Checkpoint
import Foundation
import JSON
import Models
import Tensor
import TestSupport
import UnimoeCLI
import XCTest

/// `unimoe quantize --type q8_0` on the lm fixture models, against transformers running the
/// llama.cpp-style dequantised weights with every q8_0 product's activation quantised and read
/// back (scripts/fixtures/quant.py): the int8 dot is exact per block, so logits must agree as
/// tightly as the f32 models do (1e-4 relative) and the greedy tokens exactly. Also through remote
/// experts (the router/worker split).
final class QuantizeTests: XCTestCase {
    static let models = ["llama-gqa", "tied", "mixtral", "qwen2-moe"]

    func tempDir() -> String { NSTemporaryDirectory() + "/quant-test-\(UUID().uuidString)" }

    func expected(_ name: String) throws -> [String: Any] {
        try XCTUnwrap(try Fixtures.json("quant/\(name)/expected.json") as? [String: Any])
    }

    func testQ8ModelsEqualDequantisedReference() throws {
        for name in Self.models {
            let out = tempDir()
            defer { try? FileManager.default.removeItem(atPath: out) }
            let s = try QuantizeCommand.quantize(from: Fixtures.path("lm/\(name)"), to: out)
            let exp = try expected(name)
            let names = try XCTUnwrap(exp["quantized"] as? [String])
            XCTAssertEqual(s.quantized, names.count, name)
            let ckpt = try Checkpoint(directory: out)
            for n in ckpt.names { XCTAssertEqual(ckpt.dtype(n) == .q8_0, names.contains(n), "\(name): \(n)") }
            let config = try ModelConfig.load(directory: out)
            XCTAssertEqual(config.raw["quantization"], ModelConfig.q8Record)

            let model = try LanguageModel.load(directory: out)
            let ids = try XCTUnwrap(exp["ids"] as? [Int]), prompt = try XCTUnwrap(exp["prompt_ids"] as? [Int])
            let want = try Fixtures.tensors("quant/\(name)/expected.safetensors").tensor("logits").toArray()
            let got = try model.logits(ids: ids).toArray()
            let err = relativeError(got, want)
            XCTAssertLessThanOrEqual(err, 1e-4, "\(name) logits: relative error \(err)")
            let gen = try TokenGenerator(model: model, promptIds: prompt, parameters: GenerationParameters(maxNewTokens: 32))
            XCTAssertEqual(try gen.run(), try XCTUnwrap(exp["greedy"] as? [Int]), "\(name) greedy")

            if model.config.hasMoE {
                // Router without experts + an expert worker's loader over the same q8_0 files.
                let router = try LanguageModel.load(directory: out, experts: .remote)
                let workers = try LocalExperts.load(directory: out)
                let remote = try router.logits(ids: ids, experts: workers).toArray()
                XCTAssertLessThanOrEqual(relativeError(remote, got), 1e-6, "\(name) remote experts")
            }
        }
    }

    /// The command end to end: the summary line's drift figures, and usage errors.
    func testCommandPrintsDriftAndRejectsOtherTypes() throws {
        let out = tempDir()
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try Binaries.unimoe(["quantize", "--model", Fixtures.path("lm/mixtral"), "--out", out, "--type", "q8_0"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdoutLines.last)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(o["quantized"] as? Int, 58)
        let err = try XCTUnwrap((o["logit_max_rel_err"] as? NSNumber)?.doubleValue)
        XCTAssertGreaterThan(err, 0, "q8_0 must move the logits a little")
        // Typical positions move ~1–2 % (scripts/fixtures/quant.py's reference shows the same); a
        // routing decision near a tie can flip one position's experts (0.25 in the reference).
        XCTAssertLessThan(err, 0.5)
        XCTAssertLessThan(try XCTUnwrap(o["bytes_after"] as? Int), try XCTUnwrap(o["bytes_before"] as? Int) / 3)
        XCTAssertGreaterThan(try XCTUnwrap((o["argmax_agreement"] as? NSNumber)?.doubleValue), 0.8)

        let bad = try Binaries.unimoe(["quantize", "--model", Fixtures.path("lm/mixtral"), "--out", out, "--type", "q4_0"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--type must be q8_0"), bad.stderr)
    }

    /// A config whose quantization record names another scheme is refused with the key named.
    func testUnknownQuantizationRecordIsAConfigError() throws {
        var raw = try ModelConfig.parseObject(try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("lm/mixtral/config.json"))), path: "c")
        raw["quantization"] = .object(["type": .string("q4_0"), "block": .int(32)])
        let text = JSONValue.object(JSONObject(raw.map { (key: $0.key, value: $0.value) })).serialized()
        XCTAssertThrowsError(try ModelConfig.decode(Data(text.utf8), path: "c")) { e in
            XCTAssertTrue("\(e)".contains("quantization"), "\(e)")
        }
    }
}
