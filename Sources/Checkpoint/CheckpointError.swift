/// Everything that can be wrong with a checkpoint directory, file or config; each message names the
/// file or tensor and says what is wrong with it.
public enum CheckpointError: Error, Equatable, CustomStringConvertible, Sendable {
    case io(path: String, reason: String)
    case malformed(path: String, reason: String)
    case missingTensor(String)
    case unusedTensors([String])
    case shapeMismatch(name: String, expected: [Int], actual: [Int])
    case unsupportedDType(name: String, dtype: String)
    case config(path: String, reason: String)

    public var description: String {
        switch self {
        case .io(let path, let reason): return "\(path): \(reason)"
        case .malformed(let path, let reason): return "\(path): malformed safetensors: \(reason)"
        case .missingTensor(let name): return "checkpoint has no tensor '\(name)'"
        case .unusedTensors(let names):
            let shown = names.prefix(5).joined(separator: ", ")
            return "checkpoint has \(names.count) tensor(s) the model does not use: \(shown)\(names.count > 5 ? ", …" : "")"
        case .shapeMismatch(let name, let expected, let actual):
            return "tensor '\(name)' has shape \(actual), the config needs \(expected)"
        case .unsupportedDType(let name, let dtype):
            return "tensor '\(name)' has dtype \(dtype); supported: F32, F16, BF16"
        case .config(let path, let reason): return "\(path): \(reason)"
        }
    }
}
