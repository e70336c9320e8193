import Foundation
import Tensor

/// One trainable (or frozen) tensor of a model under training: an f32 copy of its value, its
/// gradient (same shape, zeroed between steps) and whether the current stage updates it. Training
/// always works on f32 copies, never on the memory-mapped checkpoint.
public final class Parameter: @unchecked Sendable {
    public let name: String
    public let value: Tensor
    /// Allocated lazily: frozen parameters of a big model never pay for a gradient buffer.
    public private(set) var gradStorage: Tensor?
    /// Whether the optimizer updates this tensor (and backward computes its gradient).
    public var trainable: Bool
    /// Whether AdamW's decoupled weight decay applies (not to biases and norm weights, as HF Trainer).
    public let decays: Bool

    public init(name: String, value: Tensor, trainable: Bool = false) {
        self.name = name
        self.value = value.dtype == .f32 ? value.copy() : value.converted(to: .f32)
        self.trainable = trainable
        let lower = name.lowercased()
        decays = !(lower.hasSuffix(".bias") || lower.contains("norm"))
    }

    public var shape: [Int] { value.shape }
    public var count: Int { value.count }
    public var floats: UnsafeMutablePointer<Float> { value.floats }

    /// The gradient buffer (allocated, zero-filled, on first use).
    public var grad: Tensor {
        if let g = gradStorage { return g }
        let g = Tensor(zeros: value.shape)
        gradStorage = g
        return g
    }

    public func zeroGrad() {
        if let g = gradStorage { g.raw.initializeMemory(as: UInt8.self, repeating: 0, count: g.byteCount) }
    }
}

/// Every parameter of a model under training, by checkpoint name, in a stable order (the order
/// they were added, which is the order checkpoints are written and the optimizer walks them).
public final class ParameterSet: @unchecked Sendable {
    public private(set) var ordered: [Parameter] = []
    private var byName: [String: Parameter] = [:]

    public init() {}

    @discardableResult
    public func add(_ p: Parameter) -> Parameter {
        precondition(byName[p.name] == nil, "parameter \(p.name) added twice")
        ordered.append(p)
        byName[p.name] = p
        return p
    }

    public subscript(name: String) -> Parameter? { byName[name] }

    /// Takes over another set's contents.
    func adopt(_ other: ParameterSet) {
        ordered = other.ordered
        byName = Dictionary(uniqueKeysWithValues: ordered.map { ($0.name, $0) })
    }

    public var trainable: [Parameter] { ordered.filter(\.trainable) }

    public func zeroGrads() { for p in ordered { p.zeroGrad() } }

    /// Marks exactly the parameters matching `predicate` trainable (all others frozen).
    public func setTrainable(_ predicate: (String) -> Bool) {
        for p in ordered { p.trainable = predicate(p.name) }
    }
}
