import Foundation

/// Everything that can go wrong while preparing or running training, with messages a user can act
/// on. Data errors name the file and the (1-based) line of the offending sample.
public enum TrainingError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A data file that is not valid JSON / JSONL, or a sample missing a required field.
    case malformedData(file: String, line: Int, reason: String)
    /// A sample names a media file that does not exist (or cannot be decoded).
    case missingMedia(file: String, line: Int, path: String)
    /// A sample whose conversation does not hold a placeholder for a medium it carries (or the reverse).
    case placeholderMismatch(file: String, line: Int, reason: String)
    /// A sample key that names no modality unimoe knows.
    case unknownModality(file: String, line: Int, key: String)
    /// A media input that could not be decoded or encoded.
    case badMedia(file: String, line: Int, path: String, reason: String)
    /// The model cannot be trained the way asked (e.g. stage 3 without MoE layers).
    case unsupportedModel(String)
    /// A checkpoint or optimizer state that does not fit the model or run.
    case badCheckpoint(path: String, reason: String)
    /// No usable sample is left (all skipped, or the data is empty).
    case noData(String)
    /// An expert worker or peer failed during distributed training.
    case remote(String)
    /// Invalid settings (learning rate, batch size, …).
    case invalidSetting(String)

    public var description: String {
        switch self {
        case .malformedData(let f, let l, let r): return "\(f):\(l): malformed sample: \(r)"
        case .missingMedia(let f, let l, let p): return "\(f):\(l): media file '\(p)' does not exist"
        case .placeholderMismatch(let f, let l, let r): return "\(f):\(l): \(r)"
        case .unknownModality(let f, let l, let k): return "\(f):\(l): unknown modality '\(k)' (known: image, audio, video)"
        case .badMedia(let f, let l, let p, let r): return "\(f):\(l): cannot use media '\(p)': \(r)"
        case .unsupportedModel(let r): return "cannot train this model: \(r)"
        case .badCheckpoint(let p, let r): return "\(p): \(r)"
        case .noData(let r): return "no training data: \(r)"
        case .remote(let r): return "distributed training failed: \(r)"
        case .invalidSetting(let r): return "invalid setting: \(r)"
        }
    }
}
