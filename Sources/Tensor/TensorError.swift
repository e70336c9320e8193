/// What can go wrong when building or combining tensors; every case says what to fix.
public enum TensorError: Error, Equatable, CustomStringConvertible, Sendable {
    case shapeMismatch(String)
    case invalidShape([Int])
    case countMismatch(expected: Int, actual: Int)
    case unsupported(String)

    public var description: String {
        switch self {
        case .shapeMismatch(let what): return "shape mismatch: \(what)"
        case .invalidShape(let shape): return "invalid shape \(shape): dimensions must be non-negative"
        case .countMismatch(let expected, let actual):
            return "element count mismatch: shape needs \(expected) elements, got \(actual)"
        case .unsupported(let what): return "unsupported: \(what)"
        }
    }
}
