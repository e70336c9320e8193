import Checkpoint
import Foundation
import Options
import Tensor

/// `unimoe convert --from DIR --out DIR [--dtype f32|bf16|f16]`: turns a released Uni-MoE checkpoint
/// (PyTorch `pytorch_model.bin` or its shards, optional PEFT LoRA adapters, DeepSpeed-MoE names) into
/// a unimoe model directory; prints `{"tensors": N, "experts": E, "moe_layers": [...], "merged_lora": M}`.
public enum ConvertCommand: Command {
    public static let name = "convert"
    public static let usage = "convert --from DIR --out DIR [--dtype f32|bf16|f16]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["from", "out", "dtype"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let from = try a.required("from")
        let out = try a.required("out")
        var dtype: DType?
        if let d = a.value("dtype") {
            switch d.lowercased() {
            case "f32", "float32": dtype = .f32
            case "bf16", "bfloat16": dtype = .bf16
            case "f16", "float16": dtype = .f16
            default: throw UsageError("--dtype must be f32, bf16 or f16, got '\(d)'")
            }
        }
        let s = try ReleasedCheckpoint.convert(from: from, to: out, dtype: dtype)
        printLine(jsonLine(["tensors": s.tensors, "experts": s.experts, "moe_layers": s.moeLayers, "merged_lora": s.mergedLoRA]))
    }
}
