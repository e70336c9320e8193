import Foundation
import JSON

/// `adapter_config.json` of LoRA adapters saved beside a model's weights (PEFT's keys: `r`,
/// `lora_alpha`, `target_modules`): read by `Checkpoint` to merge `adapter.safetensors` on load and
/// by training to continue or write adapters.
public struct AdapterConfig: Sendable, Equatable {
    public static let weightsFile = "adapter.safetensors"
    public static let configFile = "adapter_config.json"
    public var rank: Int
    public var alpha: Double
    public var targetModules: [String]
    /// PEFT's `use_rslora`: the factor is alpha / sqrt(r) instead of alpha / r.
    public var rankStabilized = false
    /// alpha / r (alpha / sqrt(r) with `use_rslora`), the factor of B·A.
    public var scale: Float {
        let r = Double(max(rank, 1))
        return Float(alpha / (rankStabilized ? r.squareRoot() : r))
    }

    public init(rank: Int, alpha: Double, targetModules: [String]) {
        self.rank = rank; self.alpha = alpha; self.targetModules = targetModules
    }

    public static func load(directory: String) throws -> AdapterConfig {
        let path = (directory as NSString).appendingPathComponent(configFile)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError.io(path: path, reason: "missing: \(weightsFile) needs its \(configFile)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch { throw CheckpointError.config(path: path, reason: "not valid JSON (\(error))") }
        guard let r = json["r"]?.intValue, r > 0, let a = json["lora_alpha"]?.doubleValue else {
            throw CheckpointError.config(path: path, reason: "needs a positive integer 'r' and a number 'lora_alpha'")
        }
        // Variants a plain W += scale·B·A merge would get wrong are refused by name.
        for key in ["use_dora", "fan_in_fan_out"] where json[key]?.boolValue == true {
            throw CheckpointError.config(path: path, reason: "'\(key)': true is not supported (only plain LoRA, W += alpha/r · B·A, merges)")
        }
        for key in ["rank_pattern", "alpha_pattern"] where !(json[key]?.objectValue?.isEmpty ?? true) {
            throw CheckpointError.config(path: path, reason: "a non-empty '\(key)' (per-module ranks or alphas) is not supported")
        }
        let targets = json["target_modules"]?.arrayValue?.compactMap(\.stringValue) ?? []
        var config = AdapterConfig(rank: r, alpha: a, targetModules: targets)
        config.rankStabilized = json["use_rslora"]?.boolValue == true
        return config
    }

    public func write(directory: String) throws {
        let obj: [String: Any] = ["r": rank, "lora_alpha": alpha, "target_modules": targetModules, "peft_type": "LORA",
                                  "lora_dropout": 0.0, "bias": "none"]
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        try data.write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(Self.configFile)))
    }
}
