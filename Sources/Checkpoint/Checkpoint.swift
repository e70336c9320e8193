import Foundation
import JSON
import Tensor

/// All the tensors of a model directory: one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`. Loading is strict: `take` marks each tensor as used and
/// `finishLoading()` fails naming every tensor nobody took.
public final class Checkpoint: @unchecked Sendable {
    public let directory: String
    private var files: [String: SafeTensorsFile] = [:]
    private var location: [String: String] = [:]   // tensor name → file name
    private var used: Set<String> = []
    private let lock = NSLock()
    /// LoRA adapters saved beside the weights (`adapter.safetensors` + `adapter_config.json`), merged
    /// into their base weights by `take` (W + alpha/r · B·A, in f32).
    private var adapters: SafeTensorsFile?
    private var adapterScale: Float = 1

    /// Where `take` copies large tensors (huge pages: decode reads every weight per token, and the
    /// file mapping's 4 KiB pages made that ~15% slower; see `HugePageArena`). Nil, so that tensors
    /// stay views into the mapping, when the environment sets `UNIMOE_WEIGHTS=mapped` (less memory
    /// per process, page cache shared between processes, no copy at load).
    private let arena: HugePageArena? = Checkpoint.copiesWeights ? HugePageArena() : nil
    public static let copiesWeights = ProcessInfo.processInfo.environment["UNIMOE_WEIGHTS"] != "mapped"

    public var names: [String] { location.keys.sorted() }

    /// How many weights the opened LoRA adapters adapt (0 without adapters or with `mergeAdapters` false).
    public var adaptedCount: Int { adapters?.names.filter { $0.hasSuffix(".lora_A.weight") }.count ?? 0 }

    /// Opens a model directory. With `mergeAdapters` (the default), LoRA adapters in the directory
    /// are merged into the tensors they adapt as they are taken, so every loader (trunk, experts,
    /// router) sees merged weights; training passes false to keep them apart.
    public init(directory: String, mergeAdapters: Bool = true) throws {
        self.directory = directory
        let fm = FileManager.default
        let index = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: index) {
            try loadIndex(index)
        } else if fm.fileExists(atPath: single) {
            let f = try SafeTensorsFile(path: single)
            files["model.safetensors"] = f
            for n in f.names { location[n] = "model.safetensors" }
        } else {
            throw CheckpointError.io(path: directory, reason: "no model.safetensors or model.safetensors.index.json")
        }
        if mergeAdapters { try openAdapters() }
    }

    /// Opens `adapter.safetensors` (if present): every `X.lora_A.weight` needs `X.lora_B.weight` and a
    /// base `X.weight` in the checkpoint, with shapes A `[r, in]`, B `[out, r]`, W `[out, in]`.
    private func openAdapters() throws {
        let weights = (directory as NSString).appendingPathComponent(AdapterConfig.weightsFile)
        guard FileManager.default.fileExists(atPath: weights) else { return }
        let config = try AdapterConfig.load(directory: directory)
        let r = config.rank
        let file = try SafeTensorsFile(path: weights)
        for name in file.names {
            if name.hasSuffix(".lora_B.weight") { continue }
            guard name.hasSuffix(".lora_A.weight") else {
                throw CheckpointError.malformed(path: weights, reason: "'\(name)' is not a LoRA tensor (X.lora_A.weight / X.lora_B.weight)")
            }
            let base = String(name.dropLast(".lora_A.weight".count))
            guard let a = file.entries[name], let b = file.entries[base + ".lora_B.weight"], let w = shape(base + ".weight"),
                  a.shape.count == 2, a.shape[0] == r, w == [b.shape.first ?? -1, a.shape[1]], b.shape == [w[0], r] else {
                throw CheckpointError.malformed(path: weights, reason: "'\(name)' has no matching lora_B of rank \(r) or base tensor \(base).weight of fitting shape")
            }
        }
        adapters = file
        adapterScale = config.scale
    }

    /// Reads `model.safetensors.index.json`: every `weight_map` entry must name a shard file in this
    /// directory that holds the tensor, and every tensor of a shard must be listed.
    private func loadIndex(_ index: String) throws {
        func bad(_ reason: String) -> CheckpointError { .malformed(path: index, reason: reason) }
        guard let data = FileManager.default.contents(atPath: index) else { throw CheckpointError.io(path: index, reason: "cannot be read") }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            if case .duplicateKey(let key, let path, _) = error {
                throw bad("'\(key)' appears more than once in \(path.isEmpty ? "the index" : JSONError.describe(path: path))")
            }
            throw bad("not valid JSON (\(error))")
        }
        guard case .object(let map)? = json["weight_map"] else { throw bad("no weight_map object") }
        for (name, fileValue) in map.sorted(by: { $0.key < $1.key }) {
            guard case .string(let file) = fileValue, !file.isEmpty, !file.contains("/"), !file.contains("\\"),
                  !file.hasPrefix("."), !file.contains("\0") else {
                throw bad("weight_map entry '\(name)' is \(fileValue), not a file name inside the directory")
            }
            let shard: SafeTensorsFile
            if let open = files[file] {
                shard = open
            } else {
                let shardPath = (directory as NSString).appendingPathComponent(file)
                guard FileManager.default.fileExists(atPath: shardPath) else {
                    throw bad("weight_map puts '\(name)' in shard '\(file)', which does not exist")
                }
                shard = try SafeTensorsFile(path: shardPath)
                files[file] = shard
            }
            guard shard.contains(name) else { throw bad("'\(name)' is listed in \(file) but that shard does not hold it") }
            location[name] = file
        }
        for (file, shard) in files.sorted(by: { $0.key < $1.key }) {
            for n in shard.names where location[n] != file {
                throw bad("shard \(file) holds '\(n)', which weight_map does not list there")
            }
        }
    }

    /// Opens a single safetensors file as a checkpoint.
    public init(file: String) throws {
        directory = (file as NSString).deletingLastPathComponent
        let f = try SafeTensorsFile(path: file)
        let name = (file as NSString).lastPathComponent
        files[name] = f
        for n in f.names { location[n] = name }
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// Shape of a tensor without marking it used.
    public func shape(_ name: String) -> [Int]? {
        guard let f = location[name] else { return nil }
        return files[f]?.entries[name]?.shape
    }

    /// Stored dtype of a tensor (nil when absent or not F32/F16/BF16), without marking it used.
    public func dtype(_ name: String) -> DType? {
        guard let f = location[name] else { return nil }
        return files[f]?.entries[name]?.dtype
    }

    /// The named tensor (copied into the arena when large, else a view into the mapped file), marked
    /// as used; checks the shape when given.
    public func take(_ name: String, shape: [Int]? = nil) throws -> Tensor {
        guard let f = location[name], let file = files[f] else { throw CheckpointError.missingTensor(name) }
        if let shape, let stored = file.entries[name]?.shape, shape != stored {
            throw CheckpointError.shapeMismatch(name: name, expected: shape, actual: stored)
        }
        let base = String(name.dropLast(".weight".count))
        let adapted = name.hasSuffix(".weight") && adapters?.contains(base + ".lora_A.weight") == true
        var t = try file.tensor(name, arena: adapted ? nil : arena)  // an adapted weight is merged into a fresh copy below
        lock.lock(); used.insert(name); lock.unlock()
        if let adapters, adapted {
            let a = try adapters.tensor(base + ".lora_A.weight").converted(to: .f32)
            let b = try adapters.tensor(base + ".lora_B.weight").converted(to: .f32)
            let merged = t.converted(to: .f32).copy()
            let out = t.shape[0], inF = t.shape[1], r = a.shape[0]
            withExtendedLifetime((a, b)) {
                var delta = [Float](repeating: 0, count: out * inF)
                delta.withUnsafeMutableBufferPointer { d in
                    Linear.gemm(m: out, n: inF, k: r, a: b.floats, lda: r, b: a.floats, ldb: inF, transposeB: false,
                                c: d.baseAddress!, ldc: inF)
                }
                let m = merged.floats
                for i in 0..<(out * inF) { m[i] += adapterScale * delta[i] }
            }
            t = merged
        }
        return t
    }

    /// `take` for an optional tensor: nil when absent.
    public func takeIfPresent(_ name: String, shape: [Int]? = nil) throws -> Tensor? {
        contains(name) ? try take(name, shape: shape) : nil
    }

    /// Marks tensors as deliberately unused (e.g. rotary caches some exporters save).
    public func ignore(where predicate: (String) -> Bool) {
        lock.lock(); for n in location.keys where predicate(n) { used.insert(n) }; lock.unlock()
    }

    /// Throws `unusedTensors` when any tensor was never taken.
    public func finishLoading() throws {
        let unused = location.keys.filter { !used.contains($0) }.sorted()
        if !unused.isEmpty { throw CheckpointError.unusedTensors(unused) }
    }
}
