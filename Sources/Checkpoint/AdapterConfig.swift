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
    /// alpha / r, the factor of B·A.
    public var scale: Float { Float(alpha / Double(max(rank, 1))) }

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
        let targets = json["target_modules"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return AdapterConfig(rank: r, alpha: a, targetModules: targets)
    }

    public func write(directory: String) throws {
        let obj: [String: Any] = ["r": rank, "lora_alpha": alpha, "target_modules": targetModules, "peft_type": "LORA",
                                  "lora_dropout": 0.0, "bias": "none"]
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        try data.write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(Self.configFile)))
    }
}
