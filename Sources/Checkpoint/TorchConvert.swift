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
/// DeepSpeed-MoE tensor names) into a `unimoe` model directory (`model.safetensors`, `config.json`,
/// tokenizer files). Strict: every source tensor is mapped, merged or deliberately dropped, or the
/// conversion fails naming it; nothing is written before everything has been read and checked.
public enum ReleasedCheckpoint {
    public struct Summary: Sendable, Equatable {
        public var tensors: Int
        public var experts: Int
        public var moeLayers: [Int]
        public var mergedLoRA: Int
    }

    public static let weightsFile = "pytorch_model.bin"
    public static let indexFile = "pytorch_model.bin.index.json"
    public static let adapterFile = "adapter_model.bin"
    /// Released connector weights saved beside the trunk.
    public static let extraFiles = ["mm_projector.bin", "mm_audio_aligner.bin"]
    static let peftPrefix = "base_model.model."
    public static let copiedFiles = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                                     "added_tokens.json", "generation_config.json"]

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
        default: break
        }
        // mlp.deepspeed_moe.experts.deepspeed_experts.E.{gate,up,down}_proj.weight
        let q = Array(p[3...])
        if q.count == 7, q[0] == "mlp", q[1] == "deepspeed_moe", q[2] == "experts", q[3] == "deepspeed_experts", isIndex(q[4]),
           ["gate_proj", "up_proj", "down_proj"].contains(q[5]), q[6] == "weight" {
            return .name(layer + "mlp.experts.\(q[4]).\(q[5]).weight")
        }
        return .unmapped
    }

    struct Source {
        let file: TorchCheckpointFile
        let ref: TorchTensorRef
        let original: String
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

    /// Converts `from` into `out` (created if needed). `dtype` nil keeps each tensor's stored dtype.
    @discardableResult
    public static func convert(from dir: String, to out: String, dtype: DType? = nil) throws -> Summary {
        let fm = FileManager.default
        let srcConfigPath = (dir as NSString).appendingPathComponent("config.json")
        guard let configData = fm.contents(atPath: srcConfigPath) else {
            throw ConvertError.source(path: srcConfigPath, reason: "missing or unreadable (the converted model needs its config)")
        }
        var config = try ModelConfig.parseObject(configData, path: srcConfigPath)

        // 1. Base weights, keyed by the (prefix-stripped) reference name; released connector files
        // beside them replace same-named tensors (the reference loads them after the base).
        var sources = try openWeights(dir)
        for extra in extraFiles {
            let path = (dir as NSString).appendingPathComponent(extra)
            guard fm.fileExists(atPath: path) else { continue }
            let file = try TorchCheckpointFile(path: path)
            for (raw, ref) in file.tensors {
                let name = strip(raw), s = Source(file: file, ref: ref, original: raw)
                if let i = sources.firstIndex(where: { $0.0 == name && $0.1.file !== file }) { sources[i] = (name, s) } else { sources.append((name, s)) }
            }
        }
        var byName: [String: Source] = [:]
        for (name, s) in sources {
            if let prev = byName[name] {
                throw ConvertError.source(path: s.file.path, reason: "tensor '\(name)' is also in \(prev.file.path)")
            }
            byName[name] = s
        }

        // 2. LoRA adapters: W += (alpha/r)·B·A for every lora_A/lora_B pair (checked now, computed
        // when the tensor is written).
        var merges: [String: (Tensor) throws -> Tensor] = [:]
        let adapterPath = (dir as NSString).appendingPathComponent(adapterFile)
        if fm.fileExists(atPath: adapterPath) {
            let cfgPath = (dir as NSString).appendingPathComponent(AdapterConfig.configFile)
            guard fm.fileExists(atPath: cfgPath) else {
                throw ConvertError.adapter(path: adapterPath, reason: "needs \(AdapterConfig.configFile) beside it")
            }
            let lora = try AdapterConfig.load(directory: dir)
            let file = try TorchCheckpointFile(path: adapterPath)
            var pairs: [String: (a: TorchTensorRef?, b: TorchTensorRef?)] = [:]
            for (raw, ref) in file.tensors {
                let name = strip(raw)
                if name.hasSuffix(".lora_A.weight") {
                    pairs[String(name.dropLast(".lora_A.weight".count)), default: (nil, nil)].a = ref
                } else if name.hasSuffix(".lora_B.weight") {
                    pairs[String(name.dropLast(".lora_B.weight".count)), default: (nil, nil)].b = ref
                } else {
                    throw ConvertError.adapter(path: adapterPath, reason: "'\(raw)' is not a LoRA tensor (X.lora_A.weight / X.lora_B.weight)")
                }
            }
            for (module, pair) in pairs.sorted(by: { $0.key < $1.key }) {
                let baseName = module + ".weight"
                guard let aRef = pair.a, let bRef = pair.b else {
                    throw ConvertError.adapter(path: adapterPath, reason: "'\(module)' has lora_\(pair.a == nil ? "B" : "A") but no lora_\(pair.a == nil ? "A" : "B")")
                }
                guard let base = byName[baseName] else {
                    throw ConvertError.adapter(path: adapterPath, reason: "'\(module)' adapts \(baseName), which the base weights do not hold")
                }
                let r = lora.rank, w = base.ref.shape
                guard w.count == 2, aRef.shape == [r, w[1]], bRef.shape == [w[0], r] else {
                    throw ConvertError.adapter(path: adapterPath, reason: "'\(module)' has lora_A \(aRef.shape) and lora_B \(bRef.shape), which do not fit rank \(r) and \(baseName) \(w)")
                }
                for (ref, which) in [(aRef, "lora_A"), (bRef, "lora_B")] where DType(rawValue: ref.storage.dtype) == nil {
                    throw CheckpointError.unsupportedDType(name: "\(module).\(which).weight", dtype: ref.storage.dtype)
                }
                merges[baseName] = { w in
                    let a = try file.tensor(aRef, name: module + ".lora_A.weight").converted(to: .f32)
                    let b = try file.tensor(bRef, name: module + ".lora_B.weight").converted(to: .f32)
                    let m = w.converted(to: .f32).copy()
                    let outF = w.shape[0], inF = w.shape[1]
                    var delta = [Float](repeating: 0, count: outF * inF)
                    withExtendedLifetime((a, b)) {
                        delta.withUnsafeMutableBufferPointer { d in
                            Linear.gemm(m: outF, n: inF, k: r, a: b.floats, lda: r, b: a.floats, ldb: inF, transposeB: false,
                                        c: d.baseAddress!, ldc: inF)
                        }
                    }
                    let mp = m.floats, scale = lora.scale
                    for i in 0..<(outF * inF) { mp[i] += scale * delta[i] }
                    return m.converted(to: w.dtype)
                }
            }
        }

        // 3. Names: map every tensor or fail naming it.
        var outputs: [(String, DType, [Int], () throws -> Tensor)] = []
        var taken = Set<String>()
        var experts: [Int: Set<Int>] = [:]     // layer → expert indices
        var routers = Set<Int>(), dense = Set<Int>()
        for (name, s) in sources {
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
            guard routers.contains(l) else { throw ConvertError.experts("layer \(l) has experts but no router (mlp.deepspeed_moe.gate.wg.weight)") }
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
        guard count > 0 else { throw ConvertError.experts("no layer has experts (mlp.deepspeed_moe.*): not a Uni-MoE checkpoint") }
        for name in merges.keys.sorted() where !taken.contains(mapTarget(name) ?? "") {
            throw ConvertError.adapter(path: adapterPath, reason: "adapted tensor '\(name)' is dropped by the conversion")
        }

        // 5. config.json: the source's keys plus ours.
        config["model_type"] = .string("unimoe")
        config["num_experts"] = .int(count)
        if config["num_experts_per_tok"]?.intValue == nil { config["num_experts_per_tok"] = .int(2) }
        config["moe_layers"] = .array(moeLayers.map { .int($0) })
        if let dtype {
            config["torch_dtype"] = .string(["F32": "float32", "F16": "float16", "BF16": "bfloat16"][dtype.rawValue]!)
        }

        // The result must load as a model config (checked before anything is written).
        let configText = serialize(.object(JSONObject(config.keys.sorted().map { (key: $0, value: config[$0]!) })), indent: "") + "\n"
        let configOut = (out as NSString).appendingPathComponent("config.json")
        _ = try ModelConfig.decode(Data(configText.utf8), path: configOut)

        // 6. Write (only now): weights (atomically, one tensor materialised at a time), config, tokenizer files.
        let outURL = URL(fileURLWithPath: out).standardizedFileURL
        guard outURL.path != URL(fileURLWithPath: dir).standardizedFileURL.path else {
            throw ConvertError.source(path: out, reason: "the output directory must differ from the source")
        }
        do { try fm.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
            throw CheckpointError.io(path: out, reason: "cannot create: \((error as NSError).localizedDescription)")
        }
        outputs.sort { $0.0 < $1.0 }
        try SafeTensorsWriter.write(path: (out as NSString).appendingPathComponent("model.safetensors"), lazy: outputs,
                                    metadata: ["format": "pt"])
        do { try Data(configText.utf8).write(to: URL(fileURLWithPath: configOut), options: .atomic) } catch {
            throw CheckpointError.io(path: configOut, reason: (error as NSError).localizedDescription)
        }
        for f in copiedFiles {
            let src = (dir as NSString).appendingPathComponent(f), dst = (out as NSString).appendingPathComponent(f)
            guard fm.fileExists(atPath: src) else { continue }
            try? fm.removeItem(atPath: dst)
            do { try fm.copyItem(atPath: src, toPath: dst) } catch {
                throw CheckpointError.io(path: dst, reason: "cannot copy \(src): \((error as NSError).localizedDescription)")
            }
        }
        return Summary(tensors: outputs.count, experts: count, moeLayers: moeLayers, mergedLoRA: merges.count)
    }

    static func mapTarget(_ name: String) -> String? {
        if case .name(let t) = map(name) { return t }
        return nil
    }

    /// Pretty JSON (keys in the given order, two-space indent).
    static func serialize(_ v: JSONValue, indent: String) -> String {
        let inner = indent + "  "
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? "\(d)" : "null"
        case .string(let s): return SafeTensorsWriter.quote(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            if a.allSatisfy({ if case .array = $0 { return false }; if case .object = $0 { return false }; return true }) {
                return "[" + a.map { serialize($0, indent: inner) }.joined(separator: ", ") + "]"
            }
            return "[\n" + a.map { inner + serialize($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let o):
            if o.isEmpty { return "{}" }
            return "{\n" + o.map { inner + SafeTensorsWriter.quote($0.key) + ": " + serialize($0.value, indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        }
    }
}
