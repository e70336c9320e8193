import Foundation
import JSON
import Tensor

extension ModelConfig {
    /// Reads and validates `DIR/config.json`.
    public static func load(directory: String) throws -> ModelConfig {
        try load(file: (directory as NSString).appendingPathComponent("config.json"))
    }

    /// Reads and validates one config file.
    public static func load(file path: String) throws -> ModelConfig {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw CheckpointError.config(path: path, reason: "not found (a model directory needs a config.json)")
        }
        guard !isDir.boolValue else { throw CheckpointError.config(path: path, reason: "is a directory, expected a JSON file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError.config(path: path, reason: "cannot be read")
        }
        return try decode(data, path: path)
    }

    /// Decodes and validates config bytes; `path` names the source in error messages.
    public static func decode(_ data: Data, path: String = "config.json") throws -> ModelConfig {
        // The strict parser first: it rejects duplicate keys, bad UTF-8 and over-deep nesting the
        // decoder below would let through, and keeps integers exact in `raw`.
        let raw = try parseObject(data, path: path)
        let decoder = JSONDecoder()
        var config: ModelConfig
        do {
            config = try decoder.decode(ModelConfig.self, from: data)
        } catch let e as DecodingError {
            // swift-corelibs reports a fractional or out-of-range number for an Int field as
            // "not valid JSON" without a key; the JSON is valid here, so find the key ourselves.
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty {
                for key in integerKeys {
                    if case .double(let d)? = raw[key], Int(exactly: d) == nil {
                        throw CheckpointError.config(path: path, reason: "key '\(key)' must be an integer, got \(d)")
                    }
                }
                throw CheckpointError.config(path: path, reason: "a value cannot be decoded (\(ctx.debugDescription))")
            }
            throw CheckpointError.config(path: path, reason: describe(e))
        }
        config.raw = raw
        do { try config.validate() } catch let reason as ConfigProblem {
            throw CheckpointError.config(path: path, reason: reason.message)
        }
        return config
    }

    /// Parses a config file's bytes strictly (`JSONValue.parse`: duplicate keys, bad UTF-8, deep
    /// nesting rejected) into its top-level members; `path` names the file in `CheckpointError.config`.
    public static func parseObject(_ data: Data, path: String) throws -> [String: JSONValue] {
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            if case .duplicateKey(let key, let inside, _) = error {
                let within = inside.isEmpty ? "" : " of '\(JSONError.describe(path: inside))'"
                throw CheckpointError.config(path: path, reason: "key '\(key)'\(within) appears more than once")
            }
            throw CheckpointError.config(path: path, reason: "is not valid JSON (\(error))")
        }
        guard let object = json.objectValue else {
            throw CheckpointError.config(path: path, reason: "the top level is not a JSON object")
        }
        return object
    }

    /// Checks the sizes fit together; throws `CheckpointError.config` naming the offending keys.
    public func validate(path: String) throws {
        do { try validate() } catch let reason as ConfigProblem {
            throw CheckpointError.config(path: path, reason: reason.message)
        }
    }

    /// config.json's record of a quantised directory (`unimoe quantize --type q8_0`); the tensors
    /// themselves carry their layout (I8 + `.q8_scales`), this says what wrote them.
    public static let q8Record: JSONValue = .object(JSONObject([(key: "type", value: .string("q8_0")), (key: "block", value: .int(32))]))

    /// Keys decoded as integers (the list the corelibs workaround above scans).
    private static let integerKeys: [String] = [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
        "sliding_window", "num_local_experts", "num_experts", "num_experts_per_tok",
        "moe_intermediate_size", "shared_expert_intermediate_size", "decoder_sparse_step",
    ]

    private struct ConfigProblem: Error { let message: String }

    private func validate() throws {
        func fail(_ m: String) -> ConfigProblem { ConfigProblem(message: m) }
        guard Self.supportedModelTypes.contains(modelType) else {
            throw fail("model_type '\(modelType)' is not supported; supported: \(Self.supportedModelTypes.joined(separator: ", "))")
        }
        let sizes: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
            ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
            ("num_key_value_heads", numKeyValueHeads), ("max_position_embeddings", maxPositionEmbeddings),
        ]
        for (key, v) in sizes where v <= 0 { throw fail("\(key) must be a positive integer, got \(v)") }
        if !headDimGiven && hiddenSize % numAttentionHeads != 0 {
            throw fail("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads) (give head_dim explicitly if intended)")
        }
        guard headDim > 0 else { throw fail("head_dim must be a positive integer, got \(headDim)") }
        guard headDim % 2 == 0 else { throw fail("head_dim \(headDim) must be even for rotary embeddings") }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw fail("num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        guard rmsNormEps > 0, rmsNormEps.isFinite else { throw fail("rms_norm_eps must be a positive number, got \(rmsNormEps)") }
        guard ropeTheta > 0, ropeTheta.isFinite else { throw fail("rope_theta must be a positive number, got \(ropeTheta)") }
        guard ropeType == "default" else {
            throw fail("rope type '\(ropeType)' is not supported (only the default rotary embedding is implemented)")
        }
        var probe: Float = 0
        do { try Activations.apply(hiddenAct, &probe, count: 1) } catch {
            throw fail("hidden_act '\(hiddenAct)' is not supported; supported: silu, gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu")
        }
        if let bosTokenId, !(0..<vocabSize).contains(bosTokenId) {
            throw fail("bos_token_id \(bosTokenId) is outside the vocabulary (vocab_size \(vocabSize))")
        }
        for id in eosTokenIds where !(0..<vocabSize).contains(id) {
            throw fail("eos_token_id \(id) is outside the vocabulary (vocab_size \(vocabSize))")
        }
        if let w = slidingWindow, w <= 0 { throw fail("sliding_window must be positive or null, got \(w)") }
        if let q = raw["quantization"], q != Self.q8Record {
            throw fail("quantization \(q.serialized()) is not supported; the only scheme is {\"block\":32,\"type\":\"q8_0\"} (written by unimoe quantize)")
        }
        guard modelType != "llama" else { return }
        if modelType == "qwen2_moe" {
            if usesSlidingWindowFlag {
                throw fail("use_sliding_window true is not supported (only full attention is implemented)")
            }
            if let step = decoderSparseStep, step < 1 { throw fail("decoder_sparse_step must be at least 1, got \(step)") }
            for (key, v) in [("moe_intermediate_size", moeIntermediateSize), ("shared_expert_intermediate_size", sharedExpertIntermediateSize)] {
                if let v, v <= 0 { throw fail("\(key) must be a positive integer, got \(v)") }
            }
            for l in mlpOnlyLayers ?? [] where !(0..<numHiddenLayers).contains(l) {
                throw fail("mlp_only_layers lists layer \(l), but the model has layers 0...\(numHiddenLayers - 1)")
            }
            // num_experts 0: every layer dense, as in transformers.
            if experts == 0 { return }
        }
        let expertsKey = modelType == "mixtral" ? "num_local_experts" : "num_experts"
        guard experts >= 1 else { throw fail("\(expertsKey) must be at least 1, got \(experts)") }
        let k = numExpertsPerTokRaw ?? 2
        guard k >= 1, k <= experts else {
            throw fail("num_experts_per_tok \(k) must be between 1 and \(expertsKey) \(experts)")
        }
        if let moeLayers {
            for l in moeLayers where !(0..<numHiddenLayers).contains(l) {
                throw fail("moe_layers lists layer \(l), but the model has layers 0...\(numHiddenLayers - 1)")
            }
            guard Set(moeLayers).count == moeLayers.count else { throw fail("moe_layers lists a layer more than once: \(moeLayers)") }
        }
    }

    /// One line naming the key and what is wrong with it.
    static func describe(_ e: DecodingError) -> String {
        func keyPath(_ ctx: DecodingError.Context, _ last: CodingKey? = nil) -> String {
            var path = ctx.codingPath
            if let last { path.append(last) }
            return path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
                .joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        func typeName(_ t: Any.Type) -> String {
            switch t {
            case is Int.Type, is [Int].Type: return t == Int.self ? "an integer" : "a list of integers"
            case is Double.Type: return "a number"
            case is Bool.Type: return "true or false"
            case is String.Type: return "a string"
            case is [Any].Type: return "a list"
            default: return t is [String: JSONValue].Type || t is [String: Any].Type ? "an object" : "\(t)"
            }
        }
        switch e {
        case .keyNotFound(let key, let ctx):
            return "missing required key '\(keyPath(ctx, key))'"
        case .typeMismatch(let t, let ctx):
            let p = keyPath(ctx)
            if p.isEmpty { return "the top level is not a JSON object" }
            return "key '\(p)' has the wrong type: expected \(typeName(t))"
        case .valueNotFound(let t, let ctx):
            return "key '\(keyPath(ctx))' is null, expected \(typeName(t))"
        case .dataCorrupted(let ctx):
            let p = keyPath(ctx)
            if p.isEmpty { return "is not valid JSON" }
            return "key '\(p)' has an invalid value (\(ctx.debugDescription))"
        @unknown default:
            return "cannot be decoded: \(e)"
        }
    }
}
