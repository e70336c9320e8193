import Foundation
import Models
import Options
import Tensor

/// Failures of the language-model commands that are not model or checkpoint errors.
enum LMCommandError: Error, CustomStringConvertible {
    case cannotWrite(String, String)
    case noTokenizer(String)

    var description: String {
        switch self {
        case .cannotWrite(let path, let why): return "cannot write \(path): \(why)"
        case .noTokenizer(let dir): return "\(dir) has no tokenizer.json, needed to encode --prompt"
        }
    }
}

/// `unimoe logits --model DIR --ids 1,5,9 --out FILE`: one forward pass over the ids (no template,
/// no added tokens); writes the logits of every position as raw little-endian f32 `[len, vocab]`.
public enum LogitsCommand: Command {
    public static let name = "logits"
    public static let usage = "logits --model DIR --ids 1,5,9 --out FILE [--threads N]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "ids", "out", "threads"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let dir = try a.required("model")
        let out = try a.required("out")
        guard let ids = try a.intList("ids"), !ids.isEmpty else { throw UsageError("missing required option --ids") }
        if let t = try a.int("threads", range: 1...256) { Linear.setThreads(t) }
        let model = try LanguageModel.load(directory: dir)
        let logits = try model.logits(ids: ids)
        let data = Data(bytes: logits.raw, count: logits.byteCount)   // f32, little-endian on every supported host
        do { try data.write(to: URL(fileURLWithPath: out)) } catch {
            throw LMCommandError.cannotWrite(out, (error as NSError).localizedDescription)
        }
    }
}
