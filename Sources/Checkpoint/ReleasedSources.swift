import Foundation
import Tensor

extension ReleasedCheckpoint {
    /// One tensor of a PyTorch file, with the name it was saved under.
    struct Source {
        let file: TorchCheckpointFile
        let ref: TorchTensorRef
        let original: String
    }

    /// The tensors to convert by reference name, in first-seen order. Base weights must be unique;
    /// files loaded after them (`overlay`) replace same-named tensors, as the reference's successive
    /// `load_state_dict(…, strict=False)` calls do.
    struct SourceTable {
        private(set) var order: [String] = []
        private(set) var byName: [String: Source] = [:]

        /// Adds a base tensor; a name already present is refused.
        mutating func add(_ name: String, _ s: Source) throws {
            if let prev = byName[name] {
                throw ConvertError.source(path: s.file.path, reason: "tensor '\(name)' is also in \(prev.file.path)")
            }
            order.append(name)
            byName[name] = s
        }

        /// Adds or replaces every tensor of `file`, renamed by `referenceNames`; returns the names.
        mutating func overlay(_ file: TorchCheckpointFile) throws -> [String] {
            let raw = file.tensors.map(\.name)
            let names = ReleasedCheckpoint.referenceNames(raw)
            var seen = Set<String>()
            for (i, name) in names.enumerated() {
                guard seen.insert(name).inserted else {
                    throw ConvertError.source(path: file.path, reason: "two tensors are named '\(name)' once the prefixes are stripped")
                }
                if byName[name] == nil { order.append(name) }
                byName[name] = Source(file: file, ref: file.tensors[i].ref, original: raw[i])
            }
            return names
        }
    }

    /// The reference's renaming of the trainables it saves (`non_lora_trainables.bin`,
    /// `mlp_gates.bin`, connector files): drop a leading `base_model.`, then — when any name of the
    /// file starts with `model.model.` — one leading `model.` from every name.
    static func referenceNames(_ raw: [String]) -> [String] {
        var names = raw.map { $0.hasPrefix("base_model.") ? String($0.dropFirst("base_model.".count)) : $0 }
        if names.contains(where: { $0.hasPrefix("model.model.") }) {
            names = names.map { $0.hasPrefix("model.") ? String($0.dropFirst("model.".count)) : $0 }
        }
        return names
    }

    /// The LoRA merges of `directory`'s `adapter_model.bin` (none without one): W += (alpha/r)·B·A for
    /// every lora_A/lora_B pair, keyed by the adapted base name; checked now against `sources`,
    /// computed when the tensor is written.
    static func loraMerges(directory dir: String, sources: [String: Source]) throws -> [String: (Tensor) throws -> Tensor] {
        let fm = FileManager.default
        var merges: [String: (Tensor) throws -> Tensor] = [:]
        let adapterPath = (dir as NSString).appendingPathComponent(adapterFile)
        guard fm.fileExists(atPath: adapterPath) else { return merges }
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
            guard let base = sources[baseName] else {
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
        return merges
    }
}
