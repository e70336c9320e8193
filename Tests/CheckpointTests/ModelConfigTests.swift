import XCTest
import Foundation
import Checkpoint

final class ModelConfigTests: XCTestCase {
    /// What transformers 5.23 writes for `LlamaConfig(vocab_size=100, hidden_size=32, ...)`.
    let llama5 = """
    {"attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "head_dim": 8,
     "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
     "max_position_embeddings": 2048, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 4,
     "num_hidden_layers": 2, "num_key_value_heads": 4, "pad_token_id": null, "pretraining_tp": 1,
     "rms_norm_eps": 1e-06, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
     "tie_word_embeddings": false, "transformers_version": "5.23.0", "use_cache": true, "vocab_size": 100}
    """

    func decode(_ s: String) throws -> ModelConfig { try ModelConfig.decode(Data(s.utf8), path: "test/config.json") }

    /// Decodes `json` with `key` replaced (or removed when `value` is nil).
    func decode(_ base: String, setting key: String, to value: Any?) throws -> ModelConfig {
        var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(base.utf8)) as? [String: Any])
        obj[key] = value
        let data = try JSONSerialization.data(withJSONObject: obj)
        return try ModelConfig.decode(data, path: "test/config.json")
    }

    func assertConfigError(_ body: @autoclosure () throws -> ModelConfig, mentions words: [String],
                           file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            guard case CheckpointError.config(let path, let reason) = e else { return XCTFail("untyped error \(e)", file: file, line: line) }
            XCTAssertEqual(path, "test/config.json", file: file, line: line)
            XCTAssertFalse(reason.contains("\n"), "one line: \(reason)", file: file, line: line)
            for w in words { XCTAssertTrue("\(e)".contains(w), "'\(e)' should mention '\(w)'", file: file, line: line) }
        }
    }

    func testTransformers5Llama() throws {
        let c = try decode(llama5)
        XCTAssertEqual(c.modelType, "llama")
        XCTAssertEqual(c.vocabSize, 100)
        XCTAssertEqual(c.hiddenSize, 32)
        XCTAssertEqual(c.intermediateSize, 64)
        XCTAssertEqual(c.numHiddenLayers, 2)
        XCTAssertEqual(c.numAttentionHeads, 4)
        XCTAssertEqual(c.numKeyValueHeads, 4)
        XCTAssertEqual(c.headDim, 8)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
        XCTAssertEqual(c.ropeTheta, 10000)
        XCTAssertEqual(c.bosTokenId, 1)
        XCTAssertEqual(c.eosTokenIds, [2])
        XCTAssertNil(c.padTokenId)
        XCTAssertEqual(c.experts, 0)
        XCTAssertEqual(c.expertsPerToken, 0)
        XCTAssertFalse(c.isMoE(layer: 0))
        XCTAssertFalse(c.hasMoE)
        XCTAssertEqual(c.raw["transformers_version"]?.stringValue, "5.23.0")
        XCTAssertEqual(c.raw["rope_parameters"]?["rope_theta"]?.doubleValue, 10000)
    }

    func testDefaultsForMinimalLlama() throws {
        let c = try decode("""
        {"model_type": "llama", "vocab_size": 64, "hidden_size": 48, "intermediate_size": 96,
         "num_hidden_layers": 3, "num_attention_heads": 6}
        """)
        XCTAssertEqual(c.numKeyValueHeads, 6)
        XCTAssertEqual(c.headDim, 8)
        XCTAssertEqual(c.ropeTheta, 10000)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(c.hiddenAct, "silu")
        XCTAssertFalse(c.attentionBias)
        XCTAssertFalse(c.mlpBias)
        XCTAssertEqual(c.eosTokenIds, [])
        XCTAssertNil(c.torchDtype)
        XCTAssertEqual(c.groupSize, 1)
    }

    func testOldSpellingsAndEosList() throws {
        let c = try decode("""
        {"model_type": "llama", "vocab_size": 64, "hidden_size": 48, "intermediate_size": 96,
         "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2, "rope_theta": 500000.0,
         "rope_scaling": null, "eos_token_id": [2, 7], "torch_dtype": "bfloat16", "tie_word_embeddings": true,
         "pad_token_id": 0, "head_dim": 16}
        """)
        XCTAssertEqual(c.ropeTheta, 500000)
        XCTAssertEqual(c.eosTokenIds, [2, 7])
        XCTAssertEqual(c.torchDtype, "bfloat16")
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.padTokenId, 0)
        XCTAssertEqual(c.headDim, 16)
        XCTAssertEqual(c.groupSize, 3)
        let d = try decode(llama5, setting: "dtype", to: "float32")
        XCTAssertEqual(d.torchDtype, "float32")
    }

    func testMixtral() throws {
        let c = try decode("""
        {"model_type": "mixtral", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
         "num_experts_per_tok": 2, "head_dim": null, "sliding_window": null,
         "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}}
        """)
        XCTAssertEqual(c.experts, 4)
        XCTAssertEqual(c.expertsPerToken, 2)
        XCTAssertTrue(c.isMoE(layer: 0) && c.isMoE(layer: 1))
        XCTAssertEqual(c.ropeTheta, 1e6)
        XCTAssertEqual(c.rmsNormEps, 1e-5)
        XCTAssertEqual(c.headDim, 8)
        XCTAssertNil(c.slidingWindow)
    }

    func testUnimoeMoeLayers() throws {
        let base = """
        {"model_type": "unimoe", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_experts": 4, "num_experts_per_tok": 2,
         "mm_vision_tower": "vision_tower", "mm_hidden_size": 16}
        """
        let all = try decode(base)
        XCTAssertEqual(all.experts, 4)
        XCTAssertEqual(all.expertsPerToken, 2)
        XCTAssertEqual((0..<4).map { all.isMoE(layer: $0) }, [true, true, true, true])
        XCTAssertFalse(all.routerNoise)
        XCTAssertEqual(all.raw["mm_vision_tower"]?.stringValue, "vision_tower")
        XCTAssertEqual(all.raw["mm_hidden_size"]?.intValue, 16)

        let even = try decode(base, setting: "moe_layers", to: [0, 2])
        XCTAssertEqual((0..<4).map { even.isMoE(layer: $0) }, [true, false, true, false])
        XCTAssertTrue(even.hasMoE)
        let noisy = try decode(base, setting: "router_noise", to: true)
        XCTAssertTrue(noisy.routerNoise)
        let none = try decode(base, setting: "moe_layers", to: [Int]())
        XCTAssertFalse(none.hasMoE)
        XCTAssertFalse(none.isMoE(layer: 0))
    }

    func testEncodeRoundTrip() throws {
        let c = ModelConfig(modelType: "unimoe", vocabSize: 50, hiddenSize: 16, intermediateSize: 24,
                            numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2,
                            experts: 4, expertsPerToken: 2, moeLayers: [1], routerNoise: true)
        let data = try JSONEncoder().encode(c)
        let back = try ModelConfig.decode(data)
        XCTAssertEqual(back, c)
        XCTAssertEqual(back.raw["num_experts"]?.intValue, 4)
    }

    func testLoadFromDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-config-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try ModelConfig.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("config.json") && "\(e)".contains("not found"), "\(e)")
        }
        try Data(llama5.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertEqual(try ModelConfig.load(directory: dir).hiddenSize, 32)
        // A directory where the file should be.
        let nested = dir + "/nested"
        try FileManager.default.createDirectory(atPath: nested + "/config.json", withIntermediateDirectories: true)
        XCTAssertThrowsError(try ModelConfig.load(directory: nested)) { e in
            XCTAssertTrue("\(e)".contains("is a directory"), "\(e)")
        }
    }

    // MARK: Malformed configs

    func testBadJSON() {
        assertConfigError(try decode("{\"model_type\": \"llama\", "), mentions: ["not valid JSON"])
        assertConfigError(try decode(""), mentions: ["not valid JSON"])
        assertConfigError(try decode("[1, 2]"), mentions: ["not a JSON object"])
    }

    func testMissingKeys() {
        for key in ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"] {
            assertConfigError(try decode(llama5, setting: key, to: nil), mentions: ["missing", key])
        }
        let unimoe = llama5.replacingOccurrences(of: "\"llama\"", with: "\"unimoe\"")
        assertConfigError(try decode(unimoe), mentions: ["missing", "num_experts"])
    }

    func testWrongTypes() {
        assertConfigError(try decode(llama5, setting: "hidden_size", to: "32"), mentions: ["hidden_size", "integer"])
        assertConfigError(try decode(llama5, setting: "hidden_size", to: 32.5), mentions: ["hidden_size", "integer", "32.5"])
        assertConfigError(try decode(llama5, setting: "vocab_size", to: 1e30), mentions: ["vocab_size", "integer"])
        assertConfigError(try decode(llama5, setting: "tie_word_embeddings", to: "yes"), mentions: ["tie_word_embeddings", "true or false"])
        assertConfigError(try decode(llama5, setting: "eos_token_id", to: "</s>"), mentions: ["eos_token_id"])
        assertConfigError(try decode(llama5, setting: "rms_norm_eps", to: [1]), mentions: ["rms_norm_eps", "number"])
        assertConfigError(try decode(llama5, setting: "model_type", to: 3), mentions: ["model_type", "string"])
        assertConfigError(try decode(llama5, setting: "rope_parameters", to: ["rope_theta": "big"]), mentions: ["rope_parameters"])
        assertConfigError(try decode(llama5, setting: "vocab_size", to: NSNull()), mentions: ["vocab_size", "null"])
    }

    func testInconsistentSizes() {
        assertConfigError(try decode(llama5, setting: "model_type", to: "gpt2"), mentions: ["gpt2", "not supported", "llama"])
        assertConfigError(try decode(llama5, setting: "hidden_size", to: 0), mentions: ["hidden_size", "positive"])
        assertConfigError(try decode(llama5, setting: "num_hidden_layers", to: -1), mentions: ["num_hidden_layers", "positive"])
        assertConfigError(try decode(llama5, setting: "num_key_value_heads", to: 3), mentions: ["num_key_value_heads 3", "multiple"])
        assertConfigError(try decode(llama5, setting: "num_key_value_heads", to: 8), mentions: ["num_key_value_heads 8"])
        assertConfigError(try decode(llama5, setting: "head_dim", to: 7), mentions: ["head_dim 7", "even"])
        assertConfigError(try decode(llama5, setting: "eos_token_id", to: 100), mentions: ["eos_token_id 100", "vocab"])
        assertConfigError(try decode(llama5, setting: "hidden_act", to: "swiglu9"), mentions: ["hidden_act", "swiglu9"])
        assertConfigError(try decode(llama5, setting: "rope_parameters", to: ["rope_theta": 1e4, "rope_type": "llama3"]),
                          mentions: ["llama3", "not supported"])
        assertConfigError(try decode(llama5, setting: "rms_norm_eps", to: 0), mentions: ["rms_norm_eps"])
        // heads must divide hidden unless head_dim is explicit.
        var noHeadDim = llama5.replacingOccurrences(of: "\"head_dim\": 8,", with: "")
        noHeadDim = noHeadDim.replacingOccurrences(of: "\"num_attention_heads\": 4", with: "\"num_attention_heads\": 6")
        noHeadDim = noHeadDim.replacingOccurrences(of: "\"num_key_value_heads\": 4", with: "\"num_key_value_heads\": 6")
        assertConfigError(try decode(noHeadDim), mentions: ["hidden_size 32", "num_attention_heads 6", "head_dim"])
        XCTAssertEqual(try decode(noHeadDim, setting: "head_dim", to: 8).headDim, 8)

        let unimoe = """
        {"model_type": "unimoe", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_experts": 4, "num_experts_per_tok": 2}
        """
        assertConfigError(try decode(unimoe, setting: "moe_layers", to: [0, 4]), mentions: ["moe_layers", "layer 4"])
        assertConfigError(try decode(unimoe, setting: "moe_layers", to: [-1]), mentions: ["moe_layers", "layer -1"])
        assertConfigError(try decode(unimoe, setting: "moe_layers", to: [1, 1]), mentions: ["moe_layers", "more than once"])
        assertConfigError(try decode(unimoe, setting: "moe_layers", to: 3), mentions: ["moe_layers", "a list"])
        assertConfigError(try decode(unimoe, setting: "num_experts_per_tok", to: 5), mentions: ["num_experts_per_tok 5", "num_experts 4"])
        assertConfigError(try decode(unimoe, setting: "num_experts_per_tok", to: 0), mentions: ["num_experts_per_tok 0"])
        assertConfigError(try decode(unimoe, setting: "num_experts", to: 0), mentions: ["num_experts", "at least 1"])
    }

    /// A config in the shape of the published Qwen1.5-MoE-A2.7B one (transformers 4.40 keys).
    let qwen2Moe = """
    {"architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
     "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
     "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21,
     "model_type": "qwen2_moe", "moe_intermediate_size": 1408, "norm_topk_prob": false, "num_attention_heads": 16,
     "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
     "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
     "shared_expert_intermediate_size": 5632, "sliding_window": 32768, "tie_word_embeddings": false,
     "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0", "use_cache": true,
     "use_sliding_window": false, "vocab_size": 151936}
    """

    func testQwen2MoePublishedConfig() throws {
        let c = try decode(qwen2Moe)
        XCTAssertEqual(c.modelType, "qwen2_moe")
        XCTAssertEqual(c.experts, 60)
        XCTAssertEqual(c.expertsPerToken, 4)
        XCTAssertEqual(c.expertIntermediateSize, 1408)
        XCTAssertEqual(c.intermediateSize, 5632)
        XCTAssertEqual(c.sharedExpertIntermediateSize, 5632)
        XCTAssertTrue(c.hasSharedExpert)
        XCTAssertFalse(c.normTopKProb)
        XCTAssertTrue(c.qkvBias)            // no qkv_bias key: q/k/v have a bias, as in transformers
        XCTAssertFalse(c.attentionBias)     // o_proj has none
        XCTAssertNil(c.slidingWindow)       // use_sliding_window false: the window does not apply
        XCTAssertEqual(c.ropeTheta, 1e6)
        XCTAssertTrue((0..<24).allSatisfy { c.isMoE(layer: $0) })
        // Round trip through encode.
        let again = try ModelConfig.decode(try JSONEncoder().encode(c), path: "test/config.json")
        XCTAssertEqual(again, c)
    }

    func testQwen2MoeDefaultsAndSparseLayers() throws {
        let minimal = """
        {"model_type": "qwen2_moe", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 6, "num_attention_heads": 4}
        """
        let c = try decode(minimal)
        XCTAssertEqual(c.experts, 60)
        XCTAssertEqual(c.expertsPerToken, 4)
        XCTAssertEqual(c.moeIntermediateSize, 1408)
        XCTAssertEqual(c.sharedExpertIntermediateSize, 5632)
        XCTAssertEqual(c.decoderSparseStep, 1)
        XCTAssertEqual(c.mlpOnlyLayers, [])
        XCTAssertTrue(c.qkvBias)
        var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(minimal.utf8)) as? [String: Any])
        obj["decoder_sparse_step"] = 2
        obj["mlp_only_layers"] = [3]
        obj["num_experts"] = 4
        obj["num_experts_per_tok"] = 2
        obj["norm_topk_prob"] = true
        obj["qkv_bias"] = false
        let s = try ModelConfig.decode(try JSONSerialization.data(withJSONObject: obj), path: "test/config.json")
        XCTAssertEqual((0..<6).filter { s.isMoE(layer: $0) }, [1, 5])
        XCTAssertTrue(s.normTopKProb)
        XCTAssertFalse(s.qkvBias)
        XCTAssertEqual(try ModelConfig.decode(try JSONEncoder().encode(s), path: "test/config.json"), s)
        // num_experts 0: every layer dense, as in transformers.
        let dense = try decode(minimal, setting: "num_experts", to: 0)
        XCTAssertFalse(dense.hasMoE)
    }

    func testQwen2MoeInvalidConfigs() throws {
        assertConfigError(try decode(qwen2Moe, setting: "use_sliding_window", to: true), mentions: ["use_sliding_window"])
        assertConfigError(try decode(qwen2Moe, setting: "decoder_sparse_step", to: 0), mentions: ["decoder_sparse_step"])
        assertConfigError(try decode(qwen2Moe, setting: "moe_intermediate_size", to: 0), mentions: ["moe_intermediate_size"])
        assertConfigError(try decode(qwen2Moe, setting: "mlp_only_layers", to: [24]), mentions: ["mlp_only_layers", "24"])
        assertConfigError(try decode(qwen2Moe, setting: "num_experts_per_tok", to: 61), mentions: ["num_experts_per_tok"])
    }
}
