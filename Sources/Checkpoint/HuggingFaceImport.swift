import Foundation
import JSON
import Tensor

/// Imports a Hugging Face model directory as published — safetensors weights (`model.safetensors`
/// or shards listed by `model.safetensors.index.json`), `config.json` whose `model_type` (`llama`,
/// `mixtral`, `qwen2_moe`, `unimoe`) decides the architecture, tokenizer files — into a unimoe model
/// directory: the same tensor names, converted to the requested dtype, in one `model.safetensors`
/// (with unimoe's own `adapter.safetensors` LoRA adapters, when present, merged).
/// The key check is strict and belongs to the architecture's own loader, which this module cannot
/// see: the caller passes it as `verify` (the engine's strict load of the source directory, failing
/// on the first missing tensor, a wrong shape, or naming every tensor no layer uses). Nothing is
/// written before `verify` has passed.
public enum HuggingFaceImport {
    static let indexFile = "model.safetensors.index.json"
    static let singleFile = "model.safetensors"

    /// Whether `dir` holds safetensors weights (rather than PyTorch `.bin` files).
    public static func isSafetensorsDirectory(_ dir: String) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: (dir as NSString).appendingPathComponent(indexFile))
            || fm.fileExists(atPath: (dir as NSString).appendingPathComponent(singleFile))
    }

    /// Converts `dir` into `out` (created if needed). `dtype` nil keeps each tensor's stored dtype.
    /// Tensors for which `quantize(name, shape)` holds are written as q8_0 (the caller checks the
    /// shape: 2-D, columns divisible by 32); when the output holds any q8_0 tensor, config.json
    /// records `"quantization": {"type": "q8_0", "block": 32}` (removed otherwise).
    @discardableResult
    public static func convert(from dir: String, to out: String, dtype: DType? = nil,
                               quantize: (String, [Int]) -> Bool = { _, _ in false },
                               verify: (String) throws -> Void) throws -> ReleasedCheckpoint.Summary {
        var raw = try ConvertOutput.readConfig(dir)
        let configPath = (dir as NSString).appendingPathComponent("config.json")
        let modelType = raw["model_type"]?.stringValue ?? "(none)"
        guard ModelConfig.supportedModelTypes.contains(modelType) else {
            throw ConvertError.source(path: configPath, reason: "model_type '\(modelType)' cannot be imported; supported: \(ModelConfig.supportedModelTypes.joined(separator: ", "))")
        }
        let config = try ModelConfig.load(directory: dir)
        // Opening checks the index against its shards; LoRA adapters a unimoe training run saved beside
        // the weights (adapter.safetensors) are merged as the engine merges them on load.
        let ckpt = try Checkpoint(directory: dir)
        try verify(dir)

        var outputs: [(String, DType, [Int], () throws -> Tensor)] = []
        var quantized = 0
        for name in ckpt.names {
            guard let stored = ckpt.dtype(name), let shape = ckpt.shape(name) else {
                // verify passed, so this is a tensor the loader ignores on purpose (e.g. a rotary table in I64).
                continue
            }
            let outType = quantize(name, shape) ? .q8_0 : dtype ?? stored
            if outType == .q8_0 { quantized += 1 }
            outputs.append((name, outType, shape, {
                let t = try ckpt.take(name)
                return t.dtype == outType ? t : t.converted(to: outType)
            }))
        }
        ConvertOutput.setDType(dtype, in: &raw)
        raw["quantization"] = quantized > 0 ? ModelConfig.q8Record : nil
        let text = try ConvertOutput.configText(raw, out: out)
        try ConvertOutput.prepare(out: out, sources: [dir])
        try ConvertOutput.write(out: out, tensors: outputs, configText: text)
        try ConvertOutput.copyFiles(from: dir, to: out)
        let moe = (0..<config.numHiddenLayers).filter { config.isMoE(layer: $0) }
        return ReleasedCheckpoint.Summary(tensors: outputs.count, experts: config.experts, moeLayers: moe,
                                          mergedLoRA: ckpt.adaptedCount, quantized: quantized)
    }
}
