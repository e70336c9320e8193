import Foundation
import JSON
import Tensor

/// Writing a converted model directory, shared by the PyTorch (`ReleasedCheckpoint`) and Hugging Face
/// (`HuggingFaceImport`) importers: the output directory, `config.json` (checked to load before
/// anything is written), the weights, and the tokenizer files copied beside them.
enum ConvertOutput {
    /// Files copied unchanged from the source when present.
    static let copiedFiles = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                              "added_tokens.json", "generation_config.json"]

    /// transformers' name of a dtype (`torch_dtype` / `dtype` in config.json).
    static func torchName(_ d: DType) -> String {
        switch d {
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        // Quantised directories keep the float tensors' torch_dtype (quantize never calls this).
        case .q8_0: return "int8"
        }
    }

    /// Records the output dtype in the config the way transformers does (`torch_dtype`, and `dtype`
    /// where a transformers 5 config already has that key).
    static func setDType(_ dtype: DType?, in config: inout [String: JSONValue]) {
        guard let dtype else { return }
        config["torch_dtype"] = .string(torchName(dtype))
        if config["dtype"] != nil { config["dtype"] = .string(torchName(dtype)) }
    }

    /// The config's text (keys sorted), after checking it loads as a model config.
    static func configText(_ config: [String: JSONValue], out: String) throws -> String {
        let text = JSONValue.object(JSONObject(config.keys.sorted().map { (key: $0, value: config[$0]!) })).serialized() + "\n"
        _ = try ModelConfig.decode(Data(text.utf8), path: (out as NSString).appendingPathComponent("config.json"))
        return text
    }

    /// Refuses an output that is one of the sources, then creates it.
    static func prepare(out: String, sources: [String]) throws {
        let outPath = URL(fileURLWithPath: out).standardizedFileURL.path
        for s in sources where URL(fileURLWithPath: s).standardizedFileURL.path == outPath {
            throw ConvertError.source(path: out, reason: "the output directory must differ from the source")
        }
        do { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
            throw CheckpointError.io(path: out, reason: "cannot create: \((error as NSError).localizedDescription)")
        }
    }

    /// Writes `model.safetensors` (tensors sorted by name, produced one at a time) and `config.json`.
    static func write(out: String, tensors: [(String, DType, [Int], () throws -> Tensor)], configText: String) throws {
        let sorted = tensors.sorted { $0.0 < $1.0 }
        try SafeTensorsWriter.write(path: (out as NSString).appendingPathComponent("model.safetensors"), lazy: sorted,
                                    metadata: ["format": "pt"])
        let configOut = (out as NSString).appendingPathComponent("config.json")
        do { try Data(configText.utf8).write(to: URL(fileURLWithPath: configOut), options: .atomic) } catch {
            throw CheckpointError.io(path: configOut, reason: (error as NSError).localizedDescription)
        }
    }

    /// Copies the tokenizer and generation files of `dir` (those present) into `out`.
    static func copyFiles(from dir: String, to out: String) throws {
        let fm = FileManager.default
        for f in copiedFiles {
            let src = (dir as NSString).appendingPathComponent(f), dst = (out as NSString).appendingPathComponent(f)
            guard fm.fileExists(atPath: src) else { continue }
            try? fm.removeItem(atPath: dst)
            do { try fm.copyItem(atPath: src, toPath: dst) } catch {
                throw CheckpointError.io(path: dst, reason: "cannot copy \(src): \((error as NSError).localizedDescription)")
            }
        }
    }

    /// Reads a source's config.json as a JSON object.
    static func readConfig(_ dir: String) throws -> [String: JSONValue] {
        let path = (dir as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConvertError.source(path: path, reason: "missing or unreadable (the converted model needs its config)")
        }
        return try ModelConfig.parseObject(data, path: path)
    }
}
