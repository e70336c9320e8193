import Checkpoint
import Foundation
import Models
import Options
import Tensor
import Tokenizer

/// `unimoe convert --from DIR [--base DIR] --out DIR [--dtype f32|bf16|f16]`: turns a released
/// Uni-MoE checkpoint (PyTorch `pytorch_model.bin` or its shards, optional PEFT LoRA adapters, v1 or
/// DeepSpeed-MoE names; with `--base`, a fine-tuned delta directory applied to its base model) or a
/// Hugging Face safetensors directory as published (llama, mixtral, qwen2_moe) into a unimoe model
/// directory; prints `{"tensors": N, "experts": E, "moe_layers": [...], "merged_lora": M}`.
public enum ConvertCommand: Command {
    public static let name = "convert"
    public static let usage = "convert --from DIR [--base DIR] --out DIR [--dtype f32|bf16|f16]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["from", "out", "dtype", "base"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let from = try a.required("from")
        let out = try a.required("out")
        let base = a.value("base")
        var dtype: DType?
        if let d = a.value("dtype") {
            switch d.lowercased() {
            case "f32", "float32": dtype = .f32
            case "bf16", "bfloat16": dtype = .bf16
            case "f16", "float16": dtype = .f16
            default: throw UsageError("--dtype must be f32, bf16 or f16, got '\(d)'")
            }
        }
        let safetensors = HuggingFaceImport.isSafetensorsDirectory(from)
        if safetensors, base != nil { throw UsageError("--base applies to released PyTorch deltas, not to a safetensors directory") }
        // LLaMA/Vicuna ship only tokenizer.model: the tokenizer.json transformers would make of it is
        // built (and any fault in it reported) before anything is written.
        let tokenizerJSON = try SentencePieceConverter.tokenizerJSON(directory: base ?? from)
        let s: ReleasedCheckpoint.Summary
        if safetensors {
            // The strict key check is the engine's own loader: every tensor needed, every tensor used.
            s = try HuggingFaceImport.convert(from: from, to: out, dtype: dtype) { dir in
                _ = try LanguageModel.load(directory: dir)
            }
        } else {
            s = try ReleasedCheckpoint.convert(from: from, base: base, to: out, dtype: dtype)
        }
        if let tokenizerJSON { try SentencePieceConverter.write(tokenizerJSON, into: out) }
        printLine(jsonLine(["tensors": s.tensors, "experts": s.experts, "moe_layers": s.moeLayers, "merged_lora": s.mergedLoRA]))
    }
}
