import Foundation
import JSON
import Tensor
import Checkpoint

/// What can be wrong when loading or running an encoder or connector; every case names the file,
/// key or input at fault and says what is expected.
public enum MultimodalError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The config names no tower / connector for this modality.
    case notConfigured(modality: String, path: String)
    /// The tower directory (or its config / weights) does not exist.
    case missingTower(modality: String, path: String)
    /// Two parts of the model disagree on a width (e.g. mm_hidden_size vs the tower's hidden_size).
    case dimensionMismatch(String)
    /// A config value the model cannot run with.
    case config(path: String, reason: String)
    /// An input the encoder cannot take (wrong shape, too many frames, …).
    case badInput(String)
    /// An image beyond the decoder limits.
    case imageTooLarge(path: String, width: Int, height: Int, limit: String)

    public var description: String {
        switch self {
        case .notConfigured(let m, let path): return "\(path): the model has no \(m) encoder configured"
        case .missingTower(let m, let path): return "\(m) tower directory \(path) is missing or incomplete"
        case .dimensionMismatch(let what): return "dimension mismatch: \(what)"
        case .config(let path, let reason): return "\(path): \(reason)"
        case .badInput(let what): return "bad input: \(what)"
        case .imageTooLarge(let path, let w, let h, let limit): return "\(path): image \(w)×\(h) is larger than the limit (\(limit))"
        }
    }
}

/// Reads one transformers `config.json` (or a nested sub-config) with typed errors naming the file.
struct ConfigReader {
    let json: [String: JSONValue]
    let path: String

    static func load(_ path: String, modality: String) throws -> ConfigReader {
        guard let data = FileManager.default.contents(atPath: path) else { throw MultimodalError.missingTower(modality: modality, path: path) }
        do { return ConfigReader(json: try ModelConfig.parseObject(data, path: path), path: path) } catch let e as CheckpointError {
            if case .config(_, let reason) = e { throw MultimodalError.config(path: path, reason: reason) }
            throw e
        }
    }

    func int(_ key: String, _ def: Int? = nil) throws -> Int {
        if let v = json[key], !v.isNull {
            guard let i = v.intValue else { throw MultimodalError.config(path: path, reason: "'\(key)' must be an integer, got \(v)") }
            return i
        }
        guard let def else { throw MultimodalError.config(path: path, reason: "'\(key)' is missing") }
        return def
    }

    func double(_ key: String, _ def: Double) throws -> Double {
        guard let v = json[key], !v.isNull else { return def }
        guard let d = v.doubleValue else { throw MultimodalError.config(path: path, reason: "'\(key)' must be a number, got \(v)") }
        return d
    }

    func string(_ key: String, _ def: String) throws -> String {
        guard let v = json[key], !v.isNull else { return def }
        guard let s = v.stringValue else { throw MultimodalError.config(path: path, reason: "'\(key)' must be a string, got \(v)") }
        return s
    }

    func sub(_ key: String) -> ConfigReader? {
        json[key]?.objectValue.map { ConfigReader(json: $0, path: "\(path) (\(key))") }
    }
}

/// Takes the tensors under one name prefix of a checkpoint and, at `finish()`, proves every tensor
/// under that prefix was used (strict loading of the part this module owns, leaving the trunk's
/// tensors to the language-model loader).
final class PrefixLoader {
    /// Names taken so far, shared by every loader `scoped` from the same root.
    private final class Taken { var names: Set<String> = [] }

    let checkpoint: Checkpoint
    let prefix: String
    private let taken: Taken

    init(_ checkpoint: Checkpoint, prefix: String) {
        self.checkpoint = checkpoint
        self.prefix = prefix
        taken = Taken()
    }

    private init(_ checkpoint: Checkpoint, prefix: String, taken: Taken) {
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.taken = taken
    }

    /// A loader for names under `prefix + sub`, sharing this one's record of taken tensors.
    func scoped(_ sub: String) -> PrefixLoader { PrefixLoader(checkpoint, prefix: prefix + sub, taken: taken) }

    func has(_ name: String) -> Bool { checkpoint.contains(prefix + name) }

    func take(_ name: String, _ shape: [Int]) throws -> Tensor {
        taken.names.insert(prefix + name)
        return try checkpoint.take(prefix + name, shape: shape)
    }

    /// Marks a tensor as deliberately unused (e.g. a decoder's token embeddings when fed embeddings).
    func skip(_ name: String) { taken.names.insert(prefix + name) }

    /// Throws `unusedTensors` naming every tensor under `prefixes` (default: this loader's) not taken.
    func finish(under prefixes: [String]? = nil) throws {
        let ps = prefixes ?? [prefix]
        let unused = checkpoint.names.filter { n in ps.contains { n.hasPrefix($0) } && !taken.names.contains(n) }
        if !unused.isEmpty { throw CheckpointError.unusedTensors(unused) }
    }
}

/// A Linear layer: weight `[out, in]` kept in its stored dtype (widened inside the GEMM), bias in f32.
struct LinearLayer {
    let weight: Tensor
    let bias: Tensor?
    var inFeatures: Int { weight.shape[1] }
    var outFeatures: Int { weight.shape[0] }

    static func load(_ l: PrefixLoader, _ name: String, out: Int, in inF: Int, bias: Bool = true) throws -> LinearLayer {
        let w = try l.take(name + ".weight", [out, inF])
        let b = bias ? try l.take(name + ".bias", [out]).converted(to: .f32) : nil
        return LinearLayer(weight: w, bias: b)
    }

    /// `[rows, in]` → `[rows, out]`.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = Tensor(zeros: [x.rowCount, outFeatures])
        EncoderKernels.project(x.floats, rows: x.rowCount, weight: weight, into: y.floats)
        if let bias { EncoderKernels.addBias(y.floats, rows: x.rowCount, cols: outFeatures, bias: bias.floats) }
        return y
    }
}

/// LayerNorm with weight and bias, pre-widened to f32.
struct LayerNormLayer {
    let weight: Tensor
    let bias: Tensor
    let eps: Float

    static func load(_ l: PrefixLoader, _ name: String, dim: Int, eps: Double) throws -> LayerNormLayer {
        LayerNormLayer(weight: try l.take(name + ".weight", [dim]).converted(to: .f32),
                       bias: try l.take(name + ".bias", [dim]).converted(to: .f32), eps: Float(eps))
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = Tensor(zeros: x.shape)
        EncoderKernels.addLayerNorm(x.floats, rows: x.rowCount, dim: x.lastDim, pending: nil, weight: weight, bias: bias,
                                    eps: eps, into: y.floats)
        return y
    }
}

/// Multi-head attention with q/k/v/out projections (CLIP, Whisper, BLIP-2 naming differs only in the
/// names passed to `load`): self-attention when no context is given, cross-attention otherwise.
struct AttentionLayer {
    let q, k, v, o: LinearLayer
    let heads: Int

    var headDim: Int { q.outFeatures / heads }

    /// x `[batch·queries, D]`, context `[batch·keys, Dc]` (nil: self-attention) → `[batch·queries, D]`
    /// before the output projection when `project` is false.
    func callAsFunction(_ x: Tensor, context: Tensor? = nil, batch: Int, causal: Bool = false, project: Bool = true) -> Tensor {
        let src = context ?? x
        let qs = q(x), ks = k(src), vs = v(src)
        let queries = x.rowCount / batch, keys = src.rowCount / batch
        let out = Tensor(zeros: [x.rowCount, q.outFeatures])
        EncoderAttention.forward(q: qs.floats, k: ks.floats, v: vs.floats, batch: batch, queries: queries, keys: keys,
                                 heads: heads, headDim: headDim, scale: 1 / Float(headDim).squareRoot(),
                                 causal: causal, out: out.floats)
        return project ? o(out) : out
    }
}

/// Element-wise helpers over whole tensors.
enum Elementwise {
    /// x += y (same shape).
    static func add(_ x: Tensor, _ y: Tensor) {
        let n = x.count, a = x.floats, b = y.floats
        FastMath.parallel(n, minChunk: 1 << 16) { r in for i in r { a[i] += b[i] } }
    }
}
