import Foundation
import Tensor
import Checkpoint

/// LLaVA-style connector from encoder features to the trunk's width: `linear` (one Linear named
/// `PREFIX.{weight,bias}`) or `mlp{N}x_gelu` (N Linears at `PREFIX.{0,2,4,…}` with GELU between).
public struct Projector: Sendable {
    public let type: String
    let layers: [LinearLayer]

    public var inputWidth: Int { layers.first?.inFeatures ?? 0 }
    public var outputWidth: Int { layers.last?.outFeatures ?? 0 }

    /// Number of Linears a projector type has, or nil when the type is unknown.
    public static func depth(_ type: String) -> Int? {
        if type == "linear" { return 1 }
        guard type.hasPrefix("mlp"), type.hasSuffix("x_gelu") else { return nil }
        let n = type.dropFirst(3).dropLast(6)
        guard let d = Int(n), d >= 1 else { return nil }
        return d
    }

    /// Loads the Linears under `prefix` (e.g. `model.mm_projector`), checking the input width against
    /// `inputWidth` (named `inputKey` in errors) and the output against the trunk's `outputWidth`.
    init(type: String, loader l: PrefixLoader, prefix: String, inputWidth: Int, inputKey: String, outputWidth: Int) throws {
        guard let depth = Projector.depth(type) else {
            throw MultimodalError.config(path: l.checkpoint.directory, reason: "projector type '\(type)' is not supported (linear or mlp{N}x_gelu)")
        }
        self.type = type
        let names = type == "linear" ? [prefix] : (0..<depth).map { "\(prefix).\(2 * $0)" }
        var layers: [LinearLayer] = []
        for (i, name) in names.enumerated() {
            let wanted = [outputWidth, i == 0 ? inputWidth : outputWidth]
            guard let shape = l.checkpoint.shape(l.prefix + name + ".weight") else {
                throw CheckpointError.missingTensor(l.prefix + name + ".weight")
            }
            if shape != wanted {
                if i == 0 && shape.count == 2 && shape[1] != inputWidth {
                    throw MultimodalError.dimensionMismatch("\(l.prefix + name).weight takes \(shape[1]) features but \(inputKey) gives \(inputWidth)")
                }
                throw MultimodalError.dimensionMismatch("\(l.prefix + name).weight is \(shape), the model needs \(wanted) (trunk hidden_size \(outputWidth))")
            }
            layers.append(try LinearLayer.load(l, name, out: wanted[0], in: wanted[1]))
        }
        self.layers = layers
    }

    /// `[..., in]` → `[..., out]`.
    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.lastDim == inputWidth else {
            throw MultimodalError.dimensionMismatch("projector takes \(inputWidth) features, got \(x.shape)")
        }
        var h = try x.converted(to: .f32).reshaped([x.rowCount, inputWidth])
        for (i, layer) in layers.enumerated() {
            if i > 0 { FastMath.gelu(h.floats, count: h.count) }
            h = layer(h)
        }
        var shape = x.shape
        shape[shape.count - 1] = outputWidth
        return try h.reshaped(shape)
    }
}
