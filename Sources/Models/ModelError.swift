/// What can go wrong running the language model: inputs that do not fit the model, configurations
/// this engine does not implement, and expert runners that answer wrongly. Checkpoint and config
/// problems are `CheckpointError`s (they name the file or tensor).
public enum ModelError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A config value or checkpoint layout the engine does not implement.
    case unsupported(String)
    /// Input that does not fit the model (bad token id, wrong embedding width, empty sequence…).
    case invalidInput(String)
    /// An expert runner was asked for an expert it does not hold.
    case expertUnavailable(layer: Int, expert: Int)
    /// An expert runner returned the wrong number or shape of outputs.
    case expertOutput(String)

    public var description: String {
        switch self {
        case .unsupported(let what): return "unsupported: \(what)"
        case .invalidInput(let what): return "invalid input: \(what)"
        case .expertUnavailable(let layer, let expert):
            return "expert \(expert) of layer \(layer) is not loaded by this expert runner"
        case .expertOutput(let what): return "expert runner output: \(what)"
        }
    }
}
