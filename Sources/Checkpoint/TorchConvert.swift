import Foundation
import JSON
import Tensor

/// What is wrong with a released (PyTorch) checkpoint directory being converted.
public enum ConvertError: Error, Equatable, CustomStringConvertible, Sendable {
    case source(path: String, reason: String)
    case unmappedTensor(name: String, path: String)
    case adapter(path: String, reason: String)
    case experts(String)

    public var description: String {
        switch self {
        case .source(let path, let reason): return "\(path): \(reason)"
        case .unmappedTensor(let name, let path):
            return "\(path): tensor '\(name)' has no mapping to the unimoe layout (see docs/MODEL-DIRECTORY.md)"
        case .adapter(let path, let reason): return "\(path): \(reason)"
        case .experts(let reason): return "MoE layout: \(reason)"
        }
    }
}

/// Converts a released Uni-MoE checkpoint directory (PyTorch `pytorch_model.bin` or shards listed by
/// `pytorch_model.bin.index.json`, optional PEFT LoRA `adapter_model.bin` + `adapter_config.json`,
/// v1 `mlp.experts.*` or DeepSpeed-MoE tensor names; or a fine-tuned delta directory plus its base) into a `unimoe` model directory (`model.safetensors`, `config.json`,
/// tokenizer files). Strict: every source tensor is mapped, merged or deliberately dropped, or the
/// conversion fails naming it; nothing is written before everything has been read and checked.
public enum ReleasedCheckpoint {
    public struct Summary: Sendable, Equatable {
        public var tensors: Int
        public var experts: Int
        public var moeLayers: [Int]
        public var mergedLoRA: Int
        /// Tensors written as q8_0 (`unimoe quantize`).
        public var quantized: Int = 0
    }

    public static let weightsFile = "pytorch_model.bin"
    public static let indexFile = "pytorch_model.bin.index.json"
    public static let adapterFile = "adapter_model.bin"
    /// Released connector weights saved beside the trunk.
    public static let extraFiles = ["mm_projector.bin", "mm_audio_aligner.bin"]
    static let peftPrefix = "base_model.model."

    /// Our name for a reference tensor name, `drop` for names dropped on purpose (rotary caches),
    /// `unmapped` for names that fit no rule.
    enum Mapping: Equatable { case name(String), drop, unmapped }

    static func map(_ name: String) -> Mapping {
        let p = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        // Canonical decimal indices only ("07" would not name the layer our loader looks for).
        func isIndex(_ s: String) -> Bool { !s.isEmpty && s.allSatisfy { ("0"..."9").contains($0) } && (s == "0" || !s.hasPrefix("0")) }
        switch name {
        case "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight": return .name(name)
        default: break
        }
        if name.hasPrefix("model.mm_projector.") || name.hasPrefix("model.mm_audio_aligner.") || name == "model.query_tokens" {
            return .name(name)
        }
        guard p.count >= 5, p[0] == "model", p[1] == "layers", isIndex(p[2]) else { return .unmapped }
        let layer = "model.layers.\(p[2])."
        let rest = p[3...].joined(separator: ".")
        switch rest {
        case "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
             "input_layernorm.weight", "post_attention_layernorm.weight",
             "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight":
            return .name(name)
        case "self_attn.rotary_emb.inv_freq": return .drop
        case "mlp.deepspeed_moe.gate.wg.weight": return .name(layer + "mlp.gate.weight")
        case "mlp.gate.weight": return .name(name)     // v1's MoeLayer names are ours
        default: break
        }
        let q = Array(p[3...])
        // mlp.experts.E.{gate,up,down}_proj.weight (v1) or mlp.deepspeed_moe.experts.deepspeed_experts.E.… (DeepSpeed-MoE)
        if q.count == 5, q[0] == "mlp", q[1] == "experts", isIndex(q[2]), ["gate_proj", "up_proj", "down_proj"].contains(q[3]), q[4] == "weight" {
            return .name(name)
        }
        if q.count == 7, q[0] == "mlp", q[1] == "deepspeed_moe", q[2] == "experts", q[3] == "deepspeed_experts", isIndex(q[4]),
           ["gate_proj", "up_proj", "down_proj"].contains(q[5]), q[6] == "weight" {
            return .name(layer + "mlp.experts.\(q[4]).\(q[5]).weight")
        }
        return .unmapped
    }

    /// Opens the weights: the index's shards, or the single file. Names keyed with PEFT's prefix stripped.
    static func openWeights(_ dir: String) throws -> [(String, Source)] {
        let fm = FileManager.default
        let index = (dir as NSString).appendingPathComponent(indexFile)
        let single = (dir as NSString).appendingPathComponent(weightsFile)
        var out: [(String, Source)] = []
        func add(_ file: TorchCheckpointFile, only: Set<String>?) throws {
            for (name, ref) in file.tensors {
                if let only, !only.contains(name) {
                    throw ConvertError.source(path: index, reason: "shard \((file.path as NSString).lastPathComponent) holds '\(name)', which weight_map does not list there")
                }
                out.append((strip(name), Source(file: file, ref: ref, original: name)))
            }
        }
        if fm.fileExists(atPath: index) {
            guard let data = fm.contents(atPath: index) else { throw ConvertError.source(path: index, reason: "cannot be read") }
            let json: JSONValue
            do { json = try JSONValue.parse(data) } catch { throw ConvertError.source(path: index, reason: "not valid JSON (\(error))") }
            guard case .object(let map)? = json["weight_map"] else { throw ConvertError.source(path: index, reason: "no weight_map object") }
            var byShard: [String: Set<String>] = [:]
            var order: [String] = []
            for (name, v) in map {
                guard case .string(let f) = v, !f.isEmpty, !f.contains("/"), !f.contains("\\"), !f.hasPrefix("."), !f.contains("\0") else {
                    throw ConvertError.source(path: index, reason: "weight_map entry '\(name)' is \(v), not a file name inside the directory")
                }
                if byShard[f] == nil { order.append(f) }
                byShard[f, default: []].insert(name)
            }
            for f in order {
                let path = (dir as NSString).appendingPathComponent(f)
                guard fm.fileExists(atPath: path) else {
                    throw ConvertError.source(path: index, reason: "weight_map names shard '\(f)', which does not exist")
                }
                let file = try TorchCheckpointFile(path: path)
                let names = Set(file.names)
                for n in byShard[f, default: []].sorted() where !names.contains(n) {
                    throw ConvertError.source(path: index, reason: "'\(n)' is listed in \(f) but that shard does not hold it")
                }
                try add(file, only: byShard[f])
            }
        } else if fm.fileExists(atPath: single) {
            try add(try TorchCheckpointFile(path: single), only: nil)
        } else {
            throw ConvertError.source(path: dir, reason: "no \(weightsFile) or \(indexFile)")
        }
        return out
    }

    static func strip(_ name: String) -> String {
        name.hasPrefix(peftPrefix) ? String(name.dropFirst(peftPrefix.count)) : name
    }

    /// Trainables the reference saves beside its PEFT adapters: applied before the merge...
    static let nonLoRAFile = "non_lora_trainables.bin"
    /// ...and the routers, applied after it (the reference's load order).
    static let gatesFile = "mlp_gates.bin"

    /// Weight files a delta directory may hold: the ones read, and the trainer's pickled arguments.
    static let deltaWeightFiles: Set<String> = Set([adapterFile, nonLoRAFile, gatesFile] + extraFiles + ["training_args.bin"])

    /// Refuses a delta directory holding weights this converter would silently leave out (e.g. the
    /// 8-expert layout's `fm_adapter.bin` or `*_mlp_experts.bin`).
    static func checkDeltaFiles(_ dir: String) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for name in names.sorted() where [".bin", ".pt", ".pth", ".safetensors"].contains(where: { name.hasSuffix($0) }) {
            guard deltaWeightFiles.contains(name) else {
                throw ConvertError.source(path: (dir as NSString).appendingPathComponent(name),
                                          reason: "is not read by convert (it reads \(deltaWeightFiles.subtracting(["training_args.bin"]).sorted().joined(separator: ", "))); the 8-expert layout's extra files are not supported")
            }
        }
    }

    static func hasWeights(_ dir: String) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: (dir as NSString).appendingPathComponent(weightsFile))
            || fm.fileExists(atPath: (dir as NSString).appendingPathComponent(indexFile))
    }

    /// Converts `from` into `out` (created if needed). `dtype` nil keeps each tensor's stored dtype.
    /// With `base`, `from` is a fine-tuned delta directory as released (`config.json`,
    /// `adapter_model.bin` + `adapter_config.json`, `non_lora_trainables.bin`, `mlp_gates.bin`,
    /// connector files) and `base` holds the weights it applies to; the reference's load order is kept:
    /// base → connector files → non-LoRA trainables → LoRA merge → router gates. The config comes from
    /// `from`, the tokenizer from `base` (as the reference loads them).
    @discardableResult
    public static func convert(from dir: String, base: String? = nil, to out: String, dtype: DType? = nil) throws -> Summary {
        let fm = FileManager.default
        func path(_ d: String, _ f: String) -> String { (d as NSString).appendingPathComponent(f) }
        var config = try ConvertOutput.readConfig(dir)
        if base != nil {
            guard !hasWeights(dir) else {
                throw ConvertError.source(path: dir, reason: "holds its own \(weightsFile) weights; with --base it must hold only the deltas (\(adapterFile), \(nonLoRAFile), \(gatesFile), connector files)")
            }
            try checkDeltaFiles(dir)
        } else if !hasWeights(dir), [adapterFile, nonLoRAFile, gatesFile].contains(where: { fm.fileExists(atPath: path(dir, $0)) }) {
            throw ConvertError.source(path: dir, reason: "holds deltas (\(adapterFile) / \(nonLoRAFile) / \(gatesFile)) but no \(weightsFile): give the base model they apply to with --base DIR")
        }
        let weightsDir = base ?? dir

        // 1. Base weights, keyed by the (prefix-stripped) reference name; the files loaded after them
        // replace same-named tensors, as the reference's successive load_state_dict calls do.
        var table = SourceTable()
        for (name, s) in try openWeights(weightsDir) { try table.add(name, s) }
        var overlays = extraFiles.map { path(weightsDir, $0) } + [path(dir, nonLoRAFile)]
        if base != nil { overlays += extraFiles.map { path(dir, $0) } }
        for p in overlays where fm.fileExists(atPath: p) { _ = try table.overlay(TorchCheckpointFile(path: p)) }

        // 2. LoRA adapters (checked now, computed when the tensor is written); the gates come after
        // the merge, so a gate file replacing an adapted tensor discards its merge.
        var merges = try loraMerges(directory: dir, sources: table.byName)
        let adapterPath = path(dir, adapterFile)
        if fm.fileExists(atPath: path(dir, gatesFile)) {
            for name in try table.overlay(TorchCheckpointFile(path: path(dir, gatesFile))) { merges[name] = nil }
        }

        // 3. Names: map every tensor or fail naming it.
        var outputs: [(String, DType, [Int], () throws -> Tensor)] = []
        var taken = Set<String>()
        var experts: [Int: Set<Int>] = [:]     // layer → expert indices
        var routers = Set<Int>(), dense = Set<Int>()
        for name in table.order {
            let s = table.byName[name]!
            let target: String
            switch map(name) {
            case .drop: continue
            case .unmapped: throw ConvertError.unmappedTensor(name: s.original, path: s.file.path)
            case .name(let t): target = t
            }
            guard taken.insert(target).inserted else {
                throw ConvertError.source(path: s.file.path, reason: "'\(s.original)' maps to '\(target)', which another tensor already maps to")
            }
            guard let stored = DType(rawValue: s.ref.storage.dtype) else {
                throw CheckpointError.unsupportedDType(name: s.original, dtype: s.ref.storage.dtype)
            }
            let outType = dtype ?? stored, merge = merges[name], file = s.file, ref = s.ref, original = s.original
            outputs.append((target, outType, s.ref.shape, {
                var t = try file.tensor(ref, name: original)
                if let merge { t = try merge(t) }
                return t.dtype == outType ? t : t.converted(to: outType)
            }))
            let parts = target.split(separator: ".")
            if parts.count > 3, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]) {
                if target.hasSuffix(".mlp.gate.weight") { routers.insert(l) }
                if parts.count > 5, parts[3] == "mlp", parts[4] == "experts", let e = Int(parts[5]) { experts[l, default: []].insert(e) }
                if target.hasSuffix(".mlp.gate_proj.weight") { dense.insert(l) }
            }
        }

        // 4. MoE layout: every MoE layer has a router and experts 0..<E with all three projections.
        let moeLayers = Set(experts.keys).union(routers).sorted()
        var count = 0
        for l in moeLayers {
            guard routers.contains(l) else { throw ConvertError.experts("layer \(l) has experts but no router (mlp.gate.weight or mlp.deepspeed_moe.gate.wg.weight)") }
            guard let es = experts[l], !es.isEmpty else { throw ConvertError.experts("layer \(l) has a router but no experts") }
            guard !dense.contains(l) else { throw ConvertError.experts("layer \(l) has both a dense MLP and experts") }
            let e = es.count
            guard es == Set(0..<e) else { throw ConvertError.experts("layer \(l) has experts \(es.sorted()), not 0..<\(e)") }
            if count == 0 { count = e }
            guard e == count else { throw ConvertError.experts("layer \(l) has \(e) experts, layer \(moeLayers[0]) has \(count)") }
            for i in 0..<e {
                for proj in ["gate_proj", "up_proj", "down_proj"] where !taken.contains("model.layers.\(l).mlp.experts.\(i).\(proj).weight") {
                    throw ConvertError.experts("layer \(l) expert \(i) has no \(proj)")
                }
            }
        }
        guard count > 0 else { throw ConvertError.experts("no layer has experts (mlp.experts.* or mlp.deepspeed_moe.*): not a Uni-MoE checkpoint") }
        for name in merges.keys.sorted() where !taken.contains(mapTarget(name) ?? "") {
            throw ConvertError.adapter(path: adapterPath, reason: "adapted tensor '\(name)' is dropped by the conversion")
        }

        // 5. config.json: the source's keys plus ours; it must load as a model config (checked before
        // anything is written).
        config["model_type"] = .string("unimoe")
        config["num_experts"] = .int(count)
        if config["num_experts_per_tok"]?.intValue == nil { config["num_experts_per_tok"] = .int(2) }
        config["moe_layers"] = .array(moeLayers.map { .int($0) })
        ConvertOutput.setDType(dtype, in: &config)
        let configText = try ConvertOutput.configText(config, out: out)

        // 6. Write (only now): weights (atomically, one tensor materialised at a time), config, tokenizer
        // files (the base's win: the reference reads the tokenizer from the base model).
        try ConvertOutput.prepare(out: out, sources: [dir] + (base.map { [$0] } ?? []))
        try ConvertOutput.write(out: out, tensors: outputs, configText: configText)
        try ConvertOutput.copyFiles(from: dir, to: out)
        if let base { try ConvertOutput.copyFiles(from: base, to: out) }
        return Summary(tensors: outputs.count, experts: count, moeLayers: moeLayers, mergedLoRA: merges.count)
    }

    static func mapTarget(_ name: String) -> String? {
        if case .name(let t) = map(name) { return t }
        return nil
    }
}
