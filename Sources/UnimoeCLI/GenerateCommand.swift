import Foundation
import Models
import Options
import Tensor
import Tokenizer

/// `unimoe generate`: text generation from ids or a prompt, per CLI-CONTRACT.md. Streams text as
/// produced (never half a UTF-8 character), or prints `{"ids": [...], "text": "..."}` with `--json`.
/// A model directory without tokenizer.json can still generate from `--ids`: the stream then shows
/// ids and the JSON text is empty.
public enum GenerateCommand: Command {
    public static let name = "generate"
    public static let usage = "generate --model DIR (--ids 1,5,9 | --prompt TEXT) --max-new-tokens N [--temperature T] "
        + "[--top-p P] [--top-k K] [--seed S] [--threads N] [--json]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "ids", "prompt", "max-new-tokens", "temperature", "top-p", "top-k", "seed", "threads"],
                              flags: ["json"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let dir = try a.required("model")
        let ids = try a.intList("ids")
        let prompt = a.value("prompt")
        guard (ids == nil) != (prompt == nil) else { throw UsageError("give exactly one of --ids and --prompt") }
        if let ids, ids.isEmpty { throw UsageError("--ids is empty") }
        guard let maxNew = try a.int("max-new-tokens", range: 0...1_000_000) else {
            throw UsageError("missing required option --max-new-tokens")
        }
        let sampling = SamplingParameters(
            temperature: Float(try a.double("temperature", default: 0, range: 0...1000) ?? 0),
            topK: try a.int("top-k", default: 0, range: 0...Int(Int32.max)) ?? 0,
            topP: Float(try a.double("top-p", default: 1, range: 0.000001...1) ?? 1),
            seed: try seed(a))
        if let t = try a.int("threads", range: 1...256) { Linear.setThreads(t) }
        let json = a.has("json")

        let hasTokenizer = FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("tokenizer.json"))
        if prompt != nil && !hasTokenizer { throw LMCommandError.noTokenizer(dir) }
        let tokenizer = hasTokenizer ? try Tokenizer(directory: dir) : nil
        let model = try LanguageModel.load(directory: dir)
        let promptIds = ids ?? tokenizer.map { $0.encode(prompt ?? "", addSpecialTokens: true) } ?? []
        if promptIds.isEmpty { throw UsageError("the prompt encodes to no tokens") }

        let gen = try TokenGenerator(model: model, promptIds: promptIds,
                                     parameters: GenerationParameters(maxNewTokens: maxNew, sampling: sampling))
        var stream = tokenizer.map { StreamingDetokenizer(tokenizer: $0) }
        let out = FileHandle.standardOutput
        while let id = try gen.next() {
            guard !json else { continue }
            var piece = "\(id) "
            if var s = stream { piece = s.append(id); stream = s }
            if !piece.isEmpty { out.write(Data(piece.utf8)) }
        }
        if json {
            printLine(jsonLine(["ids": gen.generated, "text": tokenizer?.decode(gen.generated) ?? ""]))
        } else {
            printLine(stream?.finish() ?? "")
        }
    }

    /// `--seed`: any unsigned 64-bit integer (default 0).
    static func seed(_ a: Arguments) throws -> UInt64 {
        guard let s = a.value("seed") else { return 0 }
        guard let v = UInt64(s) else { throw UsageError("--seed needs a non-negative integer, got '\(s)'") }
        return v
    }
}
